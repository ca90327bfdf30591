"""Write NIfTI-1 images from voxel vectors without building the full array in memory."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.demo.anatomy import Grid
from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write

MNI_CODE = 4  # NIfTI xform code "MNI_152"


def _header(grid: Grid, n_volumes: int | None, dtype, tr: float | None) -> nb.Nifti1Header:
    header = nb.Nifti1Header()
    shape = grid.shape if n_volumes is None else (*grid.shape, n_volumes)
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(grid.affine, code=MNI_CODE)
    header.set_qform(grid.affine, code=MNI_CODE)
    zooms = tuple(np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0)))
    header.set_zooms(zooms if n_volumes is None else (*zooms, tr))
    header.set_xyzt_units("mm", "sec")
    return header


def save_series(
    path: Path, grid: Grid, voxels: np.ndarray, data: np.ndarray, tr: float, dtype=np.float32
) -> Path:
    """Write a 4-D series given only its non-zero voxels, one volume at a time (gzip level 1).

    Written by hand (header from nibabel) so that memory stays at one volume plus ``data``:
    a NIfTI-1 single file is the 348-byte header, a 4-byte extension flag, then the volumes in
    Fortran order, so each volume can be streamed in turn.

    Parameters
    ----------
    path : Path
        ``.nii.gz`` file written (atomically).
    grid : Grid
        Voxel grid.
    voxels : numpy.ndarray
        Flat (C order) indices of the rows of ``data`` on ``grid``.
    data : numpy.ndarray
        (len(voxels), n_volumes) values; other voxels are 0.
    tr : float
        Repetition time (s), stored as the 4th zoom.
    dtype : numpy dtype
        On-disk data type (values are rounded for integer types).

    Returns
    -------
    Path
    """
    header = _header(grid, data.shape[1], dtype, tr)
    header["vox_offset"] = 352
    fortran = np.ravel_multi_index(np.unravel_index(voxels, grid.shape), grid.shape, order="F")
    integer = np.issubdtype(np.dtype(dtype), np.integer)

    def writer(tmp: Path) -> None:
        volume = np.zeros(int(np.prod(grid.shape)), dtype=dtype)
        # no file name and a zero time stamp in the gzip header (reproducible, as BIDS asks)
        with open(tmp, "wb") as raw, gzip.GzipFile("", "wb", 1, raw, mtime=0) as stream:
            stream.write(header.binaryblock + b"\x00" * 4)
            for column in data.T:
                volume[fortran] = np.rint(column) if integer else column
                stream.write(volume.tobytes())

    return atomic_write(Path(path), writer)


def save_volume(path: Path, grid: Grid, voxels: np.ndarray, values: np.ndarray, dtype) -> Path:
    """Write a 3-D image given its values at ``voxels`` (flat C-order indices), 0 elsewhere.

    Parameters
    ----------
    path : Path
        ``.nii.gz`` file written (atomically).
    grid : Grid
        Voxel grid.
    voxels : numpy.ndarray
        Flat indices of ``values``.
    values : numpy.ndarray
        Values at ``voxels``.
    dtype : numpy dtype
        On-disk data type.

    Returns
    -------
    Path
    """
    volume = np.zeros(int(np.prod(grid.shape)), dtype=dtype)
    volume[voxels] = values
    header = _header(grid, None, dtype, None)
    image = nb.Nifti1Image(volume.reshape(grid.shape), grid.affine, header)
    return atomic_save_img(image, Path(path))
