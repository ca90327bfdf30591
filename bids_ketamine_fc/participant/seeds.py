"""Seeds: read their definitions, and place them on the voxel grid of the data.

A seed is a sphere (centre in MNI mm and radius), a TemplateFlow atlas label (``atlas``, ``desc``,
``label``) in the space of the data, or a mask file. :func:`load_seed_set` reads the study's set
(``"study"``, packaged in ``data/seeds/study.json``) or a user's JSON/YAML file;
:func:`resolve_seeds` builds each seed on the grid of a brain mask and refuses seeds that fall
mostly outside the brain (spheres follow nilearn's ``NiftiSpheresMasker`` rule, see
:func:`bids_ketamine_fc.templates.sphere_voxels`), from :func:`place_seeds` (the grid's part, shared
by the runs on one grid); :func:`seed_index` gives the position of each seed's voxels among the
brain voxels, so the caller can average its denoised time series.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import nibabel as nb
import numpy as np
import yaml

from bids_ketamine_fc.exceptions import MissingInputError, UsageError, UserInputError
from bids_ketamine_fc.templates import get_template_file, resample_labels_to, sphere_voxels

SEED_KINDS = ("sphere", "atlas", "mask")
_NAME = re.compile(r"[A-Za-z0-9]+")
_KEYS = {
    "sphere": {"center", "radius"},
    "atlas": {"atlas", "label", "desc"},
    "mask": {"mask", "label"},
}
_COMMON_KEYS = {"name", "description", "source"}
_KIND_KEYS = {"mask": "mask", "atlas": "atlas", "sphere": "center"}  # the key telling the kind


@dataclass(frozen=True)
class Seed:
    """One seed definition, independent of any data grid.

    Parameters
    ----------
    name : str
        Alphanumeric name, used in output file names (``seed-<name>``).
    kind : str
        ``"sphere"``, ``"atlas"`` or ``"mask"``.
    centre : tuple of float, optional
        Sphere centre in MNI millimetres.
    radius : float, optional
        Sphere radius in millimetres.
    atlas, desc : str, optional
        TemplateFlow ``atlas-`` and ``desc-`` entities of a ``dseg`` image.
    label : int, optional
        Label value in the atlas, or in a label mask file (a mask file without a label takes
        every nonzero voxel).
    path : Path, optional
        Mask file.
    definition : dict
        The definition as written into the seed maps' JSON sidecars.
    """

    name: str
    kind: str
    centre: tuple[float, float, float] | None = None
    radius: float | None = None
    atlas: str | None = None
    desc: str | None = None
    label: int | None = None
    path: Path | None = None
    definition: dict = field(default_factory=dict, compare=False)


@dataclass
class ResolvedSeed:
    """A seed placed on the data grid.

    Parameters
    ----------
    seed : Seed
        The definition.
    voxels : numpy.ndarray of bool
        The seed's voxels on the data grid, already restricted to the brain mask.
    n_voxels : int
        ``voxels.sum()``.
    coverage : float
        Fraction of the seed's voxels (on the grid) that lie inside the brain mask.
    definition : dict
        Sidecar description: the seed's definition plus space, voxel count and coverage.
    """

    seed: Seed
    voxels: np.ndarray
    n_voxels: int
    coverage: float
    definition: dict

    @property
    def name(self) -> str:
        """Return the seed's name."""
        return self.seed.name


