"""Outlier volumes as ART (CONN's ``art.m``) finds them: composite motion and global-signal change.

CONN's default preprocessing runs ART with its "intermediate" settings (``conn_setup_preproc.m``,
lines 277-288): a volume is an outlier when the scan-to-scan composite motion exceeds 0.9 mm or
the scan-to-scan change in global signal exceeds z = 5, and both volumes around each such change are
flagged. This module computes both measures as ``art.m`` (CONN 20.a) does:

- composite motion (``art.m`` lines 481-502): six control points at the centres of the faces of a
  box around the brain are moved by each volume's rigid-body transform (SPM's ``spm_matrix`` of
  x, y, z in mm and pitch, roll, yaw in radians, fMRIPrep's ``trans_*``/``rot_*`` in that order, as
  CONN imports them); the measure is the largest scan-to-scan displacement of the six points.
- global signal (lines 382-450, ``art_maskglobal_scan``): the mean over the voxels that exceed 1/8
  of their volume's mean in every volume of the run, over the whole field of view (not the brain
  mask); when that mask holds fewer than a tenth of the voxels, ``spm_global`` of each volume.

:class:`ArtGlobalSignal` computes the global signal while the BOLD file is read
(:func:`~bids_ketamine_fc.participant.bold.read_brain_series` hands it every volume); the
rule that turns both measures into outliers is
:func:`~bids_ketamine_fc.participant.confounds.art_outliers`.
"""

from __future__ import annotations

import numpy as np

# Control points (mm) at the centres of the faces of ART's box: +x, +y, +z and -x, -y, -z. As in
# art.m, point c of each triple is diag(scale) times column c of the transform plus the translation.
_POSITIVE = np.array([70.0, 70.0, 75.0])
_NEGATIVE = np.array([-70.0, -110.0, -45.0])


def spm_matrix(params: np.ndarray) -> np.ndarray:
    """Return SPM's rigid-body matrices ``T @ R1(pitch) @ R2(roll) @ R3(yaw)``, shape (T, 4, 4).

    Parameters
    ----------
    params : numpy.ndarray, shape (T, 6)
        x, y, z translations (mm) and pitch, roll, yaw rotations (radians).
    """
    params = np.asarray(params, dtype=float)
    n = params.shape[0]
    c, s = np.cos(params[:, 3:]), np.sin(params[:, 3:])
    one, zero = np.ones(n), np.zeros(n)
    r1 = np.stack([one, zero, zero, zero, c[:, 0], s[:, 0], zero, -s[:, 0], c[:, 0]], 1)
    r2 = np.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1)
    r3 = np.stack([c[:, 2], s[:, 2], zero, -s[:, 2], c[:, 2], zero, zero, zero, one], 1)
    rotation = r1.reshape(n, 3, 3) @ r2.reshape(n, 3, 3) @ r3.reshape(n, 3, 3)
    matrix = np.tile(np.eye(4), (n, 1, 1))
    matrix[:, :3, :3] = rotation
    matrix[:, :3, 3] = params[:, :3]
    return matrix


def composite_motion(params: np.ndarray) -> np.ndarray:
    """Return ART's scan-to-scan composite motion (mm), 0 for the first volume.

    Parameters
    ----------
    params : numpy.ndarray, shape (T, 6)
        Realignment parameters of one run: x, y, z (mm), pitch, roll, yaw (radians).

    Returns
    -------
    numpy.ndarray, shape (T,)
        The largest displacement between consecutive volumes among ART's six control points.
    """
    matrix = spm_matrix(params)
    columns = matrix[:, :3, :3]  # (T, row, column)
    translation = matrix[:, :3, 3][:, :, None]
    points = (
        np.concatenate(
            [_POSITIVE[None, :, None] * columns, _NEGATIVE[None, :, None] * columns], axis=2
        )
        + translation
    )  # (T, xyz, 6 points)
    motion = np.zeros(matrix.shape[0])
    motion[1:] = np.sqrt((np.diff(points, axis=0) ** 2).sum(axis=1)).max(axis=1)
    return motion


class ArtGlobalSignal:
    """ART's global signal of one run, computed from every voxel of every volume as it is read.

    ART's mask holds the voxels above 1/8 of their volume's mean in every volume, so it is known
    only at the end: the values of the voxels that pass in the first volumes are kept (those
    inside the brain mask come from the brain series; the others are gathered here). A volume's
    mean is summed in float32 (relative error about 1e-7, for a threshold).

    Parameters
    ----------
    brain_index : numpy.ndarray
        Fortran-order flat positions of the brain voxels (the columns of the brain series).
    """

    def __init__(self, brain_index: np.ndarray):
        self.brain_index = np.asarray(brain_index)
        self.candidates: np.ndarray | None = None  # bool over the grid: above threshold so far
        self.outside: np.ndarray | None = None  # flat positions outside the brain, first block
        self.outside_values: list[np.ndarray] = []

    def update(self, volumes: np.ndarray) -> None:
        """Take a block of volumes, shape (n, n_grid_voxels), float32, Fortran voxel order."""
        above = volumes > _thresholds(volumes)[:, None]
        block_mask = above.all(axis=0)
        if self.candidates is None:
            self.candidates = block_mask.copy()
            outside = np.ones(volumes.shape[1], bool)
            outside[self.brain_index] = False
            self.outside = np.flatnonzero(block_mask & outside)
        else:
            self.candidates &= block_mask
        self.outside_values.append(volumes[:, self.outside])

    def signal(self, brain_series: np.ndarray, brain_mean: np.ndarray) -> np.ndarray | None:
        """Return the global signal per volume, or None when ART would use ``spm_global``.

        Parameters
        ----------
        brain_series : numpy.ndarray (T, n_brain)
            The brain series read alongside (not yet demeaned).
        brain_mean : numpy.ndarray (T,)
            Its mean per volume (the reader's ``global_signal``).
        """
        mask = self.candidates
        if mask is None or mask.sum() < mask.size / 10:
            return None
        left_out = ~mask[self.brain_index]
        total = brain_mean * self.brain_index.size
        if left_out.any():
            total = total - brain_series[:, left_out].sum(axis=1, dtype=np.float64)
        outside = np.concatenate(self.outside_values, axis=0)
        total = total + outside[:, mask[self.outside]].sum(axis=1, dtype=np.float64)
        return total / mask.sum()


class SpmGlobal:
    """SPM's ``spm_global`` of every volume: the mean of the voxels above 1/8 of the volume's mean.

    ART uses it when its own mask holds fewer than a tenth of the voxels (a second reading of the
    file, rarely needed).
    """

    def __init__(self):
        self.values: list[np.ndarray] = []

    def update(self, volumes: np.ndarray) -> None:
        """Take a block of volumes, shape (n, n_grid_voxels), float32."""
        above = volumes > _thresholds(volumes)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.add.reduce(volumes, axis=1, dtype=np.float64, where=above)
            self.values.append(total / np.count_nonzero(above, axis=1))


def _thresholds(volumes: np.ndarray) -> np.ndarray:
    """Return 1/8 of each volume's mean over its finite voxels (float32)."""
    total = volumes.sum(axis=1)
    count = np.full(volumes.shape[0], volumes.shape[1])
    if not np.isfinite(total).all():  # NaN voxels do not count (art.m: mean(data(~isnan(data))))
        finite = np.isfinite(volumes)
        count = finite.sum(axis=1)
        total = np.add.reduce(volumes, axis=1, dtype=np.float64, where=finite)
    return (total / count / 8.0).astype(np.float32)
