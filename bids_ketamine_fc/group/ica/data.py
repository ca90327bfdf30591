"""Inputs of the group ICA: finding, checking and loading the participants' reduced data.

Per participant, ``OUTPUT_DIR/sub-<l>/func/sub-<l>_task-<t>_space-<S>[_res-<R>]_desc-reduced_
bold.nii.gz`` (written by the participant level): ``k`` volumes of coefficients of the denoised,
smoothed series on an orthonormal temporal basis. See :mod:`.ica` for the method.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group.inference import rft
from bids_ketamine_fc.participant.bold import read_brain_series

LOGGER = logging.getLogger(__name__)

#: Leading volumes read to find each participant's valid voxels.
MASK_VOLUMES = 3
_REDUCED_RE = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)_task-(?P<task>[A-Za-z0-9]+)_space-(?P<space>[A-Za-z0-9]+)"
    r"(?:_res-(?P<res>[A-Za-z0-9]+))?_desc-reduced_bold\.nii\.gz$"
)
#: Largest difference (mm) between two affines still counted as the same grid.
_AFFINE_TOL = 1e-3


@dataclass(frozen=True)
class ReducedIndex:
    """The reduced data files found (``files``: ``{participant_id: Path}``) on one grid."""

    space: str
    resolution: str | None
    files: dict[str, Path]
    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def prefix(self) -> str:
        """``space-<S>[_res-<R>]``, the start of the group file names."""
        return f"space-{self.space}" + (f"_res-{self.resolution}" if self.resolution else "")

    @property
    def template_resolution(self) -> int:
        """TemplateFlow ``res-`` wanted for atlases: the ``res-`` entity, else the voxel size."""
        if self.resolution and self.resolution.isdigit():
            return int(self.resolution)
        return max(1, int(round(float(rft.voxel_sizes(self.affine).min()))))


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Return the 3-D grid of a 4-D reduced data file (refused otherwise)."""
    try:
        img = nb.load(path)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise UserInputError(f"{path}: cannot be read as NIfTI ({err}).") from err
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise UserInputError(
            f"{path}: reduced data must be 4-D with at least 2 volumes, not {img.shape}; "
            "rerun the participant level."
        )
    return tuple(int(s) for s in img.shape[:3]), img.affine


def _reduced_file(settings: Settings, participant_id: str) -> tuple[re.Match, Path] | None:
    func = Path(settings.output_dir) / participant_id / "func"
    pattern = (
        f"{participant_id}_task-{settings.task_id}_space-{settings.space}_*reduced_bold.nii.gz"
    )
    found = [(_REDUCED_RE.match(p.name), p) for p in sorted(func.glob(pattern))]
    found = [(match, path) for match, path in found if match]
    if len(found) > 1:
        raise UserInputError(
            f"{found[0][1]} and {found[1][1]}: two reduced data files for one participant; "
            "remove the one of the unwanted resolution."
        )
    return found[0] if found else None


def find_reduced_files(settings: Settings, participant_ids: list[str]) -> ReducedIndex | None:
    """Find each participant's reduced data in ``settings.space`` and check they share a grid.

    Parameters
    ----------
    settings : Settings
        Uses ``output_dir``, ``task_id`` and ``space``.
    participant_ids : list of str
        Participants wanted (``sub-<label>``).

    Returns
    -------
    ReducedIndex or None
        None when no participant has a reduced data file.

    Raises
    ------
    UserInputError
        Files on different grids or resolutions, not 4-D, or two files for one participant.
    """
    files, ref = {}, None
    for pid in participant_ids:
        found = _reduced_file(settings, pid)
        if found is None:
            continue
        match, path = found
        shape, affine = _grid(path)
        if ref is None:
            ref = (path, shape, affine, match["res"])
        elif (
            shape != ref[1]
            or not np.allclose(affine, ref[2], atol=_AFFINE_TOL)
            or match["res"] != ref[3]
        ):
            raise UserInputError(
                f"reduced data on different grids: {path} (shape {shape}) vs {ref[0]} "
                f"(shape {ref[1]}); rerun the participant level so all share one grid."
            )
        files[pid] = path
    if ref is None:
        return None
    return ReducedIndex(settings.space, ref[3], files, ref[1], ref[2])


def analysis_mask(index: ReducedIndex) -> np.ndarray:
    """Voxels valid in every participant's reduced data: finite and not constant over volumes.

    Only the first :data:`MASK_VOLUMES` volumes are read (the start of each compressed file).
    Outside a participant's mask the values are NaN, or 0 which scaled int16 may store as the
    (constant) intercept; inside, the volumes are principal components and vary.

    Raises
    ------
    UserInputError
        No voxel is valid in every file.
    """
    mask = np.ones(index.shape, dtype=bool)
    for path in index.files.values():
        first = np.asarray(nb.load(path).dataobj[..., :MASK_VOLUMES], dtype=np.float32)
        mask &= np.isfinite(first).all(axis=-1) & (np.ptp(first, axis=-1) > 0)
    if not mask.any():
        raise UserInputError(
            f"{next(iter(index.files.values()))}: no voxel is valid in every participant's "
            "reduced data; check the participant-level masks."
        )
    return mask


def normalise_voxels(data: np.ndarray) -> np.ndarray:
    """Scale each voxel's series (column of ``(k, n_voxels)`` data) to unit norm; zeros stay."""
    data = np.asarray(data, dtype=np.float32)
    norms = np.linalg.norm(data, axis=0)
    out = np.zeros_like(data)
    np.divide(data, norms, out=out, where=norms > 0)
    return out


def load_subject(path: Path, mask: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Return one participant's reduced data in ``mask``, voxel-normalised unless told not to.

    Returns
    -------
    numpy.ndarray
        ``(k, n_mask_voxels)`` float32, columns in ``mask.ravel(order="F")`` order, each of unit
        norm when ``normalise`` (read volume by volume, memory bounded by the masked data).

    Raises
    ------
    UserInputError
        Non-finite values inside the mask.
    """
    try:
        data = read_brain_series(path, mask).data
    except UserInputError as err:
        raise UserInputError(
            f"{path}: NaN or infinite values inside the participant's mask; rerun the "
            "participant level of this participant."
        ) from err
    return normalise_voxels(data) if normalise else np.asarray(data, dtype=np.float32)


def volumes_kept(path: Path) -> int | None:
    """Time points of the denoised series behind a reduced data file (its sidecar), or None.

    Read from ``VolumesKept`` of the JSON sidecar; None when the sidecar or the key is missing
    (participant outputs of an older version) or unreadable.
    """
    sidecar = Path(str(path).removesuffix(".nii.gz") + ".json")
    try:
        value = json.loads(sidecar.read_text()).get("VolumesKept")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int | float) and value > 1 else None
