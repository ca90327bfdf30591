"""Seed-to-voxel connectivity of one run, from its brain series to Fisher z.

The brain series (:func:`~bids_ketamine_fc.participant.bold.read_brain_series`) are projected on
the ``k`` coefficients of :class:`~bids_ketamine_fc.participant.denoising.CleaningOperator`, in
place; smoothing acts on the coefficient volumes. Brain voxels are ordered as
``np.flatnonzero(mask.ravel(order="F"))``, the order of nibabel's on-disk (Fortran) layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant.bold import brain_voxel_index
from bids_ketamine_fc.participant.denoising import (
    CleaningOperator,
    gaussian_sigma_vox,
    smooth_rows_in_mask,
)
from bids_ketamine_fc.participant.weighting import remove_weighted_mean, weighted_sums

# Largest |r| kept before the Fisher transform (CONN's: 1 - eps), so z stays finite (about 18.7).
R_MAX = 1.0 - np.finfo(float).eps


@dataclass
class SeedCorrelation:
    """Sufficient statistics of one run's seed correlations (they add up across runs).

    The cleaned series ``x`` are those of the cleaning operator, scaled (percent signal change)
    and, with CONN's hrf weighting, multiplied by the weights ``w``: ``cross``, ``voxel_ss`` and
    ``seed_ss`` are sums of ``w^2 x x'``; the ``*_sum``/``*_wsum``/``weight_*`` fields, set for
    weighted strategies only, remove the weighted mean over all runs together
    (:mod:`~bids_ketamine_fc.participant.weighting`). Unweighted strategies centre each run.
    """

    mask: np.ndarray  # 3D bool
    cross: np.ndarray  # (n_seeds, n_voxels): <seed, voxel> of the cleaned series
    voxel_ss: np.ndarray  # (n_voxels,): |voxel|^2 of the cleaned, smoothed series
    seed_ss: np.ndarray  # (n_seeds,): |seed|^2 of the cleaned, unsmoothed seed series
    seed_coef: np.ndarray  # (n_seeds, k): seed coefficients (basis @ coef.T gives the series)
    voxel_coef: np.ndarray | None = None  # (k, n_voxels) float32: cleaned, smoothed coefficients
    voxel_sum: np.ndarray | None = None  # (n_voxels,): sum of w x
    voxel_wsum: np.ndarray | None = None  # (n_voxels,): sum of w^2 x
    seed_sum: np.ndarray | None = None  # (n_seeds,)
    seed_wsum: np.ndarray | None = None  # (n_seeds,)
    weight_sum: float = 0.0  # sum of w
    weight_sq: float = 0.0  # sum of w^2

    def r(self) -> np.ndarray:
        """Return (weighted) Pearson r, shape (n_seeds, n_voxels); NaN where a voxel has no variance."""
        cross, voxel_ss, seed_ss = self.cross, self.voxel_ss, self.seed_ss
        if self.voxel_sum is not None and self.weight_sum > 0:
            cross, voxel_ss, seed_ss = remove_weighted_mean(
                cross, voxel_ss, seed_ss, self.voxel_sum, self.voxel_wsum, self.seed_sum,
                self.seed_wsum, self.weight_sum, self.weight_sq,
            )  # fmt: skip
        denom = np.sqrt(np.outer(np.maximum(seed_ss, 0), np.maximum(voxel_ss, 0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, cross / denom, np.nan)


def seed_correlation(
    series: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    operator: CleaningOperator,
    seed_voxels: list[np.ndarray],
    fwhm_mm: float,
    n_threads: int = 1,
    scaling: str = "none",
) -> SeedCorrelation:
    """Correlate each seed's mean cleaned series with every voxel's cleaned, smoothed series.

    As CONN does, seed series come from the unsmoothed data and voxel series from the smoothed data.
    Each voxel's temporal mean is removed from ``series`` first, in place: the cleaning operator
    removes constants, so this changes nothing in exact arithmetic, but the float32 product with
    the operator then works on fluctuations of about the noise level instead of raw values of
    1000-10000, whose rounding errors would grow with the signal level.

    Parameters
    ----------
    series : ndarray, shape (T, n_voxels), float32
        Brain-voxel series after dropping dummies (:func:`read_brain_series`); used up: demeaned
        in place, then its first rows hold the cleaned coefficients (``voxel_coef``).
    mask : ndarray of bool, 3D
    affine : ndarray (4, 4)
    operator : CleaningOperator
        With ``weights`` for CONN's hrf-weighted first level.
    seed_voxels : list of ndarray
        For each seed, positions of its voxels among the brain voxels.
    fwhm_mm : float
        Smoothing kernel (0 for none).
    n_threads : int
        Threads of the product with the operator (BLAS) and of the smoothing (each thread takes
        some of the coefficient volumes).
    scaling : {"none", "psc"}
        ``psc``: voxel series times 100 / the run's mean over the brain mask, each seed's series
        times 100 / its own mean (CONN's percent signal change, which weighs runs equally when
        they are combined).

    Returns
    -------
    SeedCorrelation
    """
    means = series.mean(axis=0, dtype=np.float64)
    series -= means.astype(series.dtype)
    voxel_scale = 100.0 / abs(means.mean()) if scaling == "psc" else 1.0
    seed_scale = np.array(
        [100.0 / abs(means[idx].mean()) if scaling == "psc" else 1.0 for idx in seed_voxels]
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n_threads, user_api="blas"):  # the one product big enough to share
        coef = _project_in_place(operator.coef, series)  # (k, n_voxels), float32
    seed_coef = np.stack([coef[:, idx].mean(axis=1) for idx in seed_voxels]).astype(np.float64)
    seed_coef *= seed_scale[:, None]
    if fwhm_mm > 0:
        coef = _smooth_coefficients(coef, mask, affine, fwhm_mm, n_threads)
    if voxel_scale != 1.0:
        coef *= np.float32(voxel_scale)
    voxel_ss = np.einsum("kv,kv->v", coef, coef, dtype=np.float64)
    cross = seed_coef.astype(np.float32) @ coef
    corr = SeedCorrelation(
        mask=np.asarray(mask, dtype=bool),
        cross=cross.astype(np.float64),
        voxel_ss=voxel_ss,
        seed_ss=np.einsum("sk,sk->s", seed_coef, seed_coef),
        seed_coef=seed_coef,
        voxel_coef=coef,
    )
    if operator.weights is not None:
        sums = weighted_sums(operator.basis, operator.weights, coef, seed_coef)
        for name, value in sums.items():
            setattr(corr, name, value)
    return corr


def _project_in_place(coef: np.ndarray, series: np.ndarray, block: int = 16384) -> np.ndarray:
    """Return ``coef.T @ series`` (k, n_voxels) written over the first ``k`` rows of ``series``.

    Block by block of voxels: the series are read once and no (k, n_voxels) array is allocated
    (fresh pages cost more than the product here; the series are not needed afterwards).
    """
    k = coef.shape[1]
    if not (series.flags.c_contiguous and k <= series.shape[0]):
        return (coef.T @ series).astype(series.dtype, copy=False)
    weights = np.ascontiguousarray(coef.T, dtype=series.dtype)
    out = series[:k]
    for start in range(0, series.shape[1], block):
        part = np.s_[:, start : start + block]
        out[part] = weights @ series[part]  # a (k, block) temporary, computed before the write
    return out


def reduce_dimensions(coef: np.ndarray, n_dims: int) -> np.ndarray:
    """Keep the ``n_dims`` leading temporal dimensions of cleaned data (an SVD truncation).

    Parameters
    ----------
    coef : ndarray, shape (k, n_voxels)
        Coefficients of the cleaned series on an orthonormal temporal basis (runs may be stacked).
    n_dims : int
        Dimensions kept (all when ``k <= n_dims``).

    Returns
    -------
    ndarray, shape (min(k, n_dims), n_voxels), float32
        Rows are ``s_i v_i^T`` of the SVD ``coef = U S V^T``: inner products between voxels are
        those of the cleaned series projected on its ``n_dims`` leading temporal components.
    """
    if coef.shape[0] <= n_dims:
        return coef.astype(np.float32)
    from threadpoolctl import threadpool_limits

    # The k x k Gram matrix is small; its eigenvectors are U. OpenBLAS splits this product (long
    # inner dimension, small output) badly across threads: one thread is as fast when the cores are
    # free, and ten times faster when they are busy.
    coef = np.asarray(coef, dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        gram = (coef @ coef.T).astype(np.float64)
    _, vectors = np.linalg.eigh(gram)
    leading = vectors[:, ::-1][:, :n_dims].astype(np.float32)
    return leading.T @ coef


def _smooth_coefficients(
    coef: np.ndarray, mask: np.ndarray, affine: np.ndarray, fwhm: float, n_threads: int = 1
):
    """Smooth the coefficient volumes inside the mask, in place; returns ``coef``."""
    # Array axes reversed (z, y, x): a C-ordered volume then matches the Fortran voxel order.
    mask_t = np.asarray(mask, dtype=bool).T
    if not mask_t.any():
        raise UserInputError("the brain mask is empty")
    sigma = gaussian_sigma_vox(fwhm, affine)[::-1]
    return smooth_rows_in_mask(coef, mask_t, sigma, n_threads)


def fisher_z(r: np.ndarray) -> np.ndarray:
    """Return Fisher's z = artanh(r), with |r| clipped at 1 - eps as CONN does (float32)."""
    return np.arctanh(np.clip(np.asarray(r, dtype=np.float64), -R_MAX, R_MAX)).astype(np.float32)


