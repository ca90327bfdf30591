"""Reading a run's BOLD file: the brain voxels' series, streamed, and what is taken on the way.

The run is streamed from disk volume by volume into a ``(T, n_brain_voxels)`` float32 array, so the
peak memory is about the size of the brain voxels' series rather than of the whole 4D image (and
of nibabel's float64 copy). Decompression runs in a thread of its own (ISA-L) while the brain
voxels are gathered; the tSNR moments and the global signal are taken from each block while it
is in cache, and observers (ART's global signal, the tissue series of CONN's aCompCor) see every
block, so the file is read once.

Brain voxels are ordered as ``np.flatnonzero(mask.ravel(order="F"))``, the order of nibabel's on-disk
(Fortran) layout, which makes reading a volume a contiguous gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.openers import ImageOpener

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.utils.io import load_nifti, read_failure

_CHUNK_BYTES = 64 * 2**20
#: Decompressed blocks of the decompression thread, and how many it may hold ahead (a chunk).
_BLOCK_BYTES = 4 * 2**20
_QUEUE_BLOCKS = _CHUNK_BYTES // _BLOCK_BYTES


@dataclass
class BrainSeries:
    """Brain-voxel time series of one run and the cheap summaries taken while reading it."""

    data: np.ndarray  # (T, n_voxels) float32
    global_signal: np.ndarray  # (T,)
    tsnr: np.ndarray  # (n_voxels,)


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
    finite, moments = True, _Moments()
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
            # While the block is in cache: the global signal, the tSNR moments, and a check
            # for NaN or infinity.
            global_signal[start:stop] = part.mean(axis=1, dtype=np.float64)
            moments.update(part)
            finite = finite and bool(np.isfinite(global_signal[start:stop]).all())
            if observers:
                _observe(observers, block, slope, inter)
    if not finite:
        bad = ~np.isfinite(out).all(axis=0)
        raise UserInputError(
            f"{bold_file}: {int(bad.sum())} voxels inside the brain mask hold NaN or infinite values; "
            "re-run fMRIPrep for this run or exclude it with --participant-label/--session-label"
        )
    return BrainSeries(data=out, global_signal=global_signal, tsnr=moments.tsnr())


class _Moments:
    """Each voxel's temporal mean and standard deviation, accumulated block by block (tSNR).

    Sums of the deviations from the first volume, in float64: no cancellation for values of
    1000s that vary by 10s, and no ``(T, n_voxels)`` temporaries (``std`` of the whole series
    allocates two, whose fresh pages took 0.5 s at 2 mm, more than the arithmetic).
    """

    def __init__(self):
        self.n = 0
        self.shift = self.sums = self.squares = self.scratch = None

    def update(self, part: np.ndarray) -> None:
        """Add a block of volumes, shape (n, n_voxels)."""
        if self.shift is None:
            self.shift = part[0].copy()
            self.sums, self.squares = np.zeros(part.shape[1]), np.zeros(part.shape[1])
            self.scratch = np.empty_like(part)
        deviation = np.subtract(part, self.shift, out=self.scratch[: len(part)])
        self.sums += deviation.sum(axis=0, dtype=np.float64)
        np.square(deviation, out=deviation)
        self.squares += deviation.sum(axis=0, dtype=np.float64)
        self.n += len(part)

    def tsnr(self) -> np.ndarray:
        """Return mean / standard deviation (0 where the series is constant), float32."""
        if self.shift is None:
            return np.zeros(0, np.float32)
        offset = self.sums / self.n
        std = np.sqrt(np.maximum(self.squares / self.n - offset**2, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(std > 0, (self.shift + offset) / std, 0.0).astype(np.float32)


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
        return _lookahead_reader(igzip_threaded, path) or igzip_threaded.open(
            path, "rb", threads=1, block_size=_BLOCK_BYTES
        )
    return ImageOpener(path)


def _lookahead_reader(igzip_threaded, path):
    """Return isal's threaded reader with :data:`_QUEUE_BLOCKS` blocks of lookahead, or None.

    ``igzip_threaded.open`` lets the decompression thread run two 4 MB blocks ahead, less than
    one chunk of volumes: it then waits while the chunk is processed. A chunk's worth of
    lookahead took a 2 mm run's reading from 1.7-2.5 s to 1.4-1.6 s. The queue's length is an
    argument of isal's reader class (isal 1.x), not of ``open``: None if that class changed.
    """
    import io

    try:
        raw = igzip_threaded._ThreadedGzipReader(
            path, queue_size=_QUEUE_BLOCKS, block_size=_BLOCK_BYTES
        )
    except (AttributeError, TypeError):
        return None
    return io.BufferedReader(raw)
