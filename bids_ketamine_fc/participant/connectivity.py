"""Seed-to-voxel connectivity of one run, from the BOLD file to Fisher z.

The run is streamed from disk volume by volume into a ``(T, n_brain_voxels)`` float32 array, so the
peak memory is about the size of the brain voxels' series rather than of the whole 4D image; cleaning
and smoothing act on the ``k`` coefficients of
:class:`~bids_ketamine_fc.participant.denoising.CleaningOperator`.

Brain voxels are ordered as ``np.flatnonzero(mask.ravel(order="F"))``, the order of nibabel's on-disk
(Fortran) layout, which makes reading a volume a contiguous gather.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.openers import ImageOpener

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant.denoising import (
    CleaningOperator,
    gaussian_sigma_vox,
    smooth_in_mask,
)
from bids_ketamine_fc.participant.weighting import remove_weighted_mean, weighted_sums
from bids_ketamine_fc.utils.io import load_nifti, read_failure

# Largest |r| kept before the Fisher transform (CONN's: 1 - eps), so z stays finite (about 18.7).
R_MAX = 1.0 - np.finfo(float).eps
_CHUNK_BYTES = 64 * 2**20


@dataclass
class BrainSeries:
    """Brain-voxel time series of one run and the cheap summaries taken while reading it."""

    data: np.ndarray  # (T, n_voxels) float32
    global_signal: np.ndarray  # (T,)
    tsnr: np.ndarray  # (n_voxels,)


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


def brain_voxel_index(mask: np.ndarray) -> np.ndarray:
    """Return the Fortran-order flat positions of the mask's voxels."""
    return np.flatnonzero(np.asarray(mask).ravel(order="F"))


def read_brain_series(
    bold_file: Path, mask: np.ndarray, n_dummy: int = 0, observers: tuple = ()
) -> BrainSeries:
    """Stream the brain voxels of a 4D NIfTI into a ``(T, n_voxels)`` float32 array.

    Nibabel would first decode the whole 4D image (and a float64 copy with ``get_fdata``); reading the
    file volume by volume keeps memory bounded by the brain voxels' series.

    Parameters
    ----------
    bold_file : Path
        The preprocessed BOLD image (``.nii`` or ``.nii.gz``).
    mask : ndarray of bool
        Brain mask on the same grid.
    n_dummy : int
        Initial volumes to skip.
    observers : tuple
        Objects whose ``update(volumes)`` receives each block of whole volumes, shape
        ``(n, n_grid_voxels)``, float32 and scaled, voxels in Fortran order (ART's global signal
        and the tissue voxels need voxels outside the brain mask); they copy what they keep.

    Returns
    -------
    BrainSeries
    """
    fix = "re-run fMRIPrep for this run or restore the file"
    img = load_nifti(bold_file, "BOLD run", fix)
    try:
        return _read_series(img, mask, n_dummy, bold_file, observers)
    except (UserInputError, MemoryError):
        raise
    except Exception as err:  # truncated or corrupt data (gzip, ISA-L and numpy raise many types)
        raise read_failure(bold_file, "BOLD run", err, fix) from err


