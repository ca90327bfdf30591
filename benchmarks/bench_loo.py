"""Leave-one-out brain-behaviour estimate for one seed, 24 participants, 2 mm: wall time.

Goal (issue 4): at most 60 s on 2 cores. The script writes 24 generated subject-level Fisher z maps
on the fMRIPrep MNI152NLin2009cAsym 2 mm grid (97x115x97; the real TemplateFlow brain mask from
../shared/data when present), with smooth noise (8 mm FWHM) and a planted coupling with pain
improvement near the precuneus. It then finds the full-data cluster exactly as the group level
does, writes its mask and clusters table, and times

- the 24 leave-one-out folds alone (GLM, smoothness, RFT clusters per fold);
- the evaluation (thresholds, AUC, accuracy, cross-validated r) with --n-permutations (5000);
- ``run_brain_behaviour`` end to end (load the maps, correlation + 10 000 bootstrap resamples,
  the folds, the evaluation, figures and tables).

    python benchmarks/bench_loo.py [--workdir /tmp/bench_loo] [--nprocs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")

import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_ketamine_fc.config import Settings  # noqa: E402
from bids_ketamine_fc.group import maps  # noqa: E402
from bids_ketamine_fc.group.behaviour import prediction  # noqa: E402
from bids_ketamine_fc.group.behaviour import run as behaviour  # noqa: E402
from bids_ketamine_fc.group.inference import rft  # noqa: E402

SHAPE = (97, 115, 97)
AFFINE = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
SPACE = "MNI152NLin2009cAsym"
PRECUNEUS = np.array([0.0, -60.0, 40.0])


def brain_mask() -> np.ndarray:
    real = Path(__file__).resolve().parents[2] / "shared/data/templates"
    real = real / f"tpl-{SPACE}_res-02_desc-brain_mask.nii.gz"
    if real.exists():
        return np.asarray(nb.load(real).dataobj) > 0
    xyz = nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T)
    inside = ((xyz - [0, -18, 15]) ** 2 / np.array([70, 100, 80]) ** 2).sum(axis=1) <= 1
    return inside.reshape(SHAPE)


def write_maps(out: Path, n: int, rng: np.random.Generator) -> pd.DataFrame:
    mask = brain_mask()
    xyz = nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T).reshape(*SHAPE, 3)
    blob = np.exp(-(np.linalg.norm(xyz - PRECUNEUS, axis=-1) ** 2) / (2 * 6.0**2))
    improvement = np.r_[rng.uniform(0.5, 1.0, n // 2), rng.uniform(0.0, 0.45, n - n // 2)]
    sigma = 8.0 / 2.3548 / 2.0  # 8 mm FWHM in 2 mm voxels
    for k, value in enumerate(improvement):
        noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), sigma)
        noise /= noise[mask].std()
        volume = 0.3 + 0.15 * noise + 0.8 * (0.5 - value) * blob
        volume = np.where(mask, volume, np.nan).astype(np.float32)
        func = out / f"sub-{k + 1:02d}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        name = (
            f"sub-{k + 1:02d}_task-rest_space-{SPACE}_res-2_seed-mPFC_stat-fisherz_boldmap.nii.gz"
        )
        nb.save(nb.Nifti1Image(volume, AFFINE), func / name)
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{k + 1:02d}" for k in range(n)],
            "group": np.where(improvement >= 0.5, "R", "NR"),
            "improvement": improvement,
            "age": rng.uniform(27, 81, n).round(),
            "included": True,
        }
    )


def full_data_clusters(settings, index, seed_maps, rows) -> pd.DataFrame:
    """Clusters of the full data (as the group level), their masks, and clusters.tsv rows."""
    region, _ = prediction.fold_region(
        seed_maps.data, rows, seed_maps.mask, rft.voxel_sizes(AFFINE), "groups", "NRgtR", (),
        settings.voxel_p, settings.cluster_p,
    )  # fmt: skip
    if not region.any():
        raise SystemExit("the planted coupling gave no significant cluster; change --seed")
    volume = maps.unmask(region.astype(np.float32), seed_maps.mask, 0) > 0
    path = maps.group_path(
        settings.output_dir, index, "mPFC", "mask.nii.gz", model="groups", contrast="NRgtR",
        inference="rft", cluster=1,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.save(nb.Nifti1Image(volume.astype(np.uint8), AFFINE), path)
    return pd.DataFrame(
        [{"seed": "mPFC", "model": "groups", "contrast": "NRgtR", "inference": "rft",
          "cluster": 1, "p_fwe": 0.0}]
    )  # fmt: skip


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(timing: dict, name: str, function, *args, **kwargs):
    """Call ``function``; record its wall and CPU seconds (CPU: all threads of this process)."""
    wall, cpu = time.perf_counter(), _cpu()
    result = function(*args, **kwargs)
    timing[f"{name}_wall_s"] = round(time.perf_counter() - wall, 2)
    timing[f"{name}_cpu_s"] = round(_cpu() - cpu, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_loo"))
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--participants", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.workdir / "out"
    settings = Settings(
        bids_dir=args.workdir, output_dir=out, analysis_level="group", work_dir=args.workdir / "w",
        fmriprep_dir=args.workdir, inference=("rft",), nprocs=args.nprocs, random_seed=1,
        covariates=("age",),
    )  # fmt: skip
    timing = {}
    subjects = timed(timing, "write_maps", write_maps, out, args.participants,
                     np.random.default_rng(args.seed))  # fmt: skip
    index = maps.find_subject_maps(settings)
    seed_maps = maps.load_seed_maps(index, "mPFC", list(subjects["participant_id"]))
    table = full_data_clusters(settings, index, seed_maps, subjects)
    folds = timed(
        timing, "folds", prediction.loo_fold_values, seed_maps.data, subjects, seed_maps.mask,
        AFFINE, "groups", "NRgtR", (), settings.voxel_p, settings.cluster_p, n_jobs=args.nprocs,
    )  # fmt: skip
    result = timed(
        timing, "evaluation", prediction.evaluate, folds, subjects["group"].to_numpy() == "R",
        subjects["improvement"].to_numpy(), settings.n_permutations, np.random.default_rng(0),
    )  # fmt: skip
    written = timed(
        timing, "run_brain_behaviour", behaviour.run_brain_behaviour, settings, index,
        subjects, table,
    )  # fmt: skip
    summary = {
        "participants": args.participants,
        "mask_voxels": int(seed_maps.mask.sum()),
        "nprocs": args.nprocs,
        "n_permutations": result["n_permutations"],
        **timing,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "goal_s": 60,
        "passed": timing["run_brain_behaviour_wall_s"] <= 60,
        "auc": round(result["auc"], 3),
        "cv_r": round(result["cv_r"], 3),
        "circular_r": round(float(written["correlation"]["r"].iloc[0]), 3),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
