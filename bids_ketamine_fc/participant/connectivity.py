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
from bids_ketamine_fc.utils.io import load_nifti, read_failure

# Largest |r| kept before the Fisher transform, so a seed voxel correlating with itself stays finite.
R_MAX = 1.0 - 1e-7
_CHUNK_BYTES = 16 * 2**20  # read a few volumes at a time, into one buffer used again


@dataclass
class BrainSeries:
    """Brain-voxel time series of one run and the cheap summaries taken while reading it."""

    data: np.ndarray  # (T, n_voxels) float32
    global_signal: np.ndarray  # (T,)
    tsnr: np.ndarray  # (n_voxels,)


@dataclass
class SeedCorrelation:
    """Sufficient statistics of one run's seed correlations (they add up across runs)."""

    mask: np.ndarray  # 3D bool
    cross: np.ndarray  # (n_seeds, n_voxels): <seed, voxel> of the cleaned series
    voxel_ss: np.ndarray  # (n_voxels,): |voxel|^2 of the cleaned, smoothed series
    seed_ss: np.ndarray  # (n_seeds,): |seed|^2 of the cleaned, unsmoothed seed series
    seed_coef: np.ndarray  # (n_seeds, k): seed coefficients (basis @ coef.T gives the series)
    voxel_coef: np.ndarray | None = None  # (k, n_voxels) float32: cleaned, smoothed coefficients

    def r(self) -> np.ndarray:
        """Return Pearson r, shape (n_seeds, n_voxels); NaN where a voxel has no variance."""
        denom = np.sqrt(np.outer(self.seed_ss, self.voxel_ss))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denom > 0, self.cross / denom, np.nan)
        return r.astype(np.float32)


def brain_voxel_index(mask: np.ndarray) -> np.ndarray:
    """Return the Fortran-order flat positions of the mask's voxels."""
    return np.flatnonzero(np.asarray(mask).ravel(order="F"))


def read_brain_series(bold_file: Path, mask: np.ndarray, n_dummy: int = 0) -> BrainSeries:
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

    Returns
    -------
    BrainSeries
    """
    fix = "re-run fMRIPrep for this run or restore the file"
    img = load_nifti(bold_file, "BOLD run", fix)
    try:
        return _read_series(img, mask, n_dummy, bold_file)
    except (UserInputError, MemoryError):
        raise
    except Exception as err:  # truncated or corrupt data (gzip, ISA-L and numpy raise many types)
        raise read_failure(bold_file, "BOLD run", err, fix) from err


def _read_series(img, mask: np.ndarray, n_dummy: int, bold_file: Path) -> BrainSeries:
    proxy = img.dataobj
    shape = img.shape
    n_vox_grid = int(np.prod(shape[:3]))
    n_volumes = shape[3] - n_dummy
    index = brain_voxel_index(mask)
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
                np.take(block, index, axis=1, out=part)  # straight into place, no temporary
            else:
                part[:] = block[:, index]
            if slope != 1.0 or inter != 0.0:
                part *= np.float32(slope)
                part += np.float32(inter)
            # While the block is in cache: the global signal, and a check for NaN or infinity.
            global_signal[start:stop] = part.mean(axis=1, dtype=np.float64)
            finite = finite and bool(np.isfinite(global_signal[start:stop]).all())
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
    seed_voxels : list of ndarray
        For each seed, positions of its voxels among the brain voxels.
    fwhm_mm : float
        Smoothing kernel (0 for none).
    n_threads : int
        Threads of the product with the operator (BLAS) and of the smoothing (each thread takes
        some of the coefficient volumes).

    Returns
    -------
    SeedCorrelation
    """
    series -= series.mean(axis=0, dtype=np.float64).astype(series.dtype)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n_threads, user_api="blas"):  # the one product big enough to share
        coef = operator.coef.T @ series  # (k, n_voxels), float32
    seed_coef = np.stack([coef[:, idx].mean(axis=1) for idx in seed_voxels]).astype(np.float64)
    if fwhm_mm > 0:
        coef = _smooth_coefficients(coef, mask, affine, fwhm_mm, n_threads)
    voxel_ss = np.einsum("kv,kv->v", coef, coef, dtype=np.float64)
    cross = seed_coef.astype(np.float32) @ coef
    return SeedCorrelation(
        mask=np.asarray(mask, dtype=bool),
        cross=cross.astype(np.float64),
        voxel_ss=voxel_ss,
        seed_ss=np.einsum("sk,sk->s", seed_coef, seed_coef),
        seed_coef=seed_coef,
        voxel_coef=coef,
    )


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
    """Return Fisher's z = artanh(r), with |r| clipped just below 1 so the result stays finite."""
    return np.arctanh(np.clip(r, -R_MAX, R_MAX)).astype(np.float32)


def combine_runs(runs: list[SeedCorrelation]) -> SeedCorrelation:
    """Combine runs as CONN does, by concatenating their cleaned series.

    Inner products of concatenated series are sums of the runs' inner products, so the combined r is
    ``sum(cross) / sqrt(sum(seed_ss) * sum(voxel_ss))`` over the voxels present in every run.

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
    cross = np.zeros((runs[0].cross.shape[0], keep_all.size))
    voxel_ss = np.zeros(keep_all.size)
    for run in runs:
        position = np.searchsorted(brain_voxel_index(run.mask), keep_all)
        cross += run.cross[:, position]
        voxel_ss += run.voxel_ss[position]
    return SeedCorrelation(
        mask=common,
        cross=cross,
        voxel_ss=voxel_ss,
        seed_ss=np.sum([run.seed_ss for run in runs], axis=0),
        seed_coef=np.concatenate([run.seed_coef for run in runs], axis=1),
    )


def to_volume(values: np.ndarray, mask: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Scatter brain-voxel values back onto the 3D grid (float32, ``fill`` outside the mask)."""
    volume = np.full(int(np.prod(mask.shape)), fill, dtype=np.float32)
    volume[brain_voxel_index(mask)] = values
    return volume.reshape(mask.shape, order="F")
