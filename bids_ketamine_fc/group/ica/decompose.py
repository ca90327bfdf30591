"""Group ICA of the denoised data: subject PCA, MIGP group PCA, spatial FastICA, dual regression.

Input, per participant: the ``k`` volumes of ``desc-reduced_bold`` are the coefficients ``X``
(``k x V``) of the denoised, smoothed BOLD series (runs concatenated) on an orthonormal temporal
basis ``Q`` (``T x k``, ``Q'Q = I``): the series are ``Q X``, so inner products between voxels are
those of the series. The series are zero-mean, so ``X`` is never centred over ``k``. Method
(GIFT/MELODIC temporal concatenation):

1. each voxel's series is scaled to unit norm (MELODIC's variance normalisation,
   :func:`~bids_ketamine_fc.group.ica.data.normalise_voxels`);
2. subject PCA to ``min(k, 2 n)`` dimensions (``n = --ica-components``), uncentred;
3. group PCA to ``n`` by MIGP (MELODIC's incremental group PCA, Smith et al. 2014), the stack of
   subject blocks cut to its top ``10 n`` rows whenever longer (bounded memory);
4. spatial FastICA (scikit-learn, seeded with ``--random-seed``); maps z-scored over voxels,
   signed so that the largest absolute value is positive, ordered by explained variance;
5. dual regression as FSL's (stage 2 on the raw data and unit-variance time courses, so the
   subject maps keep the participant's amplitude) on ``X``: exact, as ``Q'Q = I``
   (:func:`dual_regression`).

Matching to networks is :mod:`.match`, the R vs NR tests :mod:`.compare`, the files :mod:`.run`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bids_ketamine_fc.exceptions import UsageError

LOGGER = logging.getLogger(__name__)

#: The MIGP stack keeps this many times ``n_components`` rows.
MIGP_FACTOR = 10
#: Subject PCA keeps this many times ``n_components`` dimensions (GIFT's usual choice).
SUBJECT_PCA_FACTOR = 2
ICA_MAX_ITER = 1000
ICA_TOL = 1e-4
#: Voxels per chunk of the float64 cross products.
_CHUNK = 65536


def _cross(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Return ``a @ b.T`` in float64, summed over chunks of voxels (bounded memory)."""
    b = a if b is None else b
    out = np.zeros((a.shape[0], b.shape[0]))
    for start in range(0, a.shape[1], _CHUNK):
        cols = slice(start, start + _CHUNK)
        out += a[:, cols].astype(np.float64) @ b[:, cols].astype(np.float64).T
    return out


def top_components(data: np.ndarray, n: int) -> np.ndarray:
    """Top ``n`` uncentred principal components of the rows of ``data`` (``(rows, n_voxels)``).

    Returns
    -------
    numpy.ndarray
        ``(min(n, rows), n_voxels)`` float32 rows ``s_j v_j'`` (singular value times right
        singular vector), from the eigenvectors of the small Gram matrix ``data data'``. Rows
        are not centred: a temporal basis has no mean to remove.
    """
    values, vectors = np.linalg.eigh(_cross(data))
    order = np.argsort(values)[::-1][:n]
    return vectors[:, order].T.astype(np.float32) @ np.asarray(data, dtype=np.float32)


def migp(blocks: Iterable[np.ndarray], keep: int) -> np.ndarray:
    """MELODIC's incremental group PCA (Smith et al. 2014) of stacked subject blocks.

    Hand-written: scikit-learn's IncrementalPCA centres the rows, which is wrong for a temporal
    basis. Blocks are stacked and, whenever the stack exceeds ``keep`` rows, replaced by its top
    ``keep`` components, so memory is ``(keep + block rows) x n_voxels`` and the result is the
    exact top subspace of the full concatenation while it never exceeds ``keep`` rows.
    """
    stack = None
    for block in blocks:
        stack = block if stack is None else np.vstack([stack, block])
        if stack.shape[0] > keep:
            stack = top_components(stack, keep)
    if stack is None:
        raise ValueError("migp needs at least one block")
    return stack


def standardise_maps(maps_: np.ndarray) -> np.ndarray:
    """Z-score each map over voxels and sign it so that its largest absolute value is positive."""
    z = np.asarray(maps_, dtype=np.float64)
    z = (z - z.mean(axis=1, keepdims=True)) / z.std(axis=1, keepdims=True)
    peak = np.abs(z).argmax(axis=1)
    z *= np.sign(z[np.arange(len(z)), peak])[:, None]
    return z.astype(np.float32)


@dataclass(frozen=True)
class GroupICA:
    """Group ICA result.

    ``maps``: ``(n, n_voxels)`` float32 z maps; ``explained``: fraction of the MIGP stack's energy
    each map explains (regression of the stack on the maps); FastICA's ``n_iter``, ``converged``.
    """

    maps: np.ndarray
    explained: np.ndarray
    n_iter: int
    converged: bool