def _read_series(
    img, mask: np.ndarray, n_dummy: int, bold_file: Path, observers: tuple = ()
) -> BrainSeries:
    proxy = img.dataobj
    shape = img.shape
    n_vox_grid = int(np.prod(shape[:3]))
    n_volumes = shape[3] - n_dummy
    index = brain_voxel_index(mask)
    if mask.size != n_vox_grid:
        raise ValueError(f"brain mask of {mask.size} voxels for volumes of {n_vox_grid}")
    slope = proxy.slope if np.isfinite(proxy.slope) and proxy.slope != 0 else 1.0
    inter = proxy.inter if np.isfinite(proxy.inter) else 0.0
    dtype = np.dtype(proxy.dtype)
    volume_bytes = n_vox_grid * dtype.itemsize
    chunk = max(1, _CHUNK_BYTES // volume_bytes)
    out = np.empty((n_volumes, index.size), dtype=np.float32)
    global_signal = np.empty(n_volumes)
    finite = True
    buffer = np.empty(chunk * n_vox_grid, dtype=dtype)
    with _open_image(proxy.file_like) as fobj:
        _skip(fobj, proxy.offset + n_dummy * volume_bytes)
        for start in range(0, n_volumes, chunk):
            stop = min(start + chunk, n_volumes)
            block = buffer[: (stop - start) * n_vox_grid]
            if fobj.readinto(memoryview(block).cast("B")) != block.nbytes:
                raise EOFError(f"the data end before volume {n_dummy + stop} of {shape[3]}")
            block = block.reshape(stop - start, n_vox_grid)
            part = out[start:stop]
            if dtype == part.dtype:
                # straight into place; mode "clip" skips the buffered bounds check of "raise"
                # (5x faster here) and the index is within the volume by construction
                np.take(block, index, axis=1, out=part, mode="clip")
            else:
                part[:] = block[:, index]
            if slope != 1.0 or inter != 0.0:
                part *= np.float32(slope)
                part += np.float32(inter)
            # While the block is in cache: the global signal, and a check for NaN or infinity.
            global_signal[start:stop] = part.mean(axis=1, dtype=np.float64)
            finite = finite and bool(np.isfinite(global_signal[start:stop]).all())
            if observers:
                _observe(observers, block, slope, inter)
    if not finite:
        bad = ~np.isfinite(out).all(axis=0)
        raise UserInputError(
            f"{bold_file}: {int(bad.sum())} voxels inside the brain mask hold NaN or infinite values; "
            "re-run fMRIPrep for this run or exclude it with --participant-label/--session-label"
        )
    # float32 moments: a float64 pass over (T, n_voxels) costs seconds at 2 mm, for a QC figure.
    mean = out.mean(axis=0)
    std = out.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tsnr = np.where(std > 0, mean / std, 0.0)
    return BrainSeries(data=out, global_signal=global_signal, tsnr=tsnr)


def _skip(fobj, n_bytes: int) -> None:
    """Read past ``n_bytes`` of a stream that cannot seek (threaded decompression)."""
    while n_bytes > 0:
        data = fobj.read(min(n_bytes, _CHUNK_BYTES))
        if not data:
            return
        n_bytes -= len(data)


def _observe(observers: tuple, block: np.ndarray, slope: float, inter: float) -> None:
    """Hand a block of whole volumes, scaled as the brain series, to every observer."""
    values = np.asarray(block, dtype=np.float32)  # no copy for float32 files
    if slope != 1.0 or inter != 0.0:
        values = values * np.float32(slope)
        values += np.float32(inter)
    for observer in observers:
        observer.update(values)


def _open_image(path):
    """Open a NIfTI file for reading, decompressing ``.gz`` with ISA-L when it is installed.

    Decompression is most of a run's reading time; ``isal`` (Intel ISA-L) decompresses about twice
    as fast as the standard library's zlib here (1.4 s against 3.0 s for a 2 mm run), and in a
    thread of its own (it releases the GIL), so that decompression and the gathering of the brain
    voxels overlap.
    """
    if str(path).endswith(".gz"):
        try:
            from isal import igzip_threaded
        except ImportError:
            return ImageOpener(path)
        return igzip_threaded.open(path, "rb", threads=1, block_size=4 * 2**20)
    return ImageOpener(path)


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
        Brain-voxel series after dropping dummies (:func:`read_brain_series`); demeaned in place.
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
        coef = operator.coef.T @ series  # (k, n_voxels), float32
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
    """Smooth the coefficient volumes inside the mask; returns (k, n_voxels) float32.

    The volumes are independent, so ``n_threads`` threads each smooth a share of them in place
    (scipy's filters release the GIL); the result does not depend on ``n_threads``.
    """
    # Array axes reversed (z, y, x): a C-ordered volume then matches the Fortran voxel order.
    mask_t = np.asarray(mask, dtype=bool).T
    sigma = gaussian_sigma_vox(fwhm, affine)[::-1]
    box = _bounding_box(mask_t)
    sub_mask = mask_t[box]
    volumes = np.zeros((coef.shape[0], *sub_mask.shape), dtype=np.float32)
    flat = volumes.reshape(coef.shape[0], -1)
    positions = np.flatnonzero(sub_mask)
    flat[:, positions] = coef
    shares = [s for s in np.array_split(np.arange(len(volumes)), max(1, n_threads)) if s.size]
    if len(shares) == 1:
        volumes = smooth_in_mask(volumes, sub_mask, sigma)
    else:
        with ThreadPoolExecutor(len(shares)) as pool:
            views = [volumes[share[0] : share[-1] + 1] for share in shares]
            list(pool.map(lambda view: smooth_in_mask(view, sub_mask, sigma), views))
    return volumes.reshape(coef.shape[0], -1)[:, positions]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    from scipy import ndimage

    objects = ndimage.find_objects(mask.astype(np.uint8))
    if not objects:
        raise UserInputError("the brain mask is empty")
    return objects[0]


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
