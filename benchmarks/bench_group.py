"""The whole group level of the study, 24 participants at 2 mm: wall time and peak memory.

Goal (issue 3): nine seeds, two models (groups, groupsAge), RFT and 5000 permutations in at most
5 minutes on 2 cores. The script writes once (cached under ``--workdir``) a participant-level output
folder as the group level reads it: for 24 participants (12 responders, 12 non-responders) the
subject-level Fisher z maps of the nine study seeds on the fMRIPrep MNI152NLin2009cAsym 2 mm grid
(97x115x97), smooth Gaussian noise (8 mm FWHM) inside the real brain mask (from ../shared/data when
present, else an ellipsoid), a planted mPFC-precuneus coupling that is lower the more the pain
improved (so NR > R there, and it correlates with improvement), the denoising QC tables, a BIDS
dataset with participants.tsv and phenotype/pain.tsv (nrs_pre, nrs_post, age) and a generated
TemplateFlow home. It then times, in a child process,

    python -m bids_ketamine_fc.cli.run BIDS OUT group -w WORK --nprocs 2 --random-seed 1

with every other option at its default, and, for scale, nilearn's ``non_parametric_inference`` on
one seed and one contrast (100 permutations), extrapolated to 9 seeds x 2 models x 5000.

    python benchmarks/bench_group.py [--workdir /tmp/bench_group] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import ndimage

SHAPE = (97, 115, 97)
AFFINE = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
SPACE = "MNI152NLin2009cAsym"
SEEDS = ("mPFC", "PCC", "ACC", "AInsulaL", "AInsulaR", "NAccL", "NAccR", "AmygdalaL", "AmygdalaR")
N_PER_GROUP = 12
FWHM_MM = 8.0
PRECUNEUS = np.array([0.0, -60.0, 40.0])
GOAL_S = 300.0
N_PERMUTATIONS, N_MODELS = 5000, 2
#: Bumped whenever the generated data change, so that a cached folder is regenerated.
DATA_VERSION = 2
#: Runs the group level as its own child and reports that child's wall time and peak RSS. A child
#: forked from a large process inherits its resident pages in ru_maxrss; this launcher is small.
LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(json.dumps({"wall_s": wall, "maxrss_kb": peak, "returncode": code}))
"""


def brain_mask() -> tuple[np.ndarray, str]:
    real = Path(__file__).resolve().parents[2] / "shared/data/templates"
    real = real / f"tpl-{SPACE}_res-02_desc-brain_mask.nii.gz"
    if real.exists():
        return np.asarray(nb.load(real).dataobj) > 0, f"TemplateFlow mask {real.name}"
    xyz = nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T)
    inside = ((xyz - [0, -18, 15]) ** 2 / np.array([70, 100, 80]) ** 2).sum(axis=1) <= 1
    return inside.reshape(SHAPE), "ellipsoid (shared mask not found)"


def phenotype(rng: np.random.Generator) -> pd.DataFrame:
    """NRS before/after (0-10 integers), age; the first 12 respond (improvement >= 0.5)."""
    rows = []
    for k in range(2 * N_PER_GROUP):
        responder = k < N_PER_GROUP
        pre = int(rng.integers(5, 10))
        relief = rng.uniform(0.5, 0.95) if responder else rng.uniform(0.0, 0.4)
        post = int(np.clip(np.round(pre * (1 - relief)), 0, pre))
        if responder and (pre - post) / pre < 0.5:
            post -= 1
        if not responder and (pre - post) / pre >= 0.5:
            post += 1
        rows.append(
            {
                "participant_id": f"sub-{k + 1:02d}",
                "nrs_pre": pre,
                "nrs_post": post,
                "age": int(rng.integers(25, 76)),
            }
        )
    table = pd.DataFrame(rows)
    table["improvement"] = (table["nrs_pre"] - table["nrs_post"]) / table["nrs_pre"]
    assert ((table["improvement"] >= 0.5) == (table.index < N_PER_GROUP)).all()
    return table


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_bids(bids: Path, table: pd.DataFrame) -> None:
    (bids / "derivatives/fmriprep").mkdir(parents=True, exist_ok=True)
    (bids / "phenotype").mkdir(exist_ok=True)
    write_json(bids / "dataset_description.json", {"Name": "bench_group", "BIDSVersion": "1.9.0"})
    write_json(
        bids / "derivatives/fmriprep/dataset_description.json",
        {
            "Name": "fMRIPrep (not run; the group level reads only OUTPUT_DIR)",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "fMRIPrep"}],
        },
    )
    sex = np.where(np.arange(len(table)) % 3 == 0, "M", "F")
    participants = pd.DataFrame({"participant_id": table["participant_id"], "sex": sex})
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False)
    pain = table[["participant_id", "nrs_pre", "nrs_post", "age"]]
    pain.to_csv(bids / "phenotype/pain.tsv", sep="\t", index=False)


