"""The confounds table of a generated run, computed from its data as fMRIPrep (>= 21) does.

Columns and JSON metadata follow fMRIPrep's ``init_bold_confs_wf``: tissue means, their expansions
(``_derivative1``, ``_power2``, ``_derivative1_power2``), DVARS, Power's framewise displacement,
aCompCor per mask (``c_comp_cor_XX`` CSF, ``w_comp_cor_XX`` WM, ``a_comp_cor_XX`` combined), the
DCT high-pass basis (``cosineXX``), non-steady-state indicators, realignment parameters with
expansions, and ``motion_outlierXX`` spikes (FD > 0.5 mm or standardised DVARS > 1.5). Column
names without an underscore before the digits (``cosine00``, ``non_steady_state_outlier00``,
``motion_outlier00``) are how fMRIPrep 21+ writes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_ketamine_fc.demo.signals import framewise_displacement

MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
HIGH_PASS_S = 128.0  # fMRIPrep's CompCor DCT high-pass cut-off (period, s)
VARIANCE_KEPT = 0.5  # fMRIPrep keeps the components explaining 50 % of the variance ...
MIN_COMPONENTS = 5  # ... and the demo keeps at least 5 per mask (CONN uses 5 WM + 5 CSF)
FD_SPIKE, DVARS_SPIKE = 0.5, 1.5  # fMRIPrep's --fd-spike-threshold and --dvars-spike-threshold
MOTION_METADATA = {
    "trans_x": {"Description": "Translation along left-right axis.", "Units": "mm"},
    "trans_y": {"Description": "Translation along anterior-posterior axis.", "Units": "mm"},
    "trans_z": {"Description": "Translation along superior-inferior axis.", "Units": "mm"},
    "rot_x": {
        "Description": 'Rotation about left-right axis. Also known as "pitch".',
        "Units": "rad",
    },
    "rot_y": {
        "Description": 'Rotation about anterior-posterior axis. Also known as "roll".',
        "Units": "rad",
    },
    "rot_z": {
        "Description": 'Rotation about superior-inferior axis. Also known as "yaw".',
        "Units": "rad",
    },
    "framewise_displacement": {"Units": "mm"},
}


def expand(name: str, series: np.ndarray) -> dict[str, np.ndarray]:
    """Return a series with its backward difference and squares, as fMRIPrep's model expansion.

    Parameters
    ----------
    name : str
        Column name.
    series : numpy.ndarray
        The time series.

    Returns
    -------
    dict
        ``name``, ``name_derivative1`` (NaN first), ``name_power2``, ``name_derivative1_power2``.
    """
    derivative = np.concatenate([[np.nan], np.diff(series)])
    return {
        name: series,
        f"{name}_derivative1": derivative,
        f"{name}_power2": series**2,
        f"{name}_derivative1_power2": derivative**2,
    }


def dvars(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return DVARS and standardised DVARS (Nichols 2013) as nipype's ``ComputeDVARS``.

    The data are scaled to a median of 1000; the expected SD of the temporal difference comes from
    each voxel's robust SD (IQR / 1.349) and lag-1 autocorrelation (Yule-Walker). Written here,
    vectorised, because nipype's version loops over voxels in Python and needs nitime.

    Parameters
    ----------
    brain : numpy.ndarray
        (n_voxels, n_volumes) in-mask data.

    Returns
    -------
    dvars, std_dvars : numpy.ndarray
        NaN for the first volume.
    """
    data = brain.astype(np.float64) * (1000.0 / np.median(brain))
    q75, q25 = np.percentile(data, [75, 25], axis=1, method="lower")
    robust_sd = (q75 - q25) / 1.349
    centred = data - data.mean(axis=1, keepdims=True)
    energy = (centred**2).sum(axis=1)
    ar1 = (centred[:, 1:] * centred[:, :-1]).sum(axis=1) / np.where(energy > 0, energy, 1.0)
    expected = np.sqrt(2.0 * (1.0 - ar1)) * robust_sd
    raw = np.sqrt(np.mean(np.diff(data, axis=1) ** 2, axis=0))
    return np.concatenate([[np.nan], raw]), np.concatenate([[np.nan], raw / expected.mean()])


