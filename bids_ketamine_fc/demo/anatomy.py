"""The demo's brain in MNI world coordinates: grids, tissues, nuclei, networks and atlas labels.

Tissues come from the MNI152 template and tissue maps that nilearn ships (:mod:`.mni`), read in
millimetres (RAS world coordinates), so the same anatomy can be sampled on any grid: the fMRIPrep
output grid of the BOLD series, or the 2 mm TemplateFlow grids of ``MNI152NLin2009cAsym`` (RAS)
and ``MNI152NLin6Asym``. The deep grey nuclei of the generated Harvard-Oxford atlas are ellipsoids
at their approximate MNI positions, and the cortical labels and network parcels are drawn around
approximate centres: a generated atlas on a real template, not the real atlas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_ketamine_fc.demo import mni

#: Centre of the head (mm): the lever arm of rotations and the centre of smooth noise fields.
BRAIN_CENTRE = np.array([0.0, -18.0, 10.0])

#: Harvard-Oxford subcortical labels as TemplateFlow's ``atlas-HOSPA`` tables name them
#: (index, name), spelling kept as in TemplateFlow's file.
HOSPA_NAMES = {
    1: "Left Cerebral White Matter",
    2: "Left Cerebral Cortex ",
    3: "Left Lateral Ventrical",
    4: "Left Thalamus",
    5: "Left Caudate",
    6: "Left Putamen",
    7: "Left Pallidum",
    8: "Brainstem",
    9: "Left Hippocampus",
    10: "Left Amygdala",
    11: "Left Accumbens",
    12: "Right Cerebral White Matter",
    13: "Right Cerebral Cortex ",
    14: "Right Lateral Ventricle",
    15: "Right Thalamus",
    16: "Right Caudate",
    17: "Right Putamen",
    18: "Right Pallidum",
    19: "Right Hippocampus",
    20: "Right Amygdala",
    21: "Right Accumbens",
}
#: Left-hemisphere HOSPA index of each deep structure: centre (right hemisphere, mm), semi-axes.
NUCLEI = {
    4: ((11.0, -18.0, 7.0), (7.0, 12.0, 8.0)),  # thalamus
    5: ((13.0, 12.0, 10.0), (5.0, 8.0, 9.0)),  # caudate
    6: ((25.0, 4.0, 2.0), (5.0, 12.0, 8.0)),  # putamen
    7: ((19.0, -3.0, 0.0), (4.0, 6.0, 4.0)),  # pallidum
    9: ((28.0, -22.0, -12.0), (5.0, 14.0, 6.0)),  # hippocampus
    10: ((23.0, -5.0, -18.0), (6.0, 7.0, 6.0)),  # amygdala
    11: ((10.0, 12.0, -8.0), (5.0, 6.0, 5.0)),  # accumbens
}
#: CSF inside this ellipsoid (right hemisphere, mirrored) is lateral ventricle; elsewhere, sulci.
VENTRICLE = ((16.0, -10.0, 14.0), (13.0, 34.0, 16.0))
BRAINSTEM = ((0.0, -28.0, -32.0), (11.0, 12.0, 24.0))

#: Harvard-Oxford cortical names (TemplateFlow ``atlas-HOCPA`` table, index = line).
HOCPA_NAMES = [
    "Frontal Pole", "Insular Cortex", "Superior Frontal Gyrus", "Middle Frontal Gyrus",
    "Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis",
    "Precentral Gyrus", "Temporal Pole", "Superior Temporal Gyrus, anterior division",
    "Superior Temporal Gyrus, posterior division", "Middle Temporal Gyrus, anterior division",
    "Middle Temporal Gyrus, posterior division", "Middle Temporal Gyrus, temporooccipital part",
    "Inferior Temporal Gyrus, anterior division", "Inferior Temporal Gyrus, posterior division",
    "Inferior Temporal Gyrus, temporooccipital part", "Postcentral Gyrus",
    "Superior Parietal Lobule", "Supramarginal Gyrus, anterior division",
    "Supramarginal Gyrus, posterior division", "Angular Gyrus",
    "Lateral Occipital Cortex, superior division", "Lateral Occipital Cortex, inferior division",
    "Intracalcarine Cortex", "Frontal Medial Cortex",
    "Juxtapositional Lobule Cortex (formerly Supplementary Motor Cortex)", "Subcallosal Cortex",
    "Paracingulate Gyrus", "Cingulate Gyrus, anterior division",
    "Cingulate Gyrus, posterior division", "Precuneous Cortex", "Cuneal Cortex",
    "Frontal Orbital Cortex", "Parahippocampal Gyrus, anterior division",
    "Parahippocampal Gyrus, posterior division", "Lingual Gyrus",
    "Temporal Fusiform Cortex, anterior division", "Temporal Fusiform Cortex, posterior division",
    "Temporal Occipital Fusiform Cortex", "Occipital Fusiform Gyrus", "Frontal Operculum Cortex",
    "Central Opercular Cortex", "Parietal Operculum Cortex", "Planum Polare",
    "Heschl's Gyrus (includes H1 and H2)", "Planum Temporale", "Supracalcarine Cortex",
    "Occipital Pole",
]  # fmt: skip
#: Approximate centroid (right hemisphere, mm) of the cortical labels drawn; cortex voxels take
#: the label of the nearest centroid (mirrored for the left hemisphere).
HOCPA_CENTRES = {
    1: (22, 60, 4), 2: (38, 6, 2), 3: (18, 22, 56), 4: (40, 20, 42), 5: (50, 30, 10),
    6: (52, 16, 18), 7: (36, -12, 54), 8: (38, 12, -32), 9: (58, -4, -8), 10: (60, -28, 4),
    12: (60, -30, -10), 17: (38, -30, 56), 18: (28, -52, 60), 19: (56, -32, 38), 21: (48, -58, 32),
    22: (30, -74, 40), 23: (44, -76, 0), 24: (8, -80, 8), 25: (4, 44, -16), 26: (6, -2, 62),
    28: (6, 42, 20), 29: (5, 18, 30), 30: (5, -36, 34), 31: (7, -62, 44), 32: (6, -80, 28),
    33: (28, 28, -14), 35: (24, -32, -14), 36: (10, -72, -6), 39: (32, -56, -14), 48: (14, -96, 4),
}  # fmt: skip


@dataclass(frozen=True)
class Region:
    """A cortical or subcortical node of a resting-state network.

    Attributes
    ----------
    network : str
        Yeo-7 network name as in Schaefer's tables (``Default``, ``SalVentAttn`` ...), or
        ``Subcortical``.
    name : str
        Sub-region token used in Schaefer parcel names (may be empty) and as node identifier.
    centres : tuple
        World coordinates (mm) of the node's blobs; all blobs share one time series.
    """

    network: str
    name: str
    centres: tuple[tuple[float, float, float], ...]


def _bilateral(x: float, y: float, z: float) -> tuple[tuple[float, float, float], ...]:
    return ((-x, y, z), (x, y, z))


#: Network nodes. DMN and salience centres are CONN's network ROI centres (SPEC section 1).
REGIONS = (
    Region("Vis", "Occ", _bilateral(10, -90, 2) + _bilateral(26, -82, -10)),
    Region("Vis", "Cun", _bilateral(14, -76, 24)),
    Region("SomMot", "Cent", _bilateral(38, -24, 58)),
    Region("SomMot", "Aud", _bilateral(54, -16, 16)),
    Region("DorsAttn", "Post", _bilateral(26, -60, 56) + _bilateral(50, -64, -4)),
    Region("DorsAttn", "FEF", _bilateral(26, -4, 56)),
    Region("SalVentAttn", "FrOperIns", ((-44, 13, 1), (47, 14, 0))),
    Region("SalVentAttn", "Med", ((0, 22, 35),)),
    Region("SalVentAttn", "ParOper", _bilateral(56, -36, 30)),
    Region("Limbic", "OFC", _bilateral(22, 36, -18)),
    Region("Limbic", "TempPole", _bilateral(36, 12, -32)),
    Region("Cont", "PFCl", _bilateral(44, 36, 20)),
    Region("Cont", "Par", _bilateral(48, -50, 46)),
    Region("Default", "PFC", ((1, 55, -3),)),
    Region("Default", "PCC", ((1, -61, 38),) + _bilateral(6, -66, 44)),
    Region("Default", "Par", _bilateral(46, -66, 30)),
    Region("Default", "Temp", _bilateral(58, -20, -14)),
    Region("Subcortical", "NAcc", _bilateral(10, 12, -8)),
    Region("Subcortical", "Amygdala", _bilateral(23, -5, -18)),
    Region("Subcortical", "Thalamus", _bilateral(11, -18, 7)),
)
NETWORK_ORDER = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and voxel-to-world affine (any orientation).

    Attributes
    ----------
    shape : tuple of int
        Number of voxels along each array axis.
    affine : numpy.ndarray
        4 x 4 voxel-to-world (mm) matrix.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def world(self, offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """Return the world coordinates (N, 3) of every voxel (C order), shifted by ``offset``.

        Parameters
        ----------
        offset : tuple of float
            Shift in voxel units (used to sample sub-voxel positions).

        Returns
        -------
        numpy.ndarray
            Array of shape ``(prod(shape), 3)``.
        """
        ijk = np.indices(self.shape, dtype=np.float64).reshape(3, -1)
        ijk += np.asarray(offset, dtype=np.float64)[:, None]
        return np.ascontiguousarray((self.affine[:3, :3] @ ijk + self.affine[:3, 3:]).T)


def bold_grid(space: str, voxel_size: float) -> Grid:
    """Return the fMRIPrep output grid of ``space`` at ``voxel_size`` mm.

    The 2 mm fMRIPrep grids are kept (same origin and field of view) and resampled to the requested
    voxel size: ``MNI152NLin2009cAsym`` is RAS with origin (-96, -132, -78) and 97 x 115 x 97 voxels
    at 2 mm (49 x 58 x 49 at 4 mm); ``MNI152NLin6Asym`` uses FSL's LAS grid, origin (90, -126, -72),
    91 x 109 x 91 voxels at 2 mm.

    Parameters
    ----------
    space : str
        ``MNI152NLin2009cAsym`` or ``MNI152NLin6Asym``.
    voxel_size : float
        Isotropic voxel size in mm.

    Returns
    -------
    Grid
    """
    if space == "MNI152NLin2009cAsym":
        shape2, origin, flip = (97, 115, 97), (-96.0, -132.0, -78.0), 1.0
    elif space == "MNI152NLin6Asym":
        shape2, origin, flip = (91, 109, 91), (90.0, -126.0, -72.0), -1.0
    else:
        raise ValueError(f"unknown space {space!r}")
    shape = tuple(int(np.floor((n - 1) * 2.0 / voxel_size + 1e-6)) + 1 for n in shape2)
    affine = np.diag([flip * voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = origin
    return Grid(shape, affine)


def templateflow_grid(space: str) -> Grid:
    """Return the TemplateFlow ``res-02`` grid of ``space`` (as in its ``template_description``).

    Parameters
    ----------
    space : str
        ``MNI152NLin2009cAsym`` (origin -96.5, -132.5, -78.5) or ``MNI152NLin6Asym``
        (origin -90, -126, -72); both RAS, 2 mm.

    Returns
    -------
    Grid
    """
    origins = {
        "MNI152NLin2009cAsym": ((97, 115, 97), (-96.5, -132.5, -78.5)),
        "MNI152NLin6Asym": ((91, 109, 91), (-90.0, -126.0, -72.0)),
    }
    shape, origin = origins[space]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = origin
    return Grid(shape, affine)


def _inside(xyz: np.ndarray, centre, axes) -> np.ndarray:
    return (((xyz - np.asarray(centre)) / np.asarray(axes)) ** 2).sum(axis=1) <= 1.0


def brain_fraction(xyz: np.ndarray) -> np.ndarray:
    """Return the fraction of brain tissue (grey and white matter, CSF) at each point."""
    return mni.sample("brain", xyz)


def head_mask(xyz: np.ndarray) -> np.ndarray:
    """Return True for points inside the head (brain plus a scalp shell)."""
    return mni.in_head(xyz)


def hospa_labels(xyz: np.ndarray) -> np.ndarray:
    """Label points with the Harvard-Oxford subcortical indices of :data:`HOSPA_NAMES`.

    Each brain point (brain fraction >= 0.5) takes its most probable tissue: white matter (1/12),
    CSF inside :data:`VENTRICLE` (lateral ventricles, 3/14), other grey matter and CSF (cerebral
    cortex, 2/13); then the brainstem (8) and the deep grey nuclei of :data:`NUCLEI` (10/20
    amygdala, 11/21 accumbens ...) are drawn over it.

    Parameters
    ----------
    xyz : numpy.ndarray
        World coordinates (N, 3) in mm.

    Returns
    -------
    numpy.ndarray
        uint8 labels, 0 outside the brain.
    """
    labels = np.zeros(len(xyz), dtype=np.uint8)
    tissues = np.stack([mni.sample(name, xyz) for name in ("GM", "WM", "CSF")])
    inside = np.flatnonzero(tissues.sum(axis=0) >= 0.5)
    xyz, tissue = xyz[inside], np.argmax(tissues[:, inside], axis=0)
    mirrored = np.column_stack([np.abs(xyz[:, 0]), xyz[:, 1], xyz[:, 2]])
    sub = np.where(tissue == 1, 1, 2).astype(np.uint8)
    sub[(tissue == 2) & _inside(mirrored, *VENTRICLE)] = 3
    sub[_inside(xyz, *BRAINSTEM)] = 8
    for index, (centre, axes) in NUCLEI.items():
        sub[_inside(mirrored, centre, axes)] = index
    # right hemisphere: 1-7 -> 12-18 and 9-11 -> 19-21 (the brainstem, 8, is unpaired)
    right = (xyz[:, 0] >= 0) & (sub != 8)
    sub[right] = np.where(sub[right] <= 7, sub[right] + 11, sub[right] + 10)
    labels[inside] = sub
    return labels


def voxel_mm(grid: Grid) -> float:
    """Return the mean voxel edge of ``grid`` (mm)."""
    return float(np.mean(np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0))))


def tissue_fractions(grid: Grid) -> dict[str, np.ndarray]:
    """Return the partial-volume fraction of grey matter, white matter and CSF in each voxel.

    Parameters
    ----------
    grid : Grid
        Where to sample.

    Returns
    -------
    dict
        ``{"GM", "WM", "CSF"}`` to float32 arrays of ``grid.shape`` (values in [0, 1]).
    """
    xyz, size = grid.world(), voxel_mm(grid)
    return {name: mni.sample(name, xyz, size).reshape(grid.shape) for name in ("GM", "WM", "CSF")}


def t1w_intensity(grid: Grid) -> np.ndarray:
    """Return the template's T1-weighted intensity averaged over each voxel of ``grid``."""
    return mni.sample("T1w", grid.world(), voxel_mm(grid)).reshape(grid.shape)
