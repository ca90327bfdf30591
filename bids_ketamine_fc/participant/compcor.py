"""CONN's aCompCor: white-matter and CSF components from fMRIPrep's tissue probability maps.

As CONN 20.a does by default (``conn_process.m`` lines 691-785 and 903-940, ``rex.m`` lines
709-790 and 950-976):

1. the tissue probability map is thresholded (> 0.5) and eroded once: a voxel stays when at most one
   of the 26 voxels around it is below 0.5 (and it is not on the border of the image), on the map's
   own grid;
2. every voxel left is sampled from the unsmoothed BOLD by nearest neighbour (SPM's
   ``spm_sample_vol`` with hold 0), so a BOLD voxel counts as many times as map voxels fall in it
   (maps at 1 mm on BOLD at 2 mm: about 8 times);
3. component 1 is the mask's mean signal; components 2..N are the leading principal components of
   the voxels' demeaned series after removing, from the time courses, the mean signal and every
   other first-level covariate (a linear trend, the realignment parameters, the scrubbing spikes,
   the ``Effect of rest``).

fMRIPrep's ``w_comp_cor_*``/``c_comp_cor_*`` columns span a different space (high-pass filtered
data, no mean signal, masks eroded differently); presets with ``compcor.method: fmriprep`` use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage

# CONN's defaults (conn.m: Setup.erosion): threshold 0.5, one erosion step, at most one neighbour
# below the threshold.
THRESHOLD = 0.5
MAX_NEIGHBOURS_BELOW = 1


@dataclass(frozen=True)
class TissueMask:
    """The BOLD voxels of one eroded tissue mask and how many map voxels fell in each.

    Attributes
    ----------
    label : str
        ``WM`` or ``CSF``.
    index : numpy.ndarray
        Fortran-order flat positions on the BOLD grid (sorted, unique).
    weight : numpy.ndarray
        Number of eroded map voxels sampled at each position.
    """

    label: str
    index: np.ndarray
    weight: np.ndarray


def eroded_mask(probability: np.ndarray) -> np.ndarray:
    """Return CONN's eroded tissue mask: above 0.5, at most one of 26 neighbours below 0.5."""
    probability = np.asarray(probability, dtype=float)
    below = (probability < THRESHOLD).astype(np.int16)
    count = ndimage.correlate(below, np.ones((3, 3, 3), np.int16), mode="constant", cval=0)
    interior = np.zeros(probability.shape, bool)
    interior[1:-1, 1:-1, 1:-1] = True
    return (probability > THRESHOLD) & (count <= MAX_NEIGHBOURS_BELOW) & interior


def tissue_mask(probseg: str | Path, label: str, bold_affine, bold_shape) -> TissueMask:
    """Erode a tissue probability map and sample it on the BOLD grid, as CONN does.

    Parameters
    ----------
    probseg : str or Path
        fMRIPrep's ``*_label-<label>_probseg.nii.gz`` in the space of the BOLD run (any resolution).
    label : str
        ``WM`` or ``CSF``.
    bold_affine : numpy.ndarray (4, 4)
    bold_shape : tuple of int
        The BOLD grid's first three dimensions.

    Returns
    -------
    TissueMask
        Map voxels falling outside the BOLD field of view are left out (CONN would sample 0 there).
    """
    img = nb.load(probseg)
    voxels = np.argwhere(eroded_mask(np.asarray(img.dataobj)))
    to_bold = np.linalg.inv(np.asarray(bold_affine, float)) @ np.asarray(img.affine, float)
    ijk = np.floor(nb.affines.apply_affine(to_bold, voxels) + 0.5).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(bold_shape[:3])), axis=1)
    flat = np.ravel_multi_index(tuple(ijk[inside].T), tuple(bold_shape[:3]), order="F")
    index, weight = np.unique(flat, return_counts=True)
    return TissueMask(label=label, index=index, weight=weight.astype(float))


class TissueSeries:
    """Gathers the tissue voxels' series while the BOLD file is read (an observer of the reader).

    Parameters
    ----------
    masks : list of TissueMask
    """

    def __init__(self, masks: list[TissueMask]):
        self.masks = masks
        self.blocks: dict[str, list[np.ndarray]] = {mask.label: [] for mask in masks}

    def update(self, volumes: np.ndarray) -> None:
        """Take a block of volumes, shape (n, n_grid_voxels), float32, Fortran voxel order."""
        for mask in self.masks:
            self.blocks[mask.label].append(np.take(volumes, mask.index, axis=1))

    def series(self, mask: TissueMask) -> np.ndarray:
        """Return the (T, n_voxels) series of one mask's voxels, float64 (for the components)."""
        return np.concatenate(self.blocks[mask.label], axis=0, dtype=np.float64)


def conn_components(
    series: np.ndarray,
    weight: np.ndarray,
    covariates: np.ndarray,
    n_components: int,
    overwrite: bool = False,
) -> np.ndarray:
    """Return CONN's aCompCor regressors of one mask: its mean signal and leading components.

    Parameters
    ----------
    series : numpy.ndarray, shape (T, n_voxels)
        Unsmoothed BOLD series of the mask's voxels.
    weight : numpy.ndarray, shape (n_voxels,)
        How many times each voxel was sampled (:class:`TissueMask`).
    covariates : numpy.ndarray, shape (T, n_covariates)
        The other first-level covariates (CONN: linear trend, realignment, scrubbing, Effect of
        rest), removed from the time courses before the principal components.
    n_components : int
        Regressors wanted, the mean signal included (CONN's default: 5).
    overwrite : bool
        Work in ``series`` itself (when it is float64) instead of a copy.

    Returns
    -------
    numpy.ndarray, shape (T, min(n_components, available))
        The mean signal, then components in order of decreasing variance. Scale and sign are
        arbitrary (only the space they span enters the regression).
    """
    data = np.array(series, dtype=np.float64, copy=not overwrite)  # centred, weighted in place
    weight = np.asarray(weight, dtype=np.float64)
    mean = data @ weight / weight.sum()
    data -= data.mean(axis=0)
    summed = data @ weight
    removed = np.column_stack([summed, covariates - covariates.mean(axis=0)])
    q, s, _ = np.linalg.svd(removed, full_matrices=False)
    q = q[:, s > s.max() * max(removed.shape) * np.finfo(float).eps] if s.size else q[:, :0]
    # The weighted Gram matrix of the residuals, P (C W C') P with P = I - QQ': in the T x T space,
    # where C W C' is one symmetric product (BLAS syrk); residuals of every voxel took 6x longer.
    data *= np.sqrt(weight)
    projector = np.eye(data.shape[0]) - q @ q.T
    gram = projector @ (data @ data.T) @ projector
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(values)[::-1][: max(n_components - 1, 0)]
    order = order[values[order] > values.max() * data.shape[0] * np.finfo(float).eps]
    return np.column_stack([mean, vectors[:, order]])[:, :n_components]
