"""The demo's anatomy: the MNI152 template and tissue maps that nilearn ships, sampled anywhere.

nilearn's wheel holds the ICBM 2009a nonlinear symmetric MNI152 template at 1 mm with its grey-
and white-matter probability maps (``nilearn.datasets.load_mni152_*``, offline). From them:

- tissue probabilities of grey matter, white matter and CSF (CSF: the template's brain mask minus
  grey and white matter), sharpened towards 0 and 1 (``p**4``, renormalised) so that they look
  like one person's segmentation (fMRIPrep's ``label-*_probseg``) rather than a population average;
- the head: the brain and a :data:`SCALP_MM` shell around it (the BOLD data are not skull
  stripped, as fMRIPrep's ``desc-preproc_bold`` is not), :func:`in_head`;
- the T1-weighted intensities of the template (for the generated TemplateFlow ``T1w``).

Values are read at any world position (:func:`sample`): averaged over the box of the target
voxel (partial volumes), then interpolated (trilinear), so the same anatomy lands on the BOLD
grid of the demo and on the TemplateFlow grids of both MNI spaces.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

#: Thickness (mm) of the scalp shell around the brain.
SCALP_MM = 10.0
#: Exponent that sharpens the population tissue probabilities into one person's segmentation.
SHARPEN = 4.0


@lru_cache(maxsize=1)
def template() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return the 1 mm maps (``GM``, ``WM``, ``CSF``, ``brain``, ``T1w``) and world-to-voxel matrix.

    Cached: built once per process.
    """
    import nibabel as nb
    from nilearn import datasets

    def load(loader):
        return nb.as_closest_canonical(loader(resolution=1))

    t1 = load(datasets.load_mni152_template)
    gm = np.asarray(load(datasets.load_mni152_gm_template).dataobj, np.float32)
    wm = np.asarray(load(datasets.load_mni152_wm_template).dataobj, np.float32)
    brain = np.asarray(load(datasets.load_mni152_brain_mask).dataobj, np.float32)
    gm, wm = gm / max(gm.max(), 1e-6), wm / max(wm.max(), 1e-6)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    tissues = np.stack([gm, wm, csf]) ** SHARPEN
    tissues *= brain / np.maximum(tissues.sum(axis=0), 1e-6)
    maps = {
        "GM": tissues[0],
        "WM": tissues[1],
        "CSF": tissues[2],
        "brain": tissues.sum(axis=0),
        "T1w": np.asarray(t1.dataobj, np.float32),
    }
    return maps, np.linalg.inv(t1.affine)


@lru_cache(maxsize=16)
def _averaged(name: str, size: int) -> np.ndarray:
    """Map ``name`` averaged over boxes of ``size`` mm: partial volumes of a ``size`` mm voxel."""
    maps, _ = template()
    return ndimage.uniform_filter(maps[name], size) if size > 1 else maps[name]


@lru_cache(maxsize=1)
def _head() -> tuple[np.ndarray, np.ndarray]:
    """Return the head (brain and a :data:`SCALP_MM` shell) on a 2 mm grid, and its world-to-voxel."""
    maps, to_voxel = template()
    outside = maps["brain"][::2, ::2, ::2] < 0.5
    head = ndimage.distance_transform_edt(outside, sampling=2.0) <= SCALP_MM
    return head.astype(np.float32), np.diag([0.5, 0.5, 0.5, 1.0]) @ to_voxel


def _sample(volume: np.ndarray, to_voxel: np.ndarray, xyz: np.ndarray, order: int) -> np.ndarray:
    ijk = to_voxel[:3, :3] @ np.asarray(xyz, float).T + to_voxel[:3, 3:]
    return ndimage.map_coordinates(volume, ijk, order=order, mode="constant").astype(np.float32)


def sample(name: str, xyz: np.ndarray, voxel_mm: float = 1.0) -> np.ndarray:
    """Return map ``name`` of :func:`template` at world positions ``xyz`` (N, 3), 0 outside.

    Parameters
    ----------
    name : str
        ``GM``, ``WM``, ``CSF`` (probabilities), ``brain`` (their sum) or ``T1w``.
    xyz : numpy.ndarray
        World coordinates (N, 3), mm.
    voxel_mm : float
        Size of the voxels the points stand for: values are averaged over such a box first
        (partial volumes), then interpolated (trilinear).

    Returns
    -------
    numpy.ndarray
        float32 (N,).
    """
    _, to_voxel = template()
    return _sample(_averaged(name, max(1, int(round(voxel_mm)))), to_voxel, xyz, order=1)


def in_head(xyz: np.ndarray) -> np.ndarray:
    """Return True for world positions inside the head (brain plus the scalp shell)."""
    head, to_voxel = _head()
    return _sample(head, to_voxel, xyz, order=0) > 0.5
