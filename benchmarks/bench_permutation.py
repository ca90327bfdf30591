"""Benchmark: permutation cluster inference, this package against nilearn, on the 2 mm MNI grid.

Generates 24 smooth random subject maps (12 R, 12 NR) on the fMRIPrep MNI152NLin2009cAsym 2 mm
grid (97x115x97) inside its brain mask (the real TemplateFlow mask from ``../shared/data`` when
present, else an ellipsoid of about 230k voxels), then times

* ``permutation_test``: cluster size and mass, 5000 permutations, both contrasts (RgtNR and
  NRgtR from one set of permutations), height p < 0.001;
* nilearn's ``non_parametric_inference`` (one one-sided contrast per call, same threshold). It
  takes minutes for 5000 permutations, so it runs with two small numbers of permutations and
  the time per permutation is the slope between them (fixed costs excluded); its time for 5000
  permutations of both contrasts is extrapolated as two calls. The printout says so.

Usage::

    python benchmarks/bench_permutation.py [--n-jobs 2] [--nilearn-permutations 20 120] [--tfce]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, stats

from bids_ketamine_fc.group.inference.permutation import permutation_test

MASK = (
    Path(__file__).resolve().parents[2]
    / "shared/data/templates/tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz"
)
SHAPE, AFFINE = (97, 115, 97), np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (-96.0, -132.0, -78.0)


def brain_mask() -> tuple[np.ndarray, str]:
    if MASK.exists():
        return np.asarray(nib.load(MASK).dataobj) > 0, f"TemplateFlow mask {MASK.name}"
    ijk = np.indices(SHAPE).astype(float)
    radii = (36.0, 44.0, 34.0)
    inside = sum(((ijk[a] - (SHAPE[a] - 1) / 2) / radii[a]) ** 2 for a in range(3)) <= 1
    return inside, "ellipsoid (shared mask not found)"


def subject_maps(mask: np.ndarray, n: int, fwhm_mm: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = fwhm_mm / 2.0 / np.sqrt(8 * np.log(2))
    maps = np.empty((n, *SHAPE), np.float32)
    for i in range(n):
        maps[i] = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), sigma)
        maps[i] = 0.2 + 0.15 * maps[i] / maps[i][mask].std()  # Fisher z-like values
    return maps * mask


def time_ours(Y, X, mask, u, args, tfce=False) -> tuple[float, float, dict]:
    contrasts = {"RgtNR": np.array([1.0, -1.0]), "NRgtR": np.array([-1.0, 1.0])}
    n_perm = args.tfce_permutations if tfce else args.n_permutations
    cpu, start = time.process_time(), time.perf_counter()
    result = permutation_test(
        Y,
        X,
        contrasts,
        mask,
        u,
        n_perm,
        random_seed=0,
        tfce=tfce,
        n_jobs=args.n_jobs,
        progress=False,
    )
    return time.perf_counter() - start, time.process_time() - cpu, result


def time_nilearn(maps, X, mask, n_perm, n_jobs, tfce=False) -> float:
    from nilearn.glm.second_level import non_parametric_inference

    imgs = [nib.Nifti1Image(m, AFFINE) for m in maps]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        non_parametric_inference(
            imgs,
            design_matrix=pd.DataFrame(X, columns=["R", "NR"]),
            second_level_contrast=[1, -1],
            mask=nib.Nifti1Image(mask.astype(np.uint8), AFFINE),
            n_perm=n_perm,
            two_sided_test=False,
            threshold=0.001,
            tfce=tfce,
            random_state=0,
            n_jobs=n_jobs,
        )
    return time.perf_counter() - start


def compare(label, maps, X, mask, u, args, tfce=False) -> None:
    n_ours = args.tfce_permutations if tfce else args.n_permutations
    Y = maps.reshape(len(maps), -1, order="F")[:, np.flatnonzero(mask.ravel(order="F"))]
    ours, cpu, result = time_ours(Y, X, mask, u, args, tfce)
    few, many = args.tfce_nilearn_permutations if tfce else args.nilearn_permutations
    time_nilearn(maps, X, mask, 2, args.n_jobs, tfce)  # warm-up: imports, worker processes
    t_few = time_nilearn(maps, X, mask, few, args.n_jobs, tfce)
    t_many = time_nilearn(maps, X, mask, many, args.n_jobs, tfce)
    per_perm = max(t_many - t_few, 1e-9) / (many - few)
    fixed = max(t_few - few * per_perm, 0.0)
    extrapolated = 2 * (fixed + n_ours * per_perm)
    print(f"\n== {label}: {n_ours} permutations, both contrasts, {args.n_jobs} job(s) ==")
    print(
        f"ours:    {ours:8.2f} s measured ({ours / n_ours * 1e3:.3f} ms per permutation; "
        f"CPU time of all threads {cpu:.2f} s)"
    )
    print(
        f"nilearn: {extrapolated:8.2f} s EXTRAPOLATED from runs of {few} and {many} "
        f"permutations ({t_few:.1f} s, {t_many:.1f} s): {per_perm * 1e3:.1f} ms per permutation "
        f"and contrast + {fixed:.1f} s fixed, times 2 contrasts"
    )
    print(f"ratio nilearn / ours: {extrapolated / ours:.0f}x")
    null = result["RgtNR"].max_size_null
    print(
        f"max cluster size null (RgtNR): median {np.median(null):.0f}, 95% {np.quantile(null, 0.95):.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-permutations", type=int, default=5000)
    parser.add_argument("--nilearn-permutations", type=int, nargs=2, default=(20, 120))
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--fwhm-mm", type=float, default=10.0)
    parser.add_argument("--tfce", action="store_true", help="also time TFCE")
    parser.add_argument("--tfce-permutations", type=int, default=100)
    parser.add_argument("--tfce-nilearn-permutations", type=int, nargs=2, default=(2, 4))
    args = parser.parse_args()

    mask, source = brain_mask()
    n = 24
    X = np.zeros((n, 2))
    X[: n // 2, 0] = 1
    X[n // 2 :, 1] = 1
    start = time.perf_counter()
    maps = subject_maps(mask, n, args.fwhm_mm, seed=0)
    u = stats.t.isf(0.001, n - 2)
    print(f"{n} maps on {SHAPE}, {int(mask.sum())} voxels in the {source}, FWHM {args.fwhm_mm} mm")
    print(
        f"generated in {time.perf_counter() - start:.1f} s; height t > {u:.3f} (p < 0.001, df 22)"
    )
    print(f"cores {os.cpu_count()}, load average before timing {os.getloadavg()[0]:.2f}")
    compare("cluster size and mass", maps, X, mask, u, args)
    if args.tfce:
        compare("cluster size, mass and TFCE", maps, X, mask, u, args, tfce=True)
    print(f"\nload average after timing {os.getloadavg()[0]:.2f} (other processes slow both sides)")


if __name__ == "__main__":
    main()
