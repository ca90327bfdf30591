"""Find, check and load the subject-level seed maps that the group level analyses.

Subject-level maps live in ``OUTPUT_DIR/sub-<label>/func/`` without ``ses-`` or ``run-`` entity
(runs and sessions concatenated, as CONN does)::

    sub-<label>_task-<task>_space-<space>[_res-<res>]_seed-<seed>_stat-fisherz_boldmap.nii.gz

Version 0.1.0 named the same maps ``stat-z``; they are still read (with a warning) where no
``stat-fisherz`` map of the same participant and seed exists.

Voxels that are not finite or exactly 0 are invalid; the analysis mask of a seed is the set of
voxels valid in every map analysed (SPM's implicit mask). Voxel data are returned as ``(n_subjects,
n_mask_voxels)`` float32 arrays whose columns follow ``numpy.flatnonzero(mask.ravel(order="F"))``.
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
from bids_ketamine_fc.exceptions import MissingInputError, NothingSelectedError, UserInputError
from bids_ketamine_fc.utils import io

LOGGER = logging.getLogger(__name__)

_MAP_RE = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)_task-(?P<task>[A-Za-z0-9]+)_space-(?P<space>[A-Za-z0-9]+)"
    r"(?:_res-(?P<res>[A-Za-z0-9]+))?_seed-(?P<seed>[A-Za-z0-9]+)_stat-(?P<stat>fisherz|z)_boldmap\.nii\.gz$"
)
#: ``stat-`` value of the subject-level maps written by version 0.1.0 (same content).
LEGACY_STAT = "z"
#: Largest difference (mm) between two affines still counted as the same grid.
_AFFINE_TOL = 1e-3


@dataclass(frozen=True)
class MapIndex:
    """The subject-level maps found for one task and space.

    Attributes
    ----------
    space : str
        Template space of every map.
    resolution : str or None
        Value of the ``res-`` entity, if the maps carry one.
    files : dict
        ``{seed: {participant_id: Path}}``.
    shape : tuple of int
        Grid shape shared by every map.
    affine : numpy.ndarray
        Voxel-to-world affine shared by every map.
    """

    space: str
    resolution: str | None
    files: dict[str, dict[str, Path]]
    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def seeds(self) -> list[str]:
        """Seed names, in a stable order."""
        return sorted(self.files)

    @property
    def participants(self) -> list[str]:
        """Participants with at least one map."""
        return sorted({pid for per_seed in self.files.values() for pid in per_seed})

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def _scan(settings: Settings) -> list[tuple[re.Match, Path]]:
    out_dir = Path(settings.output_dir)
    wanted = None
    if settings.participant_label:
        wanted = {f"sub-{label.removeprefix('sub-')}" for label in settings.participant_label}
    found = {}
    for path in sorted(out_dir.glob("sub-*/func/sub-*_stat-*_boldmap.nii.gz")):
        match = _MAP_RE.match(path.name)
        if match is None or match["task"] != settings.task_id:
            continue
        if match["sub"] != path.parents[1].name or (wanted and match["sub"] not in wanted):
            continue
        key = (match["sub"], match["space"], match["res"], match["seed"])
        if key not in found or found[key][0]["stat"] == LEGACY_STAT:
            found[key] = (match, path)
    legacy = [path for match, path in found.values() if match["stat"] == LEGACY_STAT]
    if legacy:
        LOGGER.warning(
            "%d subject-level maps are named stat-z, as bids_ketamine_fc 0.1.0 wrote them (e.g. "
            "%s); they are read as Fisher z maps. Rerun the participant level to get the current "
            "name, stat-fisherz.",
            len(legacy),
            legacy[0],
        )
    if not found:
        raise MissingInputError(
            f"{out_dir}: no subject-level maps (sub-<label>/func/sub-<label>_task-"
            f"{settings.task_id}_space-<space>_seed-<seed>_stat-fisherz_boldmap.nii.gz); "
            "run the participant level first (or check --task-id and --participant-label)."
        )
    return sorted(found.values(), key=lambda item: str(item[1]))


def _check_spaces(found: list[tuple[re.Match, Path]], space: str) -> None:
    """Every participant with maps must have them in ``space`` (error names two files)."""
    in_space = {m["sub"]: p for m, p in found if m["space"] == space}
    if not in_space:
        other = found[0]
        spaces = sorted({m["space"] for m, _ in found})
        raise NothingSelectedError(
            f"--space {space}: no subject-level maps in this space, but maps in "
            f"{', '.join(spaces)} (e.g. {other[1]}); use --space {other[0]['space']}."
        )
    for match, path in found:
        if match["sub"] not in in_space:
            ref = next(iter(in_space.values()))
            raise UserInputError(
                f"subject-level maps in different spaces: {path} vs {ref}; rerun the "
                f"participant level of {match['sub']} with --space {space}."
            )


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        img = nb.load(path)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise UserInputError(f"{path}: cannot be read as NIfTI ({err}).") from err
    shape = img.shape[:3] if len(img.shape) == 3 or img.shape[3:] == (1,) else img.shape
    return tuple(int(s) for s in shape), img.affine


def find_subject_maps(settings: Settings) -> MapIndex:
    """Find the subject-level maps and check that they share one space and one grid.

    Parameters
    ----------
    settings : Settings
        Uses ``output_dir``, ``task_id``, ``space`` and ``participant_label``.

    Returns
    -------
    MapIndex

    Raises
    ------
    MissingInputError
        No subject-level map is found.
    UserInputError
        Maps are in another space, on different grids or resolutions (the message names two
        files), or not 3-D.
    """
    found = _scan(settings)
    _check_spaces(found, settings.space)
    files: dict[str, dict[str, Path]] = {}
    ref_path = ref_shape = ref_affine = ref_res = None
    for match, path in found:
        if match["space"] != settings.space:
            continue
        shape, affine = _grid(path)
        if len(shape) != 3:
            raise UserInputError(f"{path}: a subject-level map must be 3-D, not {shape}.")
        if ref_path is None:
            ref_path, ref_shape, ref_affine, ref_res = path, shape, affine, match["res"]
        elif (
            shape != ref_shape
            or not np.allclose(affine, ref_affine, atol=_AFFINE_TOL)
            or match["res"] != ref_res
        ):
            raise UserInputError(
                f"subject-level maps on different grids: {path} (shape {shape}) vs {ref_path} "
                f"(shape {ref_shape}); rerun the participant level so all share one grid."
            )
        files.setdefault(match["seed"], {})[match["sub"]] = path
    LOGGER.info(
        "Found subject-level maps of %d participants for seeds %s (space %s).",
        len({p for f in files.values() for p in f}),
        ", ".join(sorted(files)),
        settings.space,
    )
    return MapIndex(settings.space, ref_res, files, ref_shape, ref_affine)


@dataclass(frozen=True)
class SeedMaps:
    """The maps of one seed, masked.

    Attributes
    ----------
    seed : str
    participant_ids : list of str
        Rows of ``data``.
    data : numpy.ndarray
        ``(n_subjects, n_mask_voxels)`` float32 Fisher z values.
    mask : numpy.ndarray
        3-D boolean analysis mask; columns of ``data`` follow ``mask.ravel(order="F")``.
    affine : numpy.ndarray
    unusable : list of str
        Participants whose map has no valid voxel.
    """

    seed: str
    participant_ids: list[str]
    data: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    unusable: list[str]


def load_seed_maps(index: MapIndex, seed: str, participant_ids: list[str]) -> SeedMaps:
    """Load the maps of ``seed`` for ``participant_ids`` and intersect their valid voxels.

    Participants without a map of this seed are skipped; maps without any valid voxel are listed
    in ``unusable``. Voxels with the same value in every map are left out of the mask. Memory is
    bounded by the valid voxels of the first usable map (the intersection can only shrink), not by
    the whole grid.

    Parameters
    ----------
    index : MapIndex
    seed : str
    participant_ids : list of str

    Returns
    -------
    SeedMaps

    Raises
    ------
    UserInputError
        No voxel is valid in every usable map.
    """
    paths = {pid: index.files[seed][pid] for pid in participant_ids if pid in index.files[seed]}
    candidate, rows, kept, unusable = None, [], [], []
    for pid, path in paths.items():
        volume = np.asarray(nb.load(path).dataobj, dtype=np.float32).ravel(order="F")
        valid = np.isfinite(volume) & (volume != 0)
        if not valid.any():
            unusable.append(pid)
            continue
        if candidate is None:
            candidate = np.flatnonzero(valid)
        rows.append(volume[candidate])
        kept.append(pid)
    mask = np.zeros(int(np.prod(index.shape)), dtype=bool)
    if candidate is None:
        return SeedMaps(
            seed,
            [],
            np.zeros((0, 0), np.float32),
            mask.reshape(index.shape),
            index.affine,
            unusable,
        )
    data = np.vstack(rows)
    in_all = (np.isfinite(data) & (data != 0)).all(axis=0)
    if len(kept) > 1:  # constant voxels carry no variance (spm_spm leaves them out too)
        in_all &= np.ptp(data, axis=0) > 0
    if not in_all.any():
        raise UserInputError(
            f"seed {seed}: no voxel is valid in every subject-level map (e.g. {paths[kept[0]]}); "
            "check the participant-level masks."
        )
    mask[candidate[in_all]] = True
    return SeedMaps(
        seed,
        kept,
        np.ascontiguousarray(data[:, in_all]),
        mask.reshape(index.shape, order="F"),
        index.affine,
        unusable,
    )


def unmask(
    values: np.ndarray, mask: np.ndarray, fill: float = np.nan, dtype=np.float32
) -> np.ndarray:
    """Put masked voxel values back on the 3-D grid (``fill`` outside the mask).

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_mask_voxels,)`` values in ``mask.ravel(order="F")`` order.
    mask : numpy.ndarray
        3-D boolean mask.
    fill : float
        Value outside the mask.
    dtype : numpy dtype
        Type of the volume (float32 by default; e.g. int32 for labels).

    Returns
    -------
    numpy.ndarray
        3-D volume.
    """
    flat = np.full(mask.size, fill, dtype=dtype)
    flat[mask.ravel(order="F")] = values
    return flat.reshape(mask.shape, order="F")


def to_image(values: np.ndarray, mask: np.ndarray, affine: np.ndarray, fill: float = np.nan):
    """Return a float32 NIfTI image of masked values (see :func:`unmask`)."""
    img = nb.Nifti1Image(unmask(values, mask, fill), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_sform(affine, code=4)  # 4 = MNI152
    img.header.set_qform(affine, code=4)
    return img


#: Format of the numbers in the TSV outputs (one for every table: :data:`.io.FLOAT_FORMAT`).
FLOAT_FORMAT = io.FLOAT_FORMAT
#: The statistic maps written for every model and contrast.
STATS = ("t", "z", "p", "effect", "g")
STAT_DESCRIPTIONS = {
    "t": "t statistic of the contrast (equal-variance OLS, as CONN/SPM).",
    "z": "z of equal one-sided p as t (computed from log p, does not saturate).",
    "p": "One-sided (upper-tail) uncorrected p value of t.",
    "effect": "Contrast of the betas (difference of mean Fisher z, covariate-adjusted).",
    "g": "Hedges' g: effect over the residual SD times 1 - 3 / (4 dof - 1).",
}
STAT_INTENTS = {"t": "t test", "z": "z score", "p": "p value", "effect": "estimate"}


def write_stat_maps(stats: dict, mask, affine, dof: float, sidecar: dict, path_of) -> None:
    """Write the :data:`STATS` maps of one contrast, each with its JSON sidecar.

    Parameters
    ----------
    stats : dict
        Statistic name -> masked values (from :func:`~.glm.contrast_maps`).
    mask, affine : numpy.ndarray
        Analysis mask and its affine.
    dof : float
        Degrees of freedom (the t map's NIfTI intent parameter).
    sidecar : dict
        Metadata shared by the maps; ``Statistic`` and ``Description`` are added per map.
    path_of : callable
        ``path_of(stat) -> Path`` of the ``.nii.gz`` file.
    """
    from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write_text

    for stat in STATS:
        path = Path(path_of(stat))
        img = to_image(stats[stat], mask, affine)
        if stat in STAT_INTENTS:
            img.header.set_intent(STAT_INTENTS[stat], (float(dof),) if stat == "t" else ())
        atomic_save_img(img, path)
        meta = dict(sidecar, Statistic=stat, Description=STAT_DESCRIPTIONS[stat])
        text = json.dumps(meta, indent=2, default=lambda o: o.tolist()) + "\n"
        atomic_write_text(path.with_name(path.name.replace(".nii.gz", ".json")), text)


#: Order of the entities in group-level file names (after ``space``/``res``).
_GROUP_ENTITIES = ("seed", "model", "contrast", "inference", "cluster", "stat", "desc")


def group_path(output_dir: Path, index: MapIndex, seed: str, suffix: str, **entities) -> Path:
    """Return the path of a group-level file of ``seed``.

    ``OUTPUT_DIR/group/seed-<seed>/space-<S>[_res-<R>]_seed-<seed>[_model-<m>][_contrast-<c>]
    [_inference-<i>][_cluster-<n>][_stat-<s>][_desc-<d>]_<suffix>``, ``suffix`` including the
    extension (e.g. ``"boldmap.nii.gz"``). Entities set to ``None`` are left out.
    """
    unknown = set(entities) - set(_GROUP_ENTITIES)
    if unknown:
        raise ValueError(f"Unknown entities {sorted(unknown)}; expected {_GROUP_ENTITIES}.")
    values = dict(entities, seed=seed)
    parts = [f"space-{index.space}"] + ([f"res-{index.resolution}"] if index.resolution else [])
    parts += [f"{key}-{values[key]}" for key in _GROUP_ENTITIES if values.get(key) is not None]
    return Path(output_dir) / "group" / f"seed-{seed}" / ("_".join(parts) + f"_{suffix}")