def load_seed_set(spec: str) -> list[Seed]:
    """Read a set of seeds.

    Parameters
    ----------
    spec : str
        ``"study"`` for the study's nine seeds, or the path of a JSON or YAML file holding a list
        of seeds or ``{"seeds": [...]}``. Each seed is a sphere ``{name, center (or centre):
        [x, y, z] in MNI mm, radius}``, an atlas label ``{name, atlas, label, desc (optional)}``
        or a mask file ``{name, mask: path relative to the seed file, label (optional)}``.

    Returns
    -------
    list of Seed

    Raises
    ------
    UserInputError
        When the file is missing, unreadable or malformed; the message names the seed at fault.
    """
    if spec == "study":
        path = Path(str(resources.files("bids_ketamine_fc") / "data" / "seeds" / "study.json"))
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UsageError(
                f"--seeds: '{spec}' is neither 'study' nor an existing JSON or YAML seed file."
            )
    content = _read_seed_file(path)
    entries = content.get("seeds") if isinstance(content, dict) else content
    if not isinstance(entries, list) or not entries:
        raise UserInputError(
            f"Seed file {path} must hold a non-empty list of seeds, or {{'seeds': [...]}}."
        )
    seeds = [_parse_seed(entry, number, path) for number, entry in enumerate(entries, start=1)]
    names = [seed.name for seed in seeds]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise UserInputError(f"Seed file {path} names several seeds {', '.join(duplicated)}.")
    return seeds


@dataclass
class PlacedSeed:
    """A seed on a grid, before the brain mask is applied (:func:`place_seeds`)."""

    seed: Seed
    voxels: np.ndarray  # 3D bool: the seed's voxels inside the grid
    total: int  # its voxels on the grid's lattice, beyond the field of view too
    extra: dict  # sidecar additions


def place_seeds(seeds: list[Seed], grid_img, space: str) -> list[PlacedSeed]:
    """Place seeds on the grid of ``grid_img``, the costly part of :func:`resolve_seeds`.

    Atlas images are read and resampled here; runs on one grid share the result (:mod:`.seed_grid`).
    """
    grid_img, _ = _load_brain_mask(grid_img)
    resolution = max(1, round(float(np.mean(grid_img.header.get_zooms()[:3]))))
    resampled: dict[Path, np.ndarray] = {}  # label images resampled once for all their seeds
    return [
        PlacedSeed(seed, *_seed_on_grid(seed, grid_img, space, resolution, resampled))
        for seed in seeds
    ]


def resolve_seeds(
    seeds: list[Seed],
    mask_img,
    space: str,
    min_coverage: float = 0.5,
    placed: list[PlacedSeed] | None = None,
) -> list[ResolvedSeed]:
    """Place seeds on the grid of a brain mask.

    Parameters
    ----------
    seeds : list of Seed
        Seed definitions (:func:`load_seed_set`).
    mask_img : str, Path or nibabel image
        Brain mask of the data (nonzero = brain); its affine may have any orientation.
    space : str
        TemplateFlow space of the data, where atlas labels are taken. Sphere centres are read
        as millimetres in that space.
    min_coverage : float
        Smallest accepted fraction of a seed's voxels inside the brain mask.
    placed : list of PlacedSeed, optional
        ``place_seeds(seeds, mask_img, space)`` computed before (for this grid).

    Returns
    -------
    list of ResolvedSeed
        In the order of ``seeds``.

    Raises
    ------
    UserInputError
        When a seed covers too little of the brain, or its atlas file or label is unavailable.
    """
    if not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage must be within [0, 1]; {min_coverage} was given.")
    mask_img, brain = _load_brain_mask(mask_img)
    if placed is None:
        placed = place_seeds(seeds, mask_img, space)
    if [item.seed.name for item in placed] != [seed.name for seed in seeds]:
        raise ValueError("placed seeds do not match the seed definitions")
    resolved = []
    for seed, item in zip(seeds, placed, strict=True):
        voxels = item.voxels & brain
        n_voxels = int(voxels.sum())
        coverage = n_voxels / item.total if item.total else 0.0
        if n_voxels == 0 or coverage < min_coverage:
            raise UserInputError(
                f"Seed '{seed.name}' has {coverage:.0%} of its {item.total} voxels inside the brain "
                f"mask (minimum {min_coverage:.0%}); move it, give a smaller 'radius' or another "
                "region in a --seeds file."
            )
        definition = dict(seed.definition, Space=space, **item.extra)
        definition.update(NumberOfVoxels=n_voxels, Coverage=round(coverage, 4))
        resolved.append(ResolvedSeed(seed, voxels, n_voxels, coverage, definition))
    return resolved


