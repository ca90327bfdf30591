"""The subject's outputs: per-run files moved into OUTPUT_DIR, and the subject-level maps.

The subject-level maps (no ``ses-``/``run-`` entity) are what the group level reads. With several
runs (or sessions) they combine the runs as CONN does, by concatenating the denoised series
(:func:`~bids_ketamine_fc.connectivity.combine_runs`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.connectivity import SeedCorrelation, combine_runs, fisher_z, to_volume
from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write, atomic_write_text


def run_folder(prefix: str) -> Path:
    """Return ``sub-X[/ses-Y]/func`` for a run prefix ``sub-X[_ses-Y]_task-...``."""
    parts = prefix.split("_")
    folder = Path(parts[0])
    if len(parts) > 1 and parts[1].startswith("ses-"):
        folder = folder / parts[1]
    return folder / "func"


def subject_map_name(subject: str, task: str, space_entities: str, seed: str) -> str:
    """Return the subject-level seed map name ``sub-X_task-T_space-S[_res-R]_seed-N_stat-z_boldmap``."""
    return f"sub-{subject}_task-{task}_{space_entities}_seed-{seed}_stat-z_boldmap"


def install_run_files(result: dict, prefix: str, output_dir: Path) -> list[str]:
    """Copy a run's files from the work directory into OUTPUT_DIR atomically; return the new paths."""
    folder = output_dir / run_folder(prefix)
    written = []
    for source in result["files"].values():
        target = folder / Path(source).name
        atomic_write(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
        written.append(str(target))
    return written


def load_stats(path: str) -> tuple[SeedCorrelation, list[str], np.ndarray]:
    """Read a run's sufficient statistics written by :func:`~bids_ketamine_fc.participant.process_run`."""
    with np.load(path) as npz:
        corr = SeedCorrelation(
            mask=npz["mask"],
            cross=npz["cross"],
            voxel_ss=npz["voxel_ss"],
            seed_ss=npz["seed_ss"],
            seed_coef=np.zeros((len(npz["seeds"]), 0)),
        )
        return corr, [str(s) for s in npz["seeds"]], npz["affine"]


def write_subject_maps(
    subject: str,
    task: str,
    space_entities: str,
    results: list[dict],
    prefixes: list[str],
    output_dir: Path,
) -> list[str]:
    """Write the subject-level maps of the included runs (combined when there are several).

    Parameters
    ----------
    subject, task : str
        Labels.
    space_entities : str
        ``space-S[_res-R]``.
    results : list of dict
        Results of :func:`~bids_ketamine_fc.participant.process_run` for the subject's runs.
    prefixes : list of str
        Each run's file-name prefix, aligned with ``results``.
    output_dir : Path

    Returns
    -------
    list of str
        The maps written (empty when every run was excluded).
    """
    included = [(r, p) for r, p in zip(results, prefixes, strict=True) if r["stats"]]
    if not included:
        return []
    loaded = [load_stats(r["stats"]) for r, _ in included]
    seeds, affine = loaded[0][1], loaded[0][2]
    combined = combine_runs([corr for corr, _, _ in loaded])
    z = fisher_z(combined.r())
    folder = output_dir / f"sub-{subject}" / "func"
    written = []
    for row, seed in enumerate(seeds):
        stem = folder / subject_map_name(subject, task, space_entities, seed)
        run_json = Path(included[0][0]["files"][f"seed-{seed}-json"])
        sidecar = json.loads(run_json.read_text())
        sidecar.update(
            {
                "Runs": [p for _, p in included],
                "RunCombination": "concatenation of the runs' denoised series (as CONN)",
                "VolumesKept": int(sum(r["qc"]["n_kept"] for r, _ in included)),
                "DegreesOfFreedom": int(sum(r["qc"]["dof"] for r, _ in included)),
            }
        )
        img = nb.Nifti1Image(to_volume(z[row], combined.mask), affine)
        img.header.set_xyzt_units("mm")
        atomic_save_img(img, Path(f"{stem}.nii.gz"))
        atomic_write_text(Path(f"{stem}.json"), json.dumps(sidecar, indent=2, default=str))
        written.append(f"{stem}.nii.gz")
    return written