def planted_blob(mask: np.ndarray) -> np.ndarray:
    """A 3-D Gaussian (sigma 8 mm) at the precuneus, peak 1, inside the mask."""
    xyz = nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T).reshape(*SHAPE, 3)
    distance2 = ((xyz - PRECUNEUS) ** 2).sum(-1)
    return (np.exp(-distance2 / (2 * 8.0**2)) * mask).astype(np.float32)


def subject_map(rng, mask: np.ndarray, extra: np.ndarray | float) -> np.ndarray:
    sigma_vox = FWHM_MM / np.sqrt(8 * np.log(2)) / 2.0
    noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE, dtype=np.float32), sigma_vox)
    noise /= noise[mask].std()
    volume = 0.2 + 0.12 * noise + extra  # Fisher z-like values
    return np.where(mask, volume, np.nan).astype(np.float32)


def write_participant(out: Path, row, mask: np.ndarray, blob: np.ndarray, rng) -> None:
    label = row.participant_id
    func = out / label / "func"
    func.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        extra = blob * (0.1 + 1.0 * (1 - row.improvement)) if seed == "mPFC" else 0.0
        name = f"{label}_task-rest_space-{SPACE}_res-2_seed-{seed}_stat-fisherz_boldmap"
        img = nb.Nifti1Image(subject_map(rng, mask, extra), AFFINE)
        img.header.set_xyzt_units("mm")
        nb.save(img, func / f"{name}.nii.gz")
        write_json(func / f"{name}.json", {"Seed": seed, "Statistic": "Fisher z (generated)"})
    n_volumes, n_scrubbed = 300, int(rng.integers(0, 20))
    qc = {
        "mean_fd": round(float(rng.uniform(0.08, 0.3)), 4),
        "n_volumes": n_volumes,
        "n_dummy": 2,
        "n_scrubbed": n_scrubbed,
        "n_kept": n_volumes - 2 - n_scrubbed,
        "dof": 200 - n_scrubbed,
        "tsnr_median": round(float(rng.uniform(40, 80)), 2),
        "included": True,
        "exclusion_reason": "n/a",
    }
    pd.DataFrame([qc]).to_csv(
        func / f"{label}_task-rest_desc-denoising_qc.tsv", sep="\t", index=False
    )


def make_dataset(root: Path) -> tuple[Path, Path, str]:
    """Write (unless cached) the BIDS dataset and participant outputs; return their folders."""
    bids, out, done = root / "bids", root / "out", root / ".complete"
    mask, source = brain_mask()
    stamp = json.dumps({"version": DATA_VERSION, "mask": source})
    if done.exists() and done.read_text() == stamp:
        return bids, out, source
    for folder in (bids, out):
        shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    table = phenotype(rng)
    write_bids(bids, table)
    out.mkdir(parents=True)
    write_json(
        out / "dataset_description.json",
        {
            "Name": "bids_ketamine_fc (generated participant outputs)",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "bids_ketamine_fc"}],
        },
    )
    blob = planted_blob(mask)
    for row in table.itertuples(index=False):
        write_participant(out, row, mask, blob, rng)
    done.write_text(stamp)
    print(f"generated 24 x {len(SEEDS)} maps in {time.perf_counter() - start:.0f} s")
    return bids, out, source


def templateflow_home(root: Path) -> Path:
    home = root / "templateflow"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        from bids_ketamine_fc.demo import write_templateflow_home

        write_templateflow_home(home)
        (home / ".complete").write_text("")
    return home


