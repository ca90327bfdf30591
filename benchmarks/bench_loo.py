"""Pre-specified leave-one-out test of one seed and contrast at 2 mm: wall time and its ratio.

Goal (issue 9): 24 folds x 1000 permutations (every fold's GLM, threshold, clusters and classifier
redone under each) in at most 120 s on 2 cores. The script generates 24 subject-level Fisher z maps
on the fMRIPrep MNI152NLin2009cAsym 2 mm grid (97x115x97; the real TemplateFlow brain mask from
../shared/data when present), with smooth noise (8 mm FWHM) and a planted coupling with pain
improvement near the precuneus, then times, in the same process:

- the baseline: one full-data group fit as the group level does it for one model and contrast
  (design, OLS fit, smoothness estimate, contrast maps, RFT clusters);
- the leave-one-out test (``prediction.loo_fold_values`` and ``loo_tables``) with
  ``--prediction-permutations`` (1000) relabellings.

    python benchmarks/bench_loo.py [--nprocs 2] [--permutations 1000] [--coupling 0.8]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")

import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_ketamine_fc.group import maps  # noqa: E402
from bids_ketamine_fc.group.behaviour import prediction  # noqa: E402
from bids_ketamine_fc.group.inference import clusters, glm, rft  # noqa: E402

SHAPE = (97, 115, 97)
AFFINE = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
SPACE = "MNI152NLin2009cAsym"
PRECUNEUS = np.array([0.0, -60.0, 40.0])
GOAL_S = 120.0


def brain_mask() -> np.ndarray:
    real = Path(__file__).resolve().parents[2] / "shared/data/templates"
    real = real / f"tpl-{SPACE}_res-02_desc-brain_mask.nii.gz"
    if real.exists():
        return np.asarray(nb.load(real).dataobj) > 0
    xyz = nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T)
    inside = ((xyz - [0, -18, 15]) ** 2 / np.array([70, 100, 80]) ** 2).sum(axis=1) <= 1
    return inside.reshape(SHAPE)


def generate(n: int, coupling: float, rng: np.random.Generator):
    """Masked maps ``(n, V)`` float32, the mask and the participants' rows."""
    mask = brain_mask()
    xyz = nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T).reshape(*SHAPE, 3)
    blob = np.exp(-(np.linalg.norm(xyz - PRECUNEUS, axis=-1) ** 2) / (2 * 6.0**2))
    improvement = np.r_[rng.uniform(0.5, 1.0, n // 2), rng.uniform(0.0, 0.45, n - n // 2)]
    sigma = 8.0 / 2.3548 / 2.0  # 8 mm FWHM in 2 mm voxels
    inside = mask.ravel(order="F")
    data = np.empty((n, int(inside.sum())), np.float32)
    for k, value in enumerate(improvement):
        noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), sigma)
        noise /= noise[mask].std()
        volume = 0.3 + 0.15 * noise + coupling * (0.5 - value) * blob
        data[k] = volume.ravel(order="F")[inside]
    rows = pd.DataFrame(
        {
            "participant_id": [f"sub-{k + 1:02d}" for k in range(n)],
            "group": np.where(improvement >= 0.5, "R", "NR"),
            "improvement": improvement,
        }
    )
    return data, mask, rows


def full_fit(data, mask, rows) -> int:
    """One full-data group fit of one model and contrast, as the group level runs it."""
    design = glm.design_matrix(rows, "groups", ())
    fit = glm.fit_ols(data, design)
    smooth = rft.estimate_smoothness(fit.std_resid, mask, rft.voxel_sizes(AFFINE), design.dof)
    u = rft.height_threshold(0.001, design.dof)
    t_map = maps.unmask(glm.contrast_maps(fit, "NRgtR")["t"], mask)
    return len(clusters.rft_clusters(t_map, mask, u, smooth).significant(0.05))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--participants", type=int, default=24)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--coupling", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, mask, rows = generate(args.participants, args.coupling, np.random.default_rng(args.seed))

    start = time.perf_counter()
    n_clusters = full_fit(data, mask, rows)
    baseline = time.perf_counter() - start

    options = {
        "covariates": (), "voxel_p": 0.001, "cluster_p": 0.05, "inference": "rft",
        "fold_null": args.permutations, "n_jobs": args.nprocs,
    }  # fmt: skip
    start = time.perf_counter()
    orders, _ = prediction.outcome_orders(len(rows), args.permutations, np.random.default_rng(1))
    folds = prediction.loo_fold_values(
        data, rows, mask, AFFINE, ("groups", "NRgtR"), options, orders, np.random.default_rng(2)
    )
    summary, _ = prediction.loo_tables(rows, folds)
    loo = time.perf_counter() - start
    print(
        json.dumps(
            {
                "participants": args.participants,
                "mask_voxels": int(mask.sum()),
                "nprocs": args.nprocs,
                "relabellings": summary["n_permutations"],
                "full_data_clusters": n_clusters,
                "full_fit_s": round(baseline, 2),
                "loo_s": round(loo, 2),
                "ratio_to_full_fit": round(loo / baseline, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "goal_s": GOAL_S,
                "passed": loo <= GOAL_S,
                "auc": round(summary["auc"], 3),
                "auc_p": summary["auc_p"],
                "cv_r": round(summary["cv_r"], 3),
                "n_folds_no_cluster": summary["n_folds_no_cluster"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