def combine_runs(runs: list[SeedCorrelation]) -> SeedCorrelation:
    """Combine runs as CONN does, by concatenating their cleaned series.

    Inner products of concatenated series are sums of the runs' inner products, so every
    statistic of :class:`SeedCorrelation` is summed over the runs (on the voxels present in every
    run); with CONN's weighting, :meth:`SeedCorrelation.r` then removes the weighted mean of the
    concatenated series, as CONN's first level does.

    Parameters
    ----------
    runs : list of SeedCorrelation

    Returns
    -------
    SeedCorrelation
        On the intersection of the runs' masks; ``seed_coef`` is the runs' coefficients concatenated.
    """
    if len(runs) == 1:
        return runs[0]
    common = np.logical_and.reduce([run.mask for run in runs])
    keep_all = brain_voxel_index(common)
    positions = [np.searchsorted(brain_voxel_index(run.mask), keep_all) for run in runs]
    combined = SeedCorrelation(
        mask=common,
        cross=sum(run.cross[:, at] for run, at in zip(runs, positions, strict=True)),
        voxel_ss=sum(run.voxel_ss[at] for run, at in zip(runs, positions, strict=True)),
        seed_ss=np.sum([run.seed_ss for run in runs], axis=0),
        seed_coef=np.concatenate([run.seed_coef for run in runs], axis=1),
    )
    if all(run.voxel_sum is not None for run in runs):
        for name in ("voxel_sum", "voxel_wsum"):
            total = sum(getattr(run, name)[at] for run, at in zip(runs, positions, strict=True))
            setattr(combined, name, total)
        for name in ("seed_sum", "seed_wsum", "weight_sum", "weight_sq"):
            setattr(combined, name, sum(getattr(run, name) for run in runs))
    return combined


def to_volume(values: np.ndarray, mask: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Scatter brain-voxel values back onto the 3D grid (float32, ``fill`` outside the mask)."""
    volume = np.full(int(np.prod(mask.shape)), fill, dtype=np.float32)
    volume[brain_voxel_index(mask)] = values
    return volume.reshape(mask.shape, order="F")