def run_group(root: Path, bids: Path, out: Path, tf_home: Path) -> dict:
    """Run the group level through the command line in a child; return wall time and peak RSS."""
    for stale in (out / "group", out / "logs", root / "work"):
        shutil.rmtree(stale, ignore_errors=True)
    env = dict(
        os.environ, TEMPLATEFLOW_HOME=str(tf_home), NIPYPE_NO_ET="1", TEMPLATEFLOW_AUTOUPDATE="0"
    )
    command = [
        sys.executable,
        "-m",
        "bids_ketamine_fc.cli.run",
        str(bids),
        str(out),
        "group",
        "-w",
        str(root / "work"),
        "--nprocs",
        "2",
        "--random-seed",
        "1",
    ]
    report = root / "launcher.json"
    subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *command], env=env, check=True)
    result = json.loads(report.read_text())
    if result["returncode"] != 0:
        sys.exit(f"the group level failed (exit {result['returncode']}); see {out / 'logs'}")
    return result


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (\w+) (.*)$")
_PERM = re.compile(r"seed (\w+), model (\w+): (\d+) permutations in ([\d.]+) s")
_SEED = re.compile(r"seed (\w+): (\d+) participants, (\d+) voxels, done in ([\d.]+) s")


def read_log(path: Path) -> list[tuple[float, str, str]]:
    """``(seconds since the first line, level, message)`` of each log record."""
    records = []
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            records.append((when, match[3], match[4]))
    first = records[0][0] if records else 0.0
    return [(when - first, level, message) for when, level, message in records]


def print_breakdown(log: Path, wall_s: float) -> None:
    records = read_log(log)
    permutations = {}
    seeds = {}
    seed_end = 0.0
    for at, _, message in records:
        if match := _PERM.search(message):
            permutations[match[1], match[2]] = float(match[4])
        elif match := _SEED.search(message):
            seeds[match[1]] = (int(match[2]), int(match[3]), float(match[4]))
            seed_end = at
    print("\nfrom the log (OUTPUT_DIR/logs/group.log):")
    print(
        f"  {'seed':<10} {'n':>3} {'voxels':>8} {'total s':>8}  permutations s (groups, groupsAge)"
    )
    for seed, (n, voxels, total) in seeds.items():
        perm = [permutations.get((seed, m), float("nan")) for m in ("groups", "groupsAge")]
        print(f"  {seed:<10} {n:>3} {voxels:>8} {total:>8.1f}  {perm[0]:.1f}, {perm[1]:.1f}")
    done = [
        float(m[1])
        for _, _, msg in records
        if (m := re.search(r"Group level done in ([\d.]+)", msg))
    ]
    seeds_s = sum(total for _, _, total in seeds.values())
    print(
        f"  all seeds (maps, GLM, RFT, permutations, cluster tables, maps written): {seeds_s:.1f} s"
    )
    perm_s = sum(permutations.values())
    print(f"    of which permutations (both models): {perm_s:.1f} s")
    print(
        f"    the rest (load maps, GLM, smoothness, RFT, cluster labels, peak labels, "
        f"20 maps + sidecars written per model): {seeds_s - perm_s:.1f} s"
    )
    print(
        f"  first log line to the first seed: {seed_end - seeds_s:.1f} s (subjects table, atlases)"
    )
    if done and records:
        tail = records[-1][0] - seed_end
        print(
            f"  after the last seed (clusters.tsv, brain-behaviour correlation + leave-one-out, "
            f"group ICA if any, report): {tail:.1f} s"
        )
        print(
            f"  run_group total {done[0]:.1f} s; process start-up, imports and logging set-up "
            f"{wall_s - done[0]:.1f} s"
        )
    others = [
        r for r in records if not (_PERM.search(r[2]) or _SEED.search(r[2]) or "FWHM" in r[2])
    ]
    print("  other log records (seconds since the first record):")
    for at, level, message in others:
        print(f"    {at:7.1f} {level:<7} {message[:130]}")


def print_outputs(out: Path) -> None:
    """What the run found: significant clusters and the brain-behaviour tables (a sanity check)."""
    group = out / "group"
    table = pd.read_csv(group / "clusters.tsv", sep="\t")
    significant = table[table["p_fwe"] < 0.05]
    print(f"\nclusters.tsv: {len(table)} clusters, {len(significant)} with p(FWE) < 0.05:")
    columns = ["seed", "model", "contrast", "inference", "size_vox", "peak_x", "peak_y"]
    columns += ["peak_z", "peak_stat", "p_fwe"]
    if len(significant):
        print(significant[columns].to_string(index=False))
    for name in ("correlation", "prediction"):
        path = group / f"{name}.tsv"
        rows = len(pd.read_csv(path, sep="\t")) if path.exists() else "absent"
        print(f"{name}.tsv rows: {rows}")
    print(f"group/ica: {'present' if (group / 'ica').exists() else 'absent (not run)'}")