def spatial_ica(eigenmaps: np.ndarray, random_state: int | None) -> tuple[np.ndarray, int]:
    """Spatial FastICA (scikit-learn, logcosh) of ``(n, n_voxels)`` group eigenmaps.

    Returns
    -------
    sources : numpy.ndarray
        ``(n, n_voxels)`` z maps (:func:`standardise_maps`), in FastICA's order.
    n_iter : int
        Iterations run (``ICA_MAX_ITER`` when not converged).
    """
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    ica = FastICA(
        n_components=eigenmaps.shape[0],
        whiten="unit-variance",
        max_iter=ICA_MAX_ITER,
        tol=ICA_TOL,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported from n_iter_ instead
        sources = ica.fit_transform(np.asarray(eigenmaps, dtype=np.float64).T)
    return standardise_maps(sources.T), int(ica.n_iter_)


def group_ica(
    subject_data: Iterable[np.ndarray], n_components: int, random_state: int | None
) -> GroupICA:
    """Temporal-concatenation group ICA of voxel-normalised subject data.

    Parameters
    ----------
    subject_data : iterable of numpy.ndarray
        Each ``(k_i, n_voxels)`` (:func:`load_subject`), consumed once.
    n_components : int
    random_state : int or None
        FastICA seed.

    Returns
    -------
    GroupICA

    Raises
    ------
    UserInputError
        The data have fewer than ``n_components`` dimensions.
    """
    keep_subject = SUBJECT_PCA_FACTOR * n_components
    blocks = (top_components(x, min(x.shape[0], keep_subject)) for x in subject_data)
    stack = migp(blocks, MIGP_FACTOR * n_components)
    eigen = top_components(stack, n_components)
    norms = np.linalg.norm(eigen, axis=1)
    if eigen.shape[0] < n_components or norms.min() <= 1e-6 * norms.max():
        raise UsageError(
            f"--ica-components {n_components}: the reduced data span only "
            f"{int((norms > 1e-6 * norms.max()).sum())} dimensions; lower --ica-components."
        )
    sources, n_iter = spatial_ica(eigen / norms[:, None], random_state)
    gram = _cross(sources)
    coef = np.linalg.solve(gram, _cross(sources, stack))
    total = sum(float(np.sum(np.square(c, dtype=np.float64))) for c in np.array_split(stack, 8, 1))
    energy = (coef**2).sum(axis=1) * np.diag(gram) / total
    order = np.argsort(-energy, kind="stable")
    converged = n_iter < ICA_MAX_ITER
    if not converged:
        LOGGER.warning("Group ICA: FastICA did not converge in %d iterations.", ICA_MAX_ITER)
    return GroupICA(sources[order], energy[order], n_iter, converged)


#: Dual-regression variants: FSL's (raw data, the default) and the variance-normalised one.
DUAL_REGRESSION_METHODS = ("fsl", "normalised")


def dual_regression(
    data: np.ndarray, group_maps: np.ndarray, n_timepoints: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dual regression of one participant's reduced data, as FSL's ``dual_regression``.

    Stage 1 regresses the (spatially zero-mean) group maps on each volume: ``A = X M' (M M')^-1``,
    the time courses in the ``k`` basis. Stage 2 regresses the data on the time courses scaled to
    unit variance (FSL's ``des_norm`` 1): ``B = (U'U)^-1 U' X`` with ``U = A sqrt(T - 1) / |A|``
    column by column, so that ``B`` is in the units of the data per standard deviation of each
    time course. With the series ``Q X`` (``Q'Q = I``, zero-mean) the time courses are ``Q A``
    and both stages give what FSL gives on the ``T`` time points: the reduction is exact.

    FSL regresses the raw (demeaned) data, so ``B`` keeps each participant's amplitude; give the
    voxel-normalised data (:func:`~bids_ketamine_fc.group.ica.data.normalise_voxels`) for maps
    of shape only (the ``normalised`` variant of ``--dual-regression``).

    Parameters
    ----------
    data : numpy.ndarray
        ``(k, n_voxels)`` reduced data.
    group_maps : numpy.ndarray
        ``(n_components, n_voxels)`` z maps.
    n_timepoints : int, optional
        ``T``, the time points of the denoised series; None scales the time courses to unit norm
        instead (``B`` then carries the factor ``sqrt(T - 1)`` of each participant).

    Returns
    -------
    timecourses : numpy.ndarray
        ``(k, n_components)`` float64, stage 1.
    subject_maps : numpy.ndarray
        ``(n_components, n_voxels)`` float32, stage 2.
    """
    if data.shape[0] <= group_maps.shape[0]:
        raise ValueError(
            f"dual regression needs more volumes ({data.shape[0]}) than components "
            f"({group_maps.shape[0]})"
        )
    timecourses = np.linalg.solve(_cross(group_maps), _cross(group_maps, data)).T
    norms = np.linalg.norm(timecourses, axis=0)
    if n_timepoints is not None:
        norms = norms / np.sqrt(max(int(n_timepoints) - 1, 1))
    unit = np.zeros_like(timecourses)
    np.divide(timecourses, norms, out=unit, where=norms > 0)
    stage2 = np.linalg.pinv(unit).astype(np.float32)
    return timecourses, stage2 @ np.asarray(data, dtype=np.float32)
