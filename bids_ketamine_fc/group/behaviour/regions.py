"""Regions of the brain-behaviour step: voxels of a cluster or of ``--roi`` and their means."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import MissingInputError, UsageError, UserInputError
from bids_ketamine_fc.group import maps

#: Largest difference (mm) between the ROI's affine and the maps' still counted as the same grid.
_AFFINE_TOL = 1e-3


def region_columns(region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return a 3-D region as a boolean over the voxels of ``mask`` (``order="F"``, as the data)."""
    return np.asarray(region, bool).ravel(order="F")[np.asarray(mask, bool).ravel(order="F")]


def region_means(data: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Return each participant's mean of ``data[:, columns]`` (float64)."""
    return data[:, columns].mean(axis=1, dtype=np.float64)


def load_roi(path: Path, index: maps.MapIndex) -> np.ndarray:
    """Read ``--roi``: a 3-D mask (non-zero voxels) on the grid of the subject-level maps.

    Raises
    ------
    UserInputError
        The file is missing, unreadable, not 3-D, empty, or on another grid.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--roi {path}: file not found.")
    try:
        img = nb.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise UserInputError(f"--roi {path}: cannot be read as NIfTI ({err}).") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(index.shape) or not np.allclose(
        img.affine, index.affine, atol=_AFFINE_TOL
    ):
        raise UserInputError(
            f"--roi {path}: grid {data.shape} with affine {np.round(img.affine[:3], 3).tolist()} "
            f"differs from the subject-level maps ({tuple(index.shape)}, "
            f"{np.round(index.affine[:3], 3).tolist()}); resample it onto a map, e.g. "
            "nilearn.image.resample_to_img(roi, map, interpolation='nearest')."
        )
    region = np.nan_to_num(np.asarray(data, dtype=float)) != 0
    if not region.any():
        raise UserInputError(f"--roi {path}: the mask has no non-zero voxel.")
    return region


def check_roi(settings: Settings, index: maps.MapIndex) -> np.ndarray | None:
    """Check ``--roi`` and ``--roi-seed`` together; return the ROI (3-D bool) or None.

    Raises
    ------
    UserInputError
        One option without the other, an unknown seed, or a bad mask (:func:`load_roi`).
    """
    if settings.roi is None and settings.roi_seed is None:
        return None
    if settings.roi is None or settings.roi_seed is None:
        given, missing = ("--roi", "--roi-seed") if settings.roi else ("--roi-seed", "--roi")
        raise UsageError(f"{given} needs {missing}: give both (the mask and the seed map).")
    if settings.roi_seed not in index.files:
        raise UsageError(
            f"--roi-seed {settings.roi_seed}: no subject-level maps of this seed; "
            f"use one of {', '.join(index.seeds)}."
        )
    return load_roi(settings.roi, index)