def seed_index(resolved: list[ResolvedSeed], brain_mask: np.ndarray) -> list[np.ndarray]:
    """Return, for each seed, the positions of its voxels among the brain voxels.

    Parameters
    ----------
    resolved : list of ResolvedSeed
        Seeds on the grid of ``brain_mask``.
    brain_mask : numpy.ndarray
        3D brain mask; brain voxels are ordered as
        ``np.flatnonzero(brain_mask.ravel(order="F"))`` (nibabel's Fortran order).

    Returns
    -------
    list of numpy.ndarray of int
        Row indices into ``data.reshape(-1, T, order="F")[np.flatnonzero(mask.ravel("F"))]``.
    """
    brain_flat = np.flatnonzero(np.asarray(brain_mask).ravel(order="F"))
    positions = []
    for item in resolved:
        if item.voxels.shape != np.shape(brain_mask):
            raise ValueError(f"Seed '{item.name}' is not on the grid of the brain mask.")
        seed_flat = np.flatnonzero(item.voxels.ravel(order="F"))
        pos = np.searchsorted(brain_flat, seed_flat)
        if np.any(pos >= brain_flat.size) or np.any(brain_flat[pos % brain_flat.size] != seed_flat):
            raise ValueError(f"Seed '{item.name}' has voxels outside the brain mask.")
        positions.append(pos)
    return positions


def _read_seed_file(path: Path):
    """Parse a JSON or YAML seed file."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yml", ".yaml"):
        raise UserInputError(f"Seed file {path} must end in .json, .yml or .yaml.")
    try:
        text = path.read_text()
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        detail = " ".join(str(error).split())
        raise UserInputError(f"Seed file {path} cannot be parsed: {detail}") from None


def _parse_seed(entry, number: int, source: Path) -> Seed:
    """Validate one entry of a seed file and build its :class:`Seed`."""
    where = f"Seed #{number}"
    if not isinstance(entry, dict):
        raise UserInputError(f"{where} in {source} is a {type(entry).__name__}, not a mapping.")
    entry = dict(entry)
    if "centre" in entry:
        entry["center"] = entry.pop("centre")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserInputError(
            f"{where} in {source}: 'name' must be letters and digits only (it goes into file "
            f"names); {name!r} was given."
        )
    where = f"Seed #{number} '{name}' in {source}"
    kinds = [kind for kind, key in _KIND_KEYS.items() if key in entry]
    if len(kinds) != 1:
        raise UserInputError(
            f"{where}: give exactly one of 'center' (sphere), 'atlas' (atlas label) or 'mask' "
            f"(mask file); {kinds or 'none'} given."
        )
    kind = kinds[0]
    unknown = sorted(set(entry) - _COMMON_KEYS - _KEYS[kind])
    if unknown:
        allowed = sorted(_COMMON_KEYS | _KEYS[kind])
        raise UserInputError(f"{where}: unknown keys {unknown} for a {kind} seed; use {allowed}.")
    definition = {"Name": name, "Type": kind}
    for key in ("description", "source"):
        if key in entry:
            definition[key.capitalize()] = str(entry[key])
    builder = {"sphere": _sphere_seed, "atlas": _atlas_seed, "mask": _mask_seed}[kind]
    return builder(entry, name, where, source, definition)


def _sphere_seed(entry: dict, name: str, where: str, source: Path, definition: dict) -> Seed:
    """Build a sphere seed from a validated entry."""
    centre = entry["center"]
    if not isinstance(centre, list | tuple):
        raise UserInputError(f"{where}: 'center' must be a list [x, y, z] in MNI mm.")
    if len(centre) != 3:
        raise UserInputError(f"{where}: 'center' has {len(centre)} values instead of 3.")
    centre = tuple(_number(value, "center", where) for value in centre)
    if "radius" not in entry:
        raise UserInputError(f"{where}: a sphere needs a 'radius' in mm.")
    radius = _number(entry["radius"], "radius", where)
    if radius <= 0:
        raise UserInputError(f"{where}: 'radius' must be positive; {radius} was given.")
    definition.update(CenterMNI=list(centre), RadiusMM=radius)
    return Seed(name, "sphere", centre=centre, radius=radius, definition=definition)


def _atlas_seed(entry: dict, name: str, where: str, source: Path, definition: dict) -> Seed:
    """Build a TemplateFlow atlas-label seed from a validated entry."""
    atlas, desc = entry["atlas"], entry.get("desc")
    for key, value in (("atlas", atlas), ("desc", desc)):
        if value is not None and not (isinstance(value, str) and _NAME.fullmatch(value)):
            raise UserInputError(f"{where}: '{key}' must be a TemplateFlow entity value.")
    if "label" not in entry:
        raise UserInputError(f"{where}: an atlas seed needs the 'label' value of its region.")
    label = _integer(entry["label"], where)
    definition.update(Atlas=atlas, Label=label, Source=definition.get("Source", "TemplateFlow"))
    if desc is not None:
        definition["Desc"] = desc
    return Seed(name, "atlas", atlas=atlas, desc=desc, label=label, definition=definition)


def _mask_seed(entry: dict, name: str, where: str, source: Path, definition: dict) -> Seed:
    """Build a mask-file seed from a validated entry (path relative to the seed file)."""
    if not isinstance(entry["mask"], str):
        raise UserInputError(f"{where}: 'mask' must be the path of a NIfTI file.")
    path = (source.parent / entry["mask"]).resolve()
    if not path.is_file():
        raise MissingInputError(f"{where}: mask file {path} does not exist.")
    label = _integer(entry["label"], where) if "label" in entry else None
    definition["MaskFile"] = str(path)
    if label is not None:
        definition["Label"] = label
    return Seed(name, "mask", label=label, path=path, definition=definition)


def _number(value, key: str, where: str) -> float:
    """Return ``value`` as a finite float or raise a message naming the key."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserInputError(f"{where}: '{key}' must hold finite numbers; {value!r} was given.")
    return float(value)


