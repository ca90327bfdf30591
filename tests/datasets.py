"""Tiny fMRIPrep-style datasets of random data for command-line tests (the demo makes realistic ones)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

VOXEL = 6.0
AFFINE = np.array([[VOXEL, 0, 0, -96], [0, VOXEL, 0, -132], [0, 0, VOXEL, -78], [0, 0, 0, 1]])
SHAPE = (33, 39, 33)
STUDY_SEEDS = [
    "mPFC", "PCC", "ACC", "AInsulaL", "AInsulaR", "NAccL", "NAccR", "AmygdalaL", "AmygdalaR",
]  # fmt: skip
SPHERES = {
    "seeds": [
        {"name": "mPFC", "center": [1, 55, -3], "radius": 10},
        {"name": "PCC", "center": [1, -61, 38], "radius": 10},
    ]
}


def brain_mask(shape=SHAPE, affine=AFFINE) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nb.affines.apply_affine(affine, ijk)
    return (((xyz - [0, -18, 15]) ** 2 / np.array([70, 100, 80]) ** 2).sum(axis=1) <= 1).reshape(
        shape
    )


def confounds_table(rng, n: int) -> pd.DataFrame:
    # realignment parameters in mm and radians, of realistic size (ART's composite motion)
    table = pd.DataFrame(
        {
            f"{a}_{b}": rng.standard_normal(n) * (0.1 if a == "trans" else 0.001)
            for a in ("trans", "rot")
            for b in "xyz"
        }
    )
    for column in list(table):
        table[f"{column}_derivative1"] = np.r_[np.nan, np.diff(table[column])]
    table["framewise_displacement"] = np.r_[np.nan, np.abs(rng.standard_normal(n - 1)) * 0.2]
    table["global_signal"] = rng.standard_normal(n)
    for kind in "wc":
        for k in range(5):
            table[f"{kind}_comp_cor_{k:02d}"] = rng.standard_normal(n)
    return table


def make_dataset(
    root: Path,
    subjects=("01", "02"),
    runs=(None,),
    sessions=(None,),
    n_volumes: int = 60,
    seed: int = 0,
    space: str = "MNI152NLin2009cAsym",
) -> Path:
    """Write ``root/bids`` with ``derivatives/fmriprep`` and ``root/seeds.json``; return ``root/bids``."""
    rng = np.random.default_rng(seed)
    bids = Path(root) / "bids"
    fmriprep = bids / "derivatives" / "fmriprep"
    fmriprep.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.9.0"})
    )
    (fmriprep / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fMRIPrep",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep"}],
            }
        )
    )
    mask = brain_mask()
    for subject in subjects:
        for session in sessions:
            for run in runs:
                _write_run(fmriprep, rng, mask, subject, session, run, n_volumes, space)
    (Path(root) / "seeds.json").write_text(json.dumps(SPHERES))
    return bids


def _write_run(fmriprep, rng, mask, subject, session, run, n_volumes, space) -> None:
    func = fmriprep / f"sub-{subject}" / (f"ses-{session}" if session else "") / "func"
    func.mkdir(parents=True, exist_ok=True)
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "") + "_task-rest"
    prefix += f"_run-{run}" if run else ""
    spaced = f"{prefix}_space-{space}"
    nb.save(
        nb.Nifti1Image(mask.astype(np.uint8), AFFINE), func / f"{spaced}_desc-brain_mask.nii.gz"
    )
    shared = rng.standard_normal(n_volumes)
    data = 1000 + 10 * rng.standard_normal((*SHAPE, n_volumes))
    data += 5 * shared  # a global fluctuation
    data = (data * mask[..., None]).astype(np.float32)
    nb.save(nb.Nifti1Image(data, AFFINE), func / f"{spaced}_desc-preproc_bold.nii.gz")
    (func / f"{spaced}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    confounds_table(rng, n_volumes).to_csv(
        func / f"{prefix}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a"
    )