def acompcor(
    data: np.ndarray, masks: dict[str, np.ndarray], tr: float, n_dummy: int
) -> tuple[dict[str, np.ndarray], dict[str, dict], np.ndarray]:
    """Run fMRIPrep's aCompCor (nipype's ``compute_noise_components``) on in-memory data.

    The non-steady-state volumes are left out and padded with zeros afterwards, the data are
    high-pass filtered with a DCT basis (128 s), variance-normalised per voxel, and decomposed by
    SVD within each mask (``CSF``, ``WM``, ``combined``).

    Parameters
    ----------
    data : numpy.ndarray
        (n_voxels, n_volumes) head data.
    masks : dict
        ``{"CSF", "WM", "combined"}`` to boolean vectors over the voxels of ``data``.
    tr : float
        Repetition time (s).
    n_dummy : int
        Non-steady-state volumes.

    Returns
    -------
    columns : dict
        Retained components (``c_comp_cor_XX``, ``w_comp_cor_XX``, ``a_comp_cor_XX``) and
        the DCT basis (``cosineXX``).
    metadata : dict
        fMRIPrep's JSON entries of the retained components.
    singular : numpy.ndarray
        All singular values (for checks).
    """
    import nibabel as nb
    from nipype.algorithms.confounds import compute_noise_components

    names = ("CSF", "WM", "combined")
    prefixes = {"CSF": "c_comp_cor", "WM": "w_comp_cor", "combined": "a_comp_cor"}
    # nipype indexes series[mask, :], so the voxels of the masks laid out on any 3-D box with
    # matching masks are equivalent to the 4-D image (a box keeps NIfTI's 32767-voxel axis limit)
    union = np.flatnonzero(np.any([masks[k] for k in names], axis=0))
    box = (1, -(-len(union) // 8192), 8192)
    series = np.zeros((box[1] * box[2], data.shape[1] - n_dummy), dtype=np.float32)
    series[: len(union)] = data[union, n_dummy:]
    images = []
    for name in names:
        flat = np.zeros(box[1] * box[2], dtype=np.uint8)
        flat[: len(union)] = masks[name][union]
        images.append(nb.Nifti1Image(flat.reshape(box), np.eye(4)))
    series = series.reshape(*box, -1)
    comps, basis, meta = compute_noise_components(
        series, images, "all", "cosine", 0, HIGH_PASS_S, tr, "error", list(names)
    )
    columns, metadata, start = {}, {}, 0
    mask_of = np.asarray(meta["mask"])
    for name in names:
        rows = np.flatnonzero(mask_of == name)
        cumulative = meta["cumulative_variance_explained"][rows]
        keep = max(int(np.searchsorted(cumulative, VARIANCE_KEPT)) + 1, MIN_COMPONENTS)
        keep = min(keep, len(rows))
        for k in range(keep):
            label = f"{prefixes[name]}_{k:02d}"
            columns[label] = np.concatenate([np.zeros(n_dummy), comps[:, start + k]])
            metadata[label] = {
                "CumulativeVarianceExplained": float(cumulative[k]),
                "Mask": name,
                "Method": "aCompCor",
                "Retained": True,
                "SingularValue": float(meta["singular_value"][rows[k]]),
                "VarianceExplained": float(meta["variance_explained"][rows[k]]),
            }
        start += len(rows)
    for k in range(basis.shape[1] if basis.size else 0):
        columns[f"cosine{k:02d}"] = np.concatenate([np.zeros(n_dummy), basis[:, k]])
    return columns, metadata, meta["singular_value"]


def confounds_table(
    data: np.ndarray,
    brain: np.ndarray,
    masks: dict[str, np.ndarray],
    params: np.ndarray,
    tr: float,
    n_dummy: int,
) -> tuple[pd.DataFrame, dict]:
    """Compute the fMRIPrep confounds TSV and its JSON metadata for one run.

    Parameters
    ----------
    data : numpy.ndarray
        (n_voxels, n_volumes) head data.
    brain : numpy.ndarray
        Boolean brain mask over the voxels of ``data``.
    masks : dict
        aCompCor masks ``{"CSF", "WM", "combined"}`` (boolean over the voxels of ``data``).
    params : numpy.ndarray
        (n_volumes, 6) realignment parameters.
    tr : float
        Repetition time (s).
    n_dummy : int
        Non-steady-state volumes.

    Returns
    -------
    table : pandas.DataFrame
    metadata : dict
    """
    n = data.shape[1]
    columns: dict[str, np.ndarray] = {}
    for name, mask in (
        ("global_signal", brain),
        ("csf", masks["CSF"]),
        ("white_matter", masks["WM"]),
    ):
        columns.update(expand(name, data[mask].mean(axis=0, dtype=np.float64)))
    columns["csf_wm"] = data[masks["combined"]].mean(axis=0, dtype=np.float64)
    raw, std = dvars(data[brain])
    columns["std_dvars"], columns["dvars"] = std, raw
    fd = framewise_displacement(params)
    columns["framewise_displacement"] = fd
    compcor, metadata, _ = acompcor(data, masks, tr, n_dummy)
    columns.update(compcor)
    for k in range(n_dummy):
        columns[f"non_steady_state_outlier{k:02d}"] = (np.arange(n) == k).astype(float)
    for name, series in zip(MOTION, params.T, strict=True):
        columns.update(expand(name, series))
    spikes = np.flatnonzero((np.nan_to_num(fd) > FD_SPIKE) | (np.nan_to_num(std) > DVARS_SPIKE))
    for k, volume in enumerate(spikes):
        columns[f"motion_outlier{k:02d}"] = (np.arange(n) == volume).astype(float)
    metadata.update(
        {k: {"Method": "Mean"} for k in ("global_signal", "csf", "white_matter", "csf_wm")}
    )
    metadata.update(MOTION_METADATA)
    return pd.DataFrame(columns), dict(sorted(metadata.items()))
