"""Participant level on one 97x115x97x300 run at 2 mm: wall time and peak memory.

Goal (issue 2): wall time <= 3x the time nibabel takes to merely load the same .nii.gz, and peak memory
<= 2.5x the run's float32 size. Both are measured here, in the same script, on the same file.

    TEMPLATEFLOW_HOME is set by this script to a generated home under the work folder.
    python benchmarks/bench_participant.py [--volumes 300] [--workdir /tmp/bench_participant]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import ndimage

SHAPE = (97, 115, 97)
AFFINE = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])


def brain_mask() -> np.ndarray:
    real = Path(__file__).resolve().parents[2] / "shared/data/templates"
    real = real / "tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz"
    if real.exists():
        return np.asarray(nb.load(real).dataobj) > 0
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    inside = ((xyz - [0, -18, 15]) ** 2 / np.array([70, 100, 80]) ** 2).sum(axis=1) <= 1
    return inside.reshape(SHAPE)


def make_dataset(root: Path, n_volumes: int, tr: float = 2.0) -> Path:
    rng = np.random.default_rng(0)
    bids = root / "bids"
    func = bids / "derivatives/fmriprep/sub-01/func"
    func.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "bench", "BIDSVersion": "1.9.0"})
    )
    (bids / "derivatives/fmriprep/dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fMRIPrep (generated)",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep"}],
            }
        )
    )
    mask = brain_mask()
    prefix = "sub-01_task-rest_space-MNI152NLin2009cAsym_res-2"
    nb.save(
        nb.Nifti1Image(mask.astype(np.uint8), AFFINE), func / f"{prefix}_desc-brain_mask.nii.gz"
    )
    bold = func / f"{prefix}_desc-preproc_bold.nii.gz"
    if not bold.exists():
        slow = ndimage.gaussian_filter(rng.standard_normal((24, 29, 24, n_volumes)), (1, 1, 1, 2))
        signal = ndimage.zoom(slow, (97 / 24, 115 / 29, 97 / 24, 1), order=1)[:97, :115, :97]
        data = (1000 + 20 * signal + 5 * rng.standard_normal((*SHAPE, n_volumes))).astype(
            np.float32
        )
        data *= mask[..., None]
        img = nb.Nifti1Image(data, AFFINE)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
        nb.save(img, bold)
    (func / f"{prefix}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": tr}))
    columns = {
        f"{p}_{a}": rng.standard_normal(n_volumes) * 0.1
        for p in ("trans", "rot")
        for a in ("x", "y", "z")
    }
    table = pd.DataFrame(columns)
    for name in list(columns):
        table[f"{name}_derivative1"] = np.r_[np.nan, np.diff(table[name])]
    table["framewise_displacement"] = np.r_[
        np.nan, np.abs(rng.standard_normal(n_volumes - 1)) * 0.2
    ]
    table["global_signal"] = rng.standard_normal(n_volumes)
    for kind in ("w", "c"):
        for k in range(5):
            table[f"{kind}_comp_cor_{k:02d}"] = rng.standard_normal(n_volumes)
    table.to_csv(
        func / "sub-01_task-rest_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a"
    )
    return bids


def time_load(bold: Path) -> float:
    start = time.perf_counter()
    data = nb.load(bold).get_fdata(dtype=np.float32)
    elapsed = time.perf_counter() - start
    del data
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_participant"))
    args = parser.parse_args()
    root = args.workdir
    tf_home = root / "templateflow"
    if not tf_home.exists():
        from bids_ketamine_fc.demo import write_templateflow_home

        write_templateflow_home(tf_home)
    bids = make_dataset(root, args.volumes)
    bold = next((bids / "derivatives/fmriprep/sub-01/func").glob("*_bold.nii.gz"))
    float32_gb = np.prod(SHAPE) * args.volumes * 4 / 2**30
    env = dict(
        os.environ, TEMPLATEFLOW_HOME=str(tf_home), NIPYPE_NO_ET="1", TEMPLATEFLOW_AUTOUPDATE="0"
    )
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "bids_ketamine_fc.cli.run",
        str(bids),
        str(out),
        "participant",
        "-w",
        str(root / f"work{time.time_ns()}"),
        "--omp-nthreads",
        "2",
    ]
    # The participant run goes first, while this process is small: a child's peak RSS counts the
    # pages it shares with its parent at fork time.
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    run_s = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    load_s = min(time_load(bold) for _ in range(2))
    print(f"run: {SHAPE} x {args.volumes} volumes, float32 size {float32_gb:.2f} GB")
    print(f"nibabel load (get_fdata float32): {load_s:.2f} s")
    print(f"participant level (whole CLI, one run, 9 seeds, 8 mm): {run_s:.2f} s")
    print(f"time ratio: {run_s / load_s:.2f}  (goal <= 3)")
    print(f"peak memory of the participant process: {peak_gb:.2f} GB")
    print(f"memory ratio: {peak_gb / float32_gb:.2f}  (goal <= 2.5)")


if __name__ == "__main__":
    main()
