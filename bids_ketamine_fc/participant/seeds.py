"""Seeds: read their definitions, and place them on the voxel grid of the data.

A seed is a sphere (centre in MNI mm and radius), a TemplateFlow atlas label (``atlas``, ``desc``,
``label``) in the space of the data, or a mask file. :func:`load_seed_set` (from :mod:`.seed_file`)
reads the study's set (``"study"``, packaged in ``data/seeds/study.json``) or a user's JSON/YAML
file; :func:`resolve_seeds` builds each seed on the grid of a brain mask and refuses seeds that fall
mostly outside the brain (spheres follow nilearn's ``NiftiSpheresMasker`` rule, see
:func:`bids_ketamine_fc.templates.sphere_voxels`), from :func:`place_seeds` (the grid's part, shared
by the runs on one grid); :func:`seed_index` gives the position of each seed's voxels among the
brain voxels, so the caller can average its denoised time series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant.seed_file import Seed, did_you_mean, load_seed_set
from bids_ketamine_fc.templates import (
    atlas_entities,
    get_template_file,
    resample_labels_to,
    sphere_voxels,
)

__all__ = [
    "PlacedSeed",
    "ResolvedSeed",
    "Seed",
    "load_seed_set",
    "place_seeds",
    "read_brain_mask",
    "resolve_seeds",
    "seed_index",
]


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
    placed, problems = [], []
    for seed in seeds:
        try:
            placed.append(
                PlacedSeed(seed, *_seed_on_grid(seed, grid_img, space, resolution, resampled))
            )
        except UserInputError as err:  # every seed's problem, in one message
            problems.append(str(err))
    if problems:
        raise UserInputError(" ".join(problems))
    return placed


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
    resolved, outside = [], []
    for seed, item in zip(seeds, placed, strict=True):
        voxels = item.voxels & brain
        n_voxels = int(voxels.sum())
        coverage = n_voxels / item.total if item.total else 0.0
        if n_voxels == 0 or coverage < min_coverage:
            outside.append(f"'{seed.name}' has {coverage:.0%} of its {item.total} voxels")
            continue
        definition = dict(seed.definition, Space=space, **item.extra)
        definition.update(NumberOfVoxels=n_voxels, Coverage=round(coverage, 4))
        resolved.append(ResolvedSeed(seed, voxels, n_voxels, coverage, definition))
    if outside:
        where = mask_img.get_filename() or "the brain mask"
        raise UserInputError(
            f"Seed{'s' if len(outside) > 1 else ''} {', '.join(outside)} inside the brain mask "
            f"{where} (minimum {min_coverage:.0%}): move {'them' if len(outside) > 1 else 'it'}, "
            "give a smaller 'radius' or another region in a --seeds file."
        )
    return resolved


def read_brain_mask(path: Path) -> nb.Nifti1Image:
    """Load a brain mask with its data, or raise an error naming the file."""
    from bids_ketamine_fc.utils.io import load_nifti, read_failure

    fix = "re-run fMRIPrep for this run or restore the file"
    img = load_nifti(path, "brain mask", fix)
    try:
        img.get_fdata(dtype=np.float32)  # read now: a truncated file fails here, not later
    except MemoryError:
        raise
    except Exception as err:
        raise read_failure(path, "brain mask", err, fix) from err
    return img


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
        if ("atlases", space) not in cache:  # TemplateFlow's listings: once per space
            cache["atlases", space] = atlas_entities(space)
        _check_atlas_name(seed, space, cache["atlases", space])
        entities = {"atlas": seed.atlas, "suffix": "dseg"}
        if seed.desc is not None:
            entities["desc"] = seed.desc
        key = ("file", space, resolution, *sorted(entities.items()))
        if key not in cache:
            cache[key] = get_template_file(space, resolution, **entities)
        path = cache[key]
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


def _check_atlas_name(seed: Seed, space: str, atlases: dict[str, set]) -> None:
    """Refuse an atlas (or desc) that TemplateFlow does not have for ``space``, naming those it has."""
    if seed.atlas not in atlases:
        known = ", ".join(sorted(atlases)) or "none"
        raise UserInputError(
            f"Seed '{seed.name}': TemplateFlow has no atlas '{seed.atlas}' for {space}"
            f"{did_you_mean(seed.atlas, atlases)} (atlases: {known}); fix the --seeds file."
        )
    descs = atlases[seed.atlas]
    if seed.desc is not None and seed.desc not in descs:
        known = ", ".join(sorted(d for d in descs if d)) or "none"
        raise UserInputError(
            f"Seed '{seed.name}': atlas '{seed.atlas}' of {space} has no desc '{seed.desc}'"
            f"{did_you_mean(seed.desc, descs - {None})} (descs: {known}); fix the --seeds file."
        )
