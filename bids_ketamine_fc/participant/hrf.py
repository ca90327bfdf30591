"""CONN's ``Effect of rest``: the session's condition regressor and the first level's hrf weights.

CONN models a resting-state session as one condition ("rest") lasting the whole session: a step
from the first scan, convolved with SPM's canonical haemodynamic response at a tenth of the TR and
averaged back to scans (``conn_process.m`` of CONN 20.a, lines 496-541). The result rises from 0.009
at the first scan (TR 2.5 s) through 0.23, 0.70, 1.03, 1.14 and settles at 1 by about the twelfth
scan. It is not the constant: it enters the denoising regression with its derivative, and the
first-level correlation weights every scan by it (``hrf`` weighting, CONN's default).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

# SPM12 spm_hrf defaults: delay of response and of undershoot (s), their dispersions, the
# response-to-undershoot ratio, the onset and the kernel length (s); 16 time bins per TR.
_HRF_PARAMETERS = (6.0, 16.0, 1.0, 1.0, 6.0, 0.0, 32.0)
_MICROTIME_BINS = 16


def spm_hrf(rt: float) -> np.ndarray:
    """Return SPM12's canonical haemodynamic response sampled every ``rt`` seconds (sums to 1).

    The difference of two gamma densities (peak at 6 s, undershoot at 16 s, ratio 6) evaluated on a
    grid of ``rt / 16`` s and sampled at ``k * rt`` for ``k = 0 .. floor(32 / rt)``, in the order of
    operations of ``spm_hrf.m`` and ``spm_Gpdf.m`` so that the values agree to the last bits.

    Parameters
    ----------
    rt : float
        Sampling interval in seconds (CONN passes TR / 10).

    Returns
    -------
    numpy.ndarray
        The kernel, first value 0 (time 0).
    """
    delay, undershoot, disp1, disp2, ratio, onset, length = _HRF_PARAMETERS
    dt = rt / _MICROTIME_BINS
    u = np.arange(math.ceil(length / dt) + 1) - onset / dt
    hrf = (
        _gamma_pdf(u, delay / disp1, dt / disp1)
        - _gamma_pdf(u, undershoot / disp2, dt / disp2) / ratio
    )
    hrf = hrf[np.arange(math.floor(length / rt) + 1) * _MICROTIME_BINS]
    return hrf / hrf.sum()


def _gamma_pdf(x: np.ndarray, shape: float, rate: float) -> np.ndarray:
    """Gamma density with ``rate`` as SPM's ``spm_Gpdf`` computes it (0 at x <= 0 for shape > 1)."""
    out = np.zeros(x.shape)
    positive = x > 0
    xp = x[positive]
    out[positive] = np.exp(
        (shape - 1) * np.log(xp) + shape * math.log(rate) - rate * xp - gammaln(shape)
    )
    return out


def effect_of_rest(n_volumes: int, tr: float) -> np.ndarray:
    """Return CONN's ``Effect of rest`` for a session of ``n_volumes`` scans.

    A step at the first scan (onset 0, infinite duration), sampled every ``TR / 10``, convolved with
    :func:`spm_hrf` and averaged over the ten samples of each scan. These are also the hrf weights
    of CONN's first level.

    Parameters
    ----------
    n_volumes : int
        Scans in the session (none dropped: CONN keeps them all).
    tr : float
        Repetition time in seconds.

    Returns
    -------
    numpy.ndarray, shape (n_volumes,)
        Positive values, about 1 after the first dozen scans.
    """
    rt = tr / 10
    kernel = spm_hrf(rt)
    # Convolving a step with the kernel gives the kernel's running sum; sample j (1-based) of the
    # session holds the sum of its first min(j, len) values.
    running = np.cumsum(kernel)
    samples = np.minimum(np.arange(10 * n_volumes), running.size - 1)
    return running[samples].reshape(n_volumes, 10).mean(axis=1)


def central_difference(x: np.ndarray) -> np.ndarray:
    """Return CONN's temporal derivative ``x(t+1) - x(t-1)`` with the end values repeated.

    ``conn_designmatrix.m`` convolves the series, padded with its first and last values, with
    ``[1; 0; -1]``: the first row is ``x(2) - x(1)``, the last ``x(T) - x(T-1)``. fMRIPrep's
    ``*_derivative1`` columns are backward differences ``x(t) - x(t-1)`` instead.

    Parameters
    ----------
    x : numpy.ndarray, shape (T,) or (T, n)

    Returns
    -------
    numpy.ndarray, same shape
    """
    x = np.asarray(x, dtype=float)
    padded = np.concatenate([x[:1], x, x[-1:]], axis=0)
    return padded[2:] - padded[:-2]
