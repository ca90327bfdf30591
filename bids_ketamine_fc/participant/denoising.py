"""Temporal denoising as one linear operator on the time axis.

Every step of a CONN or XCP-D denoising strategy (dropping non-steady-state volumes, regression of
confounds, polynomial trends and spike regressors, band-pass filtering, censoring) acts on each voxel's
time series through the same ``T x T`` matrix ``M``: ``clean = M @ y``. We build ``M`` once per run
from the confounds and the strategy, and keep an orthonormal factorisation ``M = U S V^T`` of its
range. Since connectivity only needs inner products of cleaned series, each voxel is then represented by
``k = rank(M)`` coefficients ``c = S V^T y`` (``|M y| = |c|``), computed for all voxels with one
matrix product. Smoothing (a linear operator in space) commutes with ``M`` and is applied to the
``k`` coefficient volumes instead of the ``T`` raw volumes.

This is exact, not an approximation: the correlations equal those of the explicitly cleaned and
smoothed series (``tests/test_denoising.py`` compares with :func:`nilearn.signal.clean`). We build the
operator ourselves because nilearn's ``signal.clean`` works voxel by voxel on the full series, which we
measured at 10-60 s per 2 mm run here; the filters themselves come from nilearn (Butterworth) or follow
CONN's ``conn_filter`` (FFT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Relative singular value below which a direction of the cleaning operator counts as removed.
_RANK_TOL = 1e-6


@dataclass(frozen=True)
class CleaningOperator:
    """The factorised cleaning operator of one run.

    Attributes
    ----------
    coef : ndarray, shape (n_volumes_in, k)
        ``y_kept @ coef`` gives the ``k`` coefficients of a series ``y`` (after dropping dummies).
    basis : ndarray, shape (n_volumes_out, k)
        Orthonormal columns: the cleaned series is ``basis @ coefficients``.
    n_regressors : int
        Columns of the regression design (constant, trends, confounds, spikes).
    weights : ndarray, shape (n_volumes_out,), or None
        CONN's first-level weights: the cleaned series is then ``weights * x`` (not centred).
    """

    coef: np.ndarray
    basis: np.ndarray
    n_regressors: int
    weights: np.ndarray | None = None

    def series(self, coefficients: np.ndarray) -> np.ndarray:
        """Return the cleaned series (T_out, n) of coefficients (n, k), without the weights."""
        series = self.basis @ np.asarray(coefficients, dtype=float).T
        return series if self.weights is None else series / self.weights[:, None]

    @property
    def dof(self) -> int:
        """Temporal degrees of freedom left: the rank of the operator."""
        return int(self.coef.shape[1])


def fft_bandpass_matrix(
    n_volumes: int, tr: float, low: float | None, high: float | None
) -> np.ndarray:
    """Return CONN's FFT band-pass filter (``conn_filter``) as a ``T x T`` matrix.

    As CONN does, the series is mirror-extended to ``2T`` samples (a discrete cosine basis), DFT bins
    whose folded index ``f`` satisfies ``f < low * (TR * 2T)`` or ``f >= high * (TR * 2T)`` are set
    to zero, and the first ``T`` samples of the inverse transform are kept. The result is a
    symmetric, idempotent matrix: an orthogonal projection onto the cosines inside the band. The
    edges are computed in CONN's order of operations (``conn_filter.m``: ``filter(1)*(rt*size(fy,1))``)
    because an edge that falls exactly on a bin is decided by the last bit: at T = 450, TR = 3 s,
    ``0.09 * (3 * 900)`` is 243.0 and bin 243 is removed, while ``(0.09 * 3) * 900`` is 243.00000000000003
    and would keep it. A ``high`` at or above the Nyquist frequency removes nothing (CONN's
    behaviour: no effective low-pass).

    Parameters
    ----------
    n_volumes : int
        Number of time points.
    tr : float
        Repetition time in seconds.
    low, high : float or None
        Pass band in Hz; ``None`` leaves that side open.

    Returns
    -------
    ndarray, shape (n_volumes, n_volumes)
    """
    length = 2 * n_volumes
    index = np.arange(length)
    folded = np.minimum(index, length - index)
    keep = np.ones(length, dtype=bool)
    if low is not None:
        keep &= folded >= low * (tr * length)
    if high is not None:
        keep &= folded < high * (tr * length)
    identity = np.eye(n_volumes)
    extended = np.concatenate([identity, identity[::-1]], axis=0)
    spectrum = np.fft.fft(extended, axis=0) * keep[:, None]
    return np.fft.ifft(spectrum, axis=0).real[:n_volumes]


def butterworth_matrix(
    n_volumes: int, tr: float, low: float | None, high: float | None, order: int = 2
) -> np.ndarray:
    """Return nilearn's zero-phase Butterworth band-pass applied to the identity (a ``T x T`` matrix).

    Parameters
    ----------
    n_volumes : int
        Number of time points.
    tr : float
        Repetition time in seconds.
    low, high : float or None
        High-pass and low-pass cutoffs in Hz.
    order : int
        Filter order (XCP-D uses 2).

    Returns
    -------
    ndarray, shape (n_volumes, n_volumes)
    """
    from nilearn.signal import butterworth

    return butterworth(
        np.eye(n_volumes),
        sampling_rate=1.0 / tr,
        low_pass=high,
        high_pass=low,
        order=order,
        copy=True,
    )


def lowpass_note(high: float | None, tr: float) -> str | None:
    """Return a note when a low-pass cut-off is at or above the Nyquist frequency, else None.

    CONN accepts such a band (its FFT filter then removes no bin: no effective low-pass); so do we,
    with this note in the log and in the seed maps' sidecars.
    """
    nyquist = 0.5 / tr
    if high is None or high < nyquist:
        return None
    return (
        f"low-pass cut-off {high:g} Hz is at or above the Nyquist frequency {nyquist:.3g} Hz "
        f"(TR {tr:g} s): no effective low-pass filter, as in CONN"
    )


def filter_matrix(n_volumes: int, tr: float, filt: dict | None) -> np.ndarray:
    """Return the band-pass matrix a strategy's ``filter`` entry describes (identity when none).

    A low-pass cut-off at or above the Nyquist frequency is dropped (:func:`lowpass_note`).
    """
    if not filt or filt.get("type") in (None, "none"):
        return np.eye(n_volumes)
    low, high = filt.get("low"), filt.get("high")
    if lowpass_note(high, tr):
        high = None
    if low is None and high is None:
        return np.eye(n_volumes)
    if filt["type"] == "fft":
        return fft_bandpass_matrix(n_volumes, tr, low, high)
    if filt["type"] == "butterworth":
        return butterworth_matrix(n_volumes, tr, low, high, int(filt.get("order", 2)))
    raise ValueError(f"unknown filter type {filt['type']!r}")


def polynomial_trends(n_volumes: int, order: int) -> np.ndarray:
    """Return the constant and Legendre-like polynomial trends up to ``order`` (T x (order + 1))."""
    grid = np.linspace(-1.0, 1.0, n_volumes)
    return np.polynomial.legendre.legvander(grid, max(order, 0))


def residual_maker(design: np.ndarray) -> np.ndarray:
    """Return ``I - X X^+``, which removes the span of ``design`` (rank-deficient designs allowed)."""
    n_volumes = design.shape[0]
    q, s, _ = np.linalg.svd(design, full_matrices=False)
    q = q[:, s > s.max() * n_volumes * np.finfo(float).eps]
    return np.eye(n_volumes) - q @ q.T


def build_operator(
    confounds: np.ndarray,
    outliers: np.ndarray,
    tr: float,
    detrend_order: int,
    filt: dict | None,
    filter_order: str = "regbp",
    censor: bool = False,
    weights: np.ndarray | None = None,
) -> CleaningOperator:
    """Build and factorise the cleaning operator of one run.

    Parameters
    ----------
    confounds : ndarray, shape (T, n_confounds)
        Confound regressors for the volumes kept after dropping dummies (no NaN).
    outliers : ndarray of bool, shape (T,)
        Volumes to scrub: each gets a spike regressor (CONN); with ``censor`` they are also removed
        from the cleaned series (XCP-D).
    tr : float
        Repetition time (s).
    detrend_order : int
        Polynomial order of the trends regressed with the confounds (1 = linear, as CONN).
    filt : dict or None
        ``{"type": "fft" | "butterworth", "low": Hz, "high": Hz, "order": int}``.
    filter_order : {"regbp", "simult"}
        ``regbp``: regression then band-pass (CONN's default); ``simult``: band-pass applied to data
        and regressors, then regression.
    censor : bool
        Drop the outlier volumes from the output.
    weights : ndarray, shape (T,), optional
        CONN's hrf weights (the ``Effect of rest``): the output is multiplied by them and not
        centred (the weighted mean is removed from the statistics, over all runs together).

    Returns
    -------
    CleaningOperator
    """
    n_volumes = confounds.shape[0]
    spikes = np.eye(n_volumes)[:, np.flatnonzero(outliers)]
    design = np.column_stack([polynomial_trends(n_volumes, detrend_order), confounds, spikes])
    bandpass = filter_matrix(n_volumes, tr, filt)
    if filter_order == "regbp":
        operator = bandpass @ residual_maker(design)
    elif filter_order == "simult":
        operator = residual_maker(bandpass @ design) @ bandpass
    else:
        raise ValueError(f"filter_order must be 'regbp' or 'simult', not {filter_order!r}")
    if censor:
        operator = operator[~outliers]
        weights = None if weights is None else np.asarray(weights, dtype=float)[~outliers]
    if weights is None:
        # Centre the output so that inner products of coefficients are covariances (Pearson r).
        operator = operator - operator.mean(axis=0, keepdims=True)
    else:
        weights = np.maximum(np.asarray(weights, dtype=float), 0.0)  # conn_wdemean: max(0, w)
        operator = weights[:, None] * operator
    u, s, vt = np.linalg.svd(operator, full_matrices=False)
    keep = s > s[0] * _RANK_TOL if s.size and s[0] > 0 else np.zeros_like(s, dtype=bool)
    coef = (vt[keep].T * s[keep]).astype(np.float32)
    return CleaningOperator(
        coef=coef, basis=u[:, keep], n_regressors=design.shape[1], weights=weights
    )


def gaussian_sigma_vox(fwhm_mm: float, affine: np.ndarray) -> np.ndarray:
    """Return the Gaussian sigma in voxels along each array axis for a FWHM in mm."""
    voxel_size = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return fwhm_mm / np.sqrt(8.0 * np.log(2.0)) / voxel_size


def smooth_rows_in_mask(
    values: np.ndarray, mask: np.ndarray, sigma_vox: np.ndarray, n_threads: int = 1, batch: int = 8
) -> np.ndarray:
    """Smooth, in place, rows of in-mask values as volumes, by normalised convolution.

    ``out = G * (v m) / G * m`` inside the mask, so voxels outside the brain neither leak in nor
    dilute the edge; the volumes are cropped to the mask's bounding box (exact: outside is zero).
    ``n_threads`` threads (scipy's filters release the GIL) each smooth a share of the rows, a
    ``batch`` of volumes at a time in one scratch array they reuse: memory grows by a few volumes
    instead of all ``k`` of them (about 0.6 GB for 250 coefficient volumes at 2 mm), and the
    result does not depend on ``n_threads``.

    Parameters
    ----------
    values : ndarray, shape (k, n_voxels), float32
        One row per volume: the values of the mask's voxels in C order of ``mask``.
    mask : ndarray of bool, 3D
    sigma_vox : ndarray, shape (3,)
        Gaussian sigma in voxels along the three axes of ``mask``.
    n_threads : int
    batch : int
        Volumes smoothed together by a thread.

    Returns
    -------
    ndarray
        ``values``, smoothed.
    """
    if not np.any(sigma_vox > 0) or not values.size:
        return values
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    sub_mask = mask[box]
    positions = np.flatnonzero(sub_mask)
    weight = ndimage.gaussian_filter(sub_mask.astype(np.float32), sigma_vox, mode="constant")
    weight = weight.ravel()[positions]

    def smooth(rows: range) -> None:
        scratch = np.empty((min(batch, len(rows)), *sub_mask.shape), dtype=np.float32)
        for start in range(rows.start, rows.stop, batch):
            stop = min(start + batch, rows.stop)
            volumes = scratch[: stop - start]
            volumes.fill(0.0)
            flat = volumes.reshape(stop - start, -1)
            flat[:, positions] = values[start:stop]
            ndimage.gaussian_filter(volumes, (0, *sigma_vox), mode="constant", output=volumes)
            np.divide(flat[:, positions], weight, out=values[start:stop])

    n_shares = max(1, min(n_threads, len(values)))
    edges = np.linspace(0, len(values), n_shares + 1).astype(int)
    shares = [range(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    if len(shares) == 1:
        smooth(shares[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(shares)) as pool:
            list(pool.map(smooth, shares))
    return values