def nilearn_once(imgs, design, mask_img, n_perm: int) -> float:
    from nilearn.glm.second_level import non_parametric_inference

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        non_parametric_inference(
            imgs,
            design_matrix=design,
            second_level_contrast=[-1, 1],  # NR > R
            mask=mask_img,
            n_perm=n_perm,
            two_sided_test=False,
            threshold=0.001,
            random_state=0,
            n_jobs=2,
        )
    return time.perf_counter() - start


def baseline(bids: Path, out: Path, few: int = 10, many: int = 100) -> float:
    """nilearn on the mPFC maps, contrast NR > R; return the time extrapolated to the study."""
    pain = pd.read_csv(bids / "phenotype/pain.tsv", sep="\t")
    responder = ((pain["nrs_pre"] - pain["nrs_post"]) / pain["nrs_pre"] >= 0.5).to_numpy()
    imgs = []
    for pid in pain["participant_id"]:
        path = out / pid / "func"
        path /= f"{pid}_task-rest_space-{SPACE}_res-2_seed-mPFC_stat-fisherz_boldmap.nii.gz"
        img = nb.load(path)
        imgs.append(nb.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine))
    stack = np.stack([np.asarray(i.dataobj) for i in imgs])
    valid = (np.isfinite(stack) & (stack != 0)).all(axis=0)
    mask_img = nb.Nifti1Image(valid.astype(np.uint8), AFFINE)
    design = pd.DataFrame({"R": responder.astype(float), "NR": (~responder).astype(float)})
    nilearn_once(imgs, design, mask_img, 2)  # warm-up: imports, worker processes
    t_few = nilearn_once(imgs, design, mask_img, few)
    t_many = nilearn_once(imgs, design, mask_img, many)
    per_perm = max(t_many - t_few, 1e-9) / (many - few)
    fixed = max(t_few - few * per_perm, 0.0)
    calls = len(SEEDS) * N_MODELS
    total = calls * (fixed + N_PERMUTATIONS * per_perm)
    print(
        f"\nbaseline: nilearn non_parametric_inference, seed mPFC, one contrast (NR > R), "
        f"{int(valid.sum())} voxels, cluster-forming p < 0.001, n_jobs 2"
    )
    print(f"  measured: {many} permutations {t_many:.1f} s, {few} permutations {t_few:.1f} s")
    print(f"  -> {per_perm * 1e3:.0f} ms per permutation + {fixed:.1f} s fixed per call")
    print(
        f"  EXTRAPOLATED (not run) to {len(SEEDS)} seeds x {N_MODELS} models x {N_PERMUTATIONS} "
        f"permutations, one contrast each: {total:.0f} s = {total / 60:.1f} min"
    )
    print("  (a second one-sided contrast per model, as the group level writes, would double it)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_group"))
    parser.add_argument("--skip-baseline", action="store_true", help="do not time nilearn")
    args = parser.parse_args()
    root = args.workdir.absolute()
    root.mkdir(parents=True, exist_ok=True)
    tf_home = templateflow_home(root)
    bids, out, source = make_dataset(root)
    print(
        f"{2 * N_PER_GROUP} participants ({N_PER_GROUP} R, {N_PER_GROUP} NR), {len(SEEDS)} seeds, "
        f"grid {SHAPE} at 2 mm, {source}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    result = run_group(root, bids, out, tf_home)
    wall, peak_gb = result["wall_s"], result["maxrss_kb"] / 2**20
    print(
        f"\ngroup level (whole CLI: {len(SEEDS)} seeds, models groups + groupsAge, "
        f"inference rft + permutation, {N_PERMUTATIONS} permutations, --nprocs 2): {wall:.1f} s"
    )
    print(f"goal: <= {GOAL_S:.0f} s; ratio wall / goal: {wall / GOAL_S:.2f}")
    print(f"peak RSS of the group-level process: {peak_gb:.2f} GB")
    print_breakdown(out / "logs/group.log", wall)
    print_outputs(out)
    if not args.skip_baseline:
        extrapolated = baseline(bids, out)
        print(f"ratio extrapolated nilearn / whole group level: {extrapolated / wall:.1f}x")
    print(f"\nload average after timing {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
