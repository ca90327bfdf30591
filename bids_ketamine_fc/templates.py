"""TemplateFlow files, found on disk and never downloaded; regions placed on a data grid.

The ``templateflow`` wheel ships a skeleton of zero-byte placeholders; :func:`templateflow.api.get`
downloads any placeholder it matches. A BIDS-App must not reach the network behind the user's back,
so :func:`get_template_file` lists the candidates first, keeps those with real content, and calls
``api.get`` only on a query whose every match is already on disk. ``templateflow`` is imported
inside the functions because it reads ``TEMPLATEFLOW_HOME`` (and may populate it) at import time.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.exceptions import MissingInputError, UserInputError

LOGGER = logging.getLogger(__name__)

# TemplateFlow's file-name order of the entities a query may use (for naming a missing file).
_ENTITY_ORDER = (
    ("cohort", "cohort"),
    ("resolution", "res"),
    ("atlas", "atlas"),
    ("segmentation", "seg"),
    ("scale", "scale"),
    ("roi", "roi"),
    ("label", "label"),
    ("desc", "desc"),
    ("hemi", "hemi"),
)
_RES_PATTERN = re.compile(r"_res-0*(\d+)_")


def get_template_file(space: str, resolution: int | None, **entities) -> Path:
    """Return one TemplateFlow file present on disk, at the resolution closest to ``resolution``.

    Parameters
    ----------
    space : str
        TemplateFlow template identifier, e.g. ``"MNI152NLin2009cAsym"``.
    resolution : int or None
        Wanted ``res-`` index (for the MNI templates, the voxel size in mm). When that resolution
        is absent or only a placeholder, the nearest available one is used (the finer on a tie).
        ``None`` takes a file without ``res-`` if there is one, else the finest.
    **entities
        Further TemplateFlow entities (``atlas``, ``desc``, ``suffix``...). ``extension``
        defaults to ``".nii.gz"``. An entity set to ``None`` must be absent from the file name.

    Returns
    -------
    Path
        The file, with real content.

    Raises
    ------
    UserInputError
        When no matching file with content is in ``TEMPLATEFLOW_HOME`` (nothing is downloaded),
        or when the entities match several files at one resolution.
    """
    from templateflow import api, conf

    entities.setdefault("extension", ".nii.gz")
    by_res = _one_file_per_resolution(api.ls(space, **entities), space, entities)
    order = sorted(by_res, key=lambda res: _resolution_distance(res, resolution))
    usable = [res for res in order if _has_content(by_res[res])]
    if not usable:
        wanted = by_res[order[0]].name if order else _expected_name(space, resolution, entities)
        state = "is a zero-byte placeholder" if order else "is missing"
        raise MissingInputError(
            f"TemplateFlow file {wanted} {state} in TEMPLATEFLOW_HOME={conf.TF_HOME} and "
            f"will not be downloaded at run time: {_how_to_get(space, resolution, entities)}, or set "
            "TEMPLATEFLOW_HOME to a folder holding it."
        )
    chosen = usable[0]
    if order and chosen != order[0]:
        LOGGER.info(
            "TemplateFlow %s has no content here; using %s.", by_res[order[0]], by_res[chosen]
        )
    # Every file this query matches has content (checked above), so api.get downloads nothing.
    return Path(api.get(space, resolution=chosen, **entities))


def resample_labels_to(img, target_img) -> nb.Nifti1Image:
    """Resample a label (or binary mask) image onto the grid of ``target_img``, nearest neighbour.

    The result is that of ``nilearn.image.resample_to_img(img, target, interpolation="nearest",
    force_resample=True)`` (the same :func:`scipy.ndimage.affine_transform` call, checked in
    ``tests/test_templates.py``) without importing ``nilearn.image``, which takes seconds; a
    source already on the target grid is returned as is. Non-finite values of a float label
    image become 0 (no label).

    Parameters
    ----------
    img : str, Path or nibabel image
        3D label image.
    target_img : str, Path or nibabel image
        Image whose grid (affine and first three dimensions) is wanted.

    Returns
    -------
    nibabel.Nifti1Image
        Labels on the target grid; 0 outside the source field of view.
    """
    from scipy import ndimage

    source = nb.load(img) if isinstance(img, str | Path) else img
    target = _first_volume(target_img)
    shape = tuple(target.shape[:3])
    data = np.asanyarray(source.dataobj)
    data = data.astype(data.dtype.newbyteorder("="), copy=False)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        data = np.where(np.isfinite(data), data, 0).astype(data.dtype)
    if data.shape == shape and np.allclose(source.affine, target.affine):
        return nb.Nifti1Image(data, target.affine, source.header)
    if np.array_equal(source.affine, target.affine):
        transform = np.eye(4)
    else:
        transform = np.linalg.inv(source.affine) @ target.affine
    matrix, offset = transform[:3, :3], transform[:3, 3]
    if np.array_equal(np.diag(np.diag(matrix)), matrix):
        matrix = np.diag(matrix)  # scipy's faster path for axis-aligned grids
    out = np.zeros(shape, dtype=data.dtype)
    ndimage.affine_transform(data, matrix, offset=offset, output=out, order=0, cval=0)
    return nb.Nifti1Image(out, target.affine, source.header)


def _first_volume(img):
    """Return a 3D image (the first volume of a 4D one) for grid definition."""
    img = nb.load(img) if isinstance(img, str | Path) else img
    if len(img.shape) > 3:
        return img.slicer[..., 0]
    return img


def _one_file_per_resolution(paths: list[Path], space: str, entities: dict) -> dict:
    """Index TemplateFlow files by ``res-`` (None when absent); refuse an ambiguous query."""
    by_res: dict[int | None, list[Path]] = {}
    for path in paths:
        match = _RES_PATTERN.search(path.name)
        by_res.setdefault(int(match.group(1)) if match else None, []).append(path)
    for files in by_res.values():
        if len(files) > 1:
            names = ", ".join(sorted(p.name for p in files))
            raise UserInputError(
                f"TemplateFlow query {space} {_describe(entities)} matches several files "
                f"({names}); name the one wanted (e.g. its 'desc')."
            )
    return {res: files[0] for res, files in by_res.items()}


def _has_content(path: Path) -> bool:
    """Tell whether ``path`` is a real file, not a placeholder or a saved S3 error page."""
    if not path.is_file():
        return False
    size = path.stat().st_size
    if size == 0:
        return False
    if size < 1024:  # templateflow truncates (then downloads) saved S3 error bodies
        head = path.read_bytes()[:100]
        return not (head.startswith(b"<?xml") and b"<Error>" in head)
    return True


def _resolution_distance(res: int | None, wanted: int | None) -> tuple[float, float]:
    """Sort key: closest resolution first, the finer on a tie; an unlabelled file fits any."""
    if res is None:
        return (0.0, 0.0)
    if wanted is None:
        return (1.0, float(res))
    return (abs(res - wanted), float(res))


def _how_to_get(space: str, resolution: int | None, entities: dict) -> str:
    """Say how to download a file: the fetch command when it lists the file, else api.get."""
    from bids_ketamine_fc.templateflow_files import FETCH_COMMAND, covers

    if covers(space, entities):
        return f"run {FETCH_COMMAND} (with internet access) to download the files the app reads"
    query = {"resolution": resolution, **entities} if resolution is not None else entities
    args = ", ".join([repr(space)] + [f"{key}={value!r}" for key, value in query.items()])
    return f'download it with python -c "from templateflow import api; api.get({args})"'


def _describe(entities: dict) -> str:
    """Return ``key-value`` pairs of a query, for messages."""
    return " ".join(f"{key}={value}" for key, value in sorted(entities.items()))


def _expected_name(space: str, resolution: int | None, entities: dict) -> str:
    """Compose the TemplateFlow file name a query would match, for messages."""
    values = dict(entities, resolution=resolution)
    parts = [f"tpl-{space}"]
    for key, short in _ENTITY_ORDER:
        value = values.get(key)
        if value is not None:
            parts.append(f"{short}-{value:02d}" if key == "resolution" else f"{short}-{value}")
    suffix = entities.get("suffix") or ""
    return "_".join(parts) + (f"_{suffix}" if suffix else "") + str(entities.get("extension", ""))


def sphere_voxels(centre, radius: float, affine: np.ndarray, shape) -> tuple[np.ndarray, int]:
    """Return the voxels of a grid whose centre lies within ``radius`` mm of ``centre``.

    Parameters
    ----------
    centre : sequence of float
        World (scanner/MNI) coordinates in mm.
    radius : float
        Radius in mm; distances equal to it are inside. When no voxel centre lies within it,
        the nearest voxel is taken (the rule of nilearn's ``NiftiSpheresMasker``).
    affine : numpy.ndarray
        4x4 voxel-to-world affine of the grid (any orientation or obliquity).
    shape : sequence of int
        Grid shape (first three dimensions are used).

    Returns
    -------
    voxels : numpy.ndarray of bool
        The sphere's voxels inside the grid.
    total : int
        Number of voxels of the whole sphere on the grid's lattice, including those beyond
        the field of view, which count as outside the brain.
    """
    # Hand-written: nilearn's sphere code lists every grid voxel in Python and returns only the
    # in-mask part; here only the sphere's bounding box of the lattice is examined.
    shape = np.asarray(shape[:3])
    centre = np.asarray(centre, dtype=float)
    inverse = np.linalg.inv(affine)
    centre_ijk = nb.affines.apply_affine(inverse, centre)
    half = np.ceil(radius * np.linalg.norm(inverse[:3, :3], axis=1)).astype(int) + 1
    low, high = np.floor(centre_ijk).astype(int) - half, np.ceil(centre_ijk).astype(int) + half
    axes = [np.arange(lo, hi + 1) for lo, hi in zip(low, high, strict=True)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(nb.affines.apply_affine(affine, ijk) - centre, axis=1)
    inside = ijk[distance <= radius + 1e-6]
    if inside.size == 0:
        inside = ijk[[np.argmin(distance)]]
    in_grid = inside[np.all((inside >= 0) & (inside < shape), axis=1)]
    voxels = np.zeros(tuple(shape), dtype=bool)
    voxels[tuple(in_grid.T)] = True
    return voxels, len(inside)


def atlas_entities(space: str) -> dict[str, set]:
    """Return the ``atlas-`` values of ``space``'s label images, with their ``desc-`` values.

    Placeholders count (they say what TemplateFlow has); nothing is downloaded.

    Returns
    -------
    dict
        ``{atlas: {desc, ...}}``, ``None`` standing for files without ``desc-``.
    """
    from templateflow import api

    found: dict[str, set] = {}
    for path in api.ls(space, suffix="dseg", extension=".nii.gz"):
        entities = dict(
            part.split("-", 1) for part in Path(path).name.split("_") if part.count("-") == 1
        )
        if "atlas" in entities:
            found.setdefault(entities["atlas"], set()).add(entities.get("desc"))
    return found
