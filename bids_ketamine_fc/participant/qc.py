"""Quality control of one run: the QC table's columns, and the samples the participant report draws.

The run computes what its report shows (:func:`write_report_data`, an ``.npz`` in the run's
work folder); the report (:mod:`bids_ketamine_fc.reports.participant`) only reads and draws it:

- framewise displacement, the scrubbed volumes and the dummy scans;
- a carpet plot: the series of an evenly spaced sample of brain voxels (every ``k``-th in the
  file's voxel order, :data:`CARPET_VOXELS` at most), before and after denoising (unsmoothed),
  ordered by mean intensity (white matter darkest, CSF brightest on EPI);
- DVARS before and after denoising on those voxels (root mean square of the volume-to-volume
  change, in % of the mean brain signal, so that the two are on one scale);
- the tSNR of every brain voxel (mean over standard deviation in time, before denoising);
- each seed's voxels among the brain voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_ketamine_fc.utils.io import atomic_write_tsv

#: Most voxels drawn in the carpet plot (and used for DVARS).
CARPET_VOXELS = 3000

#: The columns of ``*_desc-denoising_qc.tsv`` and their meaning (its JSON sidecar).
QC_COLUMNS = {
    "mean_fd": {
        "Description": "Mean framewise displacement (fMRIPrep's, Power et al. 2012) of the volumes "
        "after the dummy scans.",
        "Units": "mm",
    },
    "n_volumes": {"Description": "Volumes in the run."},
    "n_dummy": {
        "Description": "Initial volumes dropped (fMRIPrep's non-steady-state volumes, or "
        "--dummy-scans)."
    },
    "n_scrubbed": {"Description": "Outlier volumes scrubbed (regressed out or censored)."},
    "n_kept": {"Description": "Volumes that inform the maps: n_volumes - n_dummy - n_scrubbed."},
    "tsnr_median": {
        "Description": "Median temporal signal-to-noise ratio (mean over standard deviation in "
        "time) of the brain voxels, before denoising."
    },
    "n_confounds": {"Description": "Confound columns regressed out (listed in 'regressors')."},
    "n_regressors": {
        "Description": "Columns of the regression: the confounds, one spike regressor per "
        "scrubbed volume (when scrubbing regresses), the constant and polynomial trends."
    },
    "regressors": {"Description": "The confound columns used, space separated."},
    "compcor_source": {
        "Description": "Where the aCompCor regressors came from: 'tissue maps' (computed as CONN "
        "does from fMRIPrep's WM and CSF probability maps), 'fMRIPrep confounds' (the "
        "w_comp_cor/c_comp_cor columns) or 'none'."
    },
    "strategy": {"Description": "Name of the denoising strategy."},
    "notes": {"Description": "Notes on the denoising of this run (n/a when none)."},
    "dof": {
        "Description": "Temporal degrees of freedom left after denoising (rank of the cleaning "
        "operator)."
    },
    "included": {"Description": "Whether the run enters the subject-level maps."},
    "exclusion_reason": {"Description": "Why the run was excluded (n/a when included)."},
}


def write_qc_table(qc: dict, path: Path) -> str:
    """Write the QC row as ``path`` (TSV) with its JSON sidecar describing every column.

    Columns are written in the order of :data:`QC_COLUMNS`; a key not described there is an error
    (the sidecar must describe every column).
    """
    import json

    import pandas as pd

    unknown = sorted(set(qc) - set(QC_COLUMNS))
    if unknown:
        raise KeyError(f"QC columns without a description: {unknown}")
    columns = [c for c in QC_COLUMNS if c in qc]
    atomic_write_tsv(pd.DataFrame([qc])[columns], Path(path))
    sidecar = {c: QC_COLUMNS[c] for c in columns}
    Path(path).with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return str(path)


def carpet_positions(mean_intensity: np.ndarray, n_max: int = CARPET_VOXELS) -> np.ndarray:
    """Return evenly spaced brain-voxel positions, ordered by mean intensity (darkest first)."""
    step = max(1, int(np.ceil(mean_intensity.size / n_max)))
    positions = np.arange(0, mean_intensity.size, step)
    return positions[np.argsort(mean_intensity[positions], kind="stable")]


def dvars_percent(series: np.ndarray, scale: float) -> np.ndarray:
    """Return DVARS (RMS over voxels of the volume-to-volume change) in % of ``scale``.

    Parameters
    ----------
    series : numpy.ndarray
        ``(T, n_voxels)``.
    scale : float
        The mean brain signal before denoising.

    Returns
    -------
    numpy.ndarray
        ``(T,)``, 0 for the first volume (as fMRIPrep's ``dvars`` column is n/a there).
    """
    change = np.diff(np.asarray(series, dtype=np.float64), axis=0)
    rms = np.sqrt(np.mean(change**2, axis=1))
    return np.concatenate([[0.0], 100.0 * rms / scale]) if scale else np.zeros(len(series))


def write_report_data(path: Path, fd, outliers, n_dummy: int, tr: float, **denoised) -> str:
    """Write what the participant report draws of one run (an ``.npz``).

    Parameters
    ----------
    path : Path
        The ``.npz`` written.
    fd : numpy.ndarray
        Framewise displacement of the volumes after the dummy scans (mm).
    outliers : numpy.ndarray of bool
        The scrubbed volumes (same indexing).
    n_dummy : int
        Dummy scans dropped.
    tr : float
        Repetition time (s).
    **denoised
        For an included run: ``series`` (``(T, n_voxels)`` brain-voxel series before denoising,
        not changed), ``operator`` (the cleaning operator), ``rows`` (volume index, after the
        dummies, of each row of the denoised series), ``tsnr`` (per brain voxel), ``seeds``
        (each seed's positions among the brain voxels), ``seed_names``, ``mask`` (the 3-D brain
        mask; brain voxels in its Fortran order) and ``affine``.

    Returns
    -------
    str
        ``path``.
    """
    content = {
        "fd": np.asarray(fd, np.float32),
        "outliers": np.asarray(outliers, bool),
        "n_dummy": int(n_dummy),
        "tr": float(tr),
    }
    if denoised:
        series, operator = denoised["series"], denoised["operator"]
        positions = carpet_positions(series.mean(axis=0))
        before = series[:, positions].astype(np.float32)
        mean = before.mean(axis=0, dtype=np.float64)
        scale = float(series.mean(dtype=np.float64))
        after = operator.series((operator.coef.T @ (before - mean).astype(np.float32)).T)
        seeds, mask = denoised["seeds"], np.asarray(denoised["mask"], bool)
        content.update(
            mask_index=np.flatnonzero(mask.ravel(order="F")).astype(np.int32),
            shape=np.array(mask.shape),
            affine=np.asarray(denoised["affine"], float),
            carpet_before=before,
            carpet_after=after.astype(np.float32),
            after_rows=np.asarray(denoised["rows"], np.int32),
            dvars_before=dvars_percent(before, scale),
            dvars_after=dvars_percent(after, scale),
            tsnr=np.asarray(denoised["tsnr"], np.float32),
            seed_names=np.array(denoised["seed_names"]),
            seed_voxels=np.concatenate(seeds) if seeds else np.zeros(0, int),
            seed_counts=np.array([len(s) for s in seeds], int),
        )
    np.savez(path, **content)
    return str(path)