def _integer(value, where: str) -> int:
    """Return a label value as an int (integral floats accepted)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and value == int(value)):
        raise UserInputError(f"{where}: 'label' must be an integer; {value!r} was given.")
    return int(value)


def _load_brain_mask(mask_img) -> tuple[nb.Nifti1Image, np.ndarray]:
    """Load a 3D brain mask and return it with its boolean array (nonzero, finite voxels)."""
    img = nb.funcs.squeeze_image(
        nb.load(mask_img) if isinstance(mask_img, str | Path) else mask_img
    )
    if img.ndim != 3:
        raise UserInputError(f"Brain mask {img.get_filename() or 'image'} is not 3D.")
    data = np.asanyarray(img.dataobj)
    return img, np.isfinite(data) & (data != 0)


def _seed_on_grid(seed: Seed, grid_img, space: str, resolution: int, cache: dict):
    """Return a seed's voxels on the grid, its total voxel count, and sidecar additions."""
    if seed.kind == "sphere":
        voxels, total = sphere_voxels(seed.centre, seed.radius, grid_img.affine, grid_img.shape)
        return voxels, total, {}
    if seed.kind == "atlas":
        entities = {"atlas": seed.atlas, "suffix": "dseg"}
        if seed.desc is not None:
            entities["desc"] = seed.desc
        path = get_template_file(space, resolution, **entities)
        extra = {"TemplateFlowFile": path.name}
    else:
        path, extra = seed.path, {}
    if path not in cache:
        try:
            cache[path] = np.asanyarray(resample_labels_to(path, grid_img).dataobj)
        except (nb.filebasedimages.ImageFileError, OSError, EOFError) as error:
            raise UserInputError(f"Seed '{seed.name}': cannot read {path}: {error}") from None
    labels = cache[path]
    voxels = labels == seed.label if seed.label is not None else (labels != 0) & np.isfinite(labels)
    if not voxels.any():
        present = seed.label is None or np.any(np.asanyarray(nb.load(path).dataobj) == seed.label)
        what = f"label {seed.label} of {path.name}" if seed.label is not None else path.name
        reason = "lies outside the data's field of view" if present else "does not exist"
        raise UserInputError(f"Seed '{seed.name}': {what} {reason}; fix the --seeds file.")
    return voxels, int(voxels.sum()), extra
