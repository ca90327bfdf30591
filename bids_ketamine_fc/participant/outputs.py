"""The subject's outputs: per-run files moved into OUTPUT_DIR, and the subject-level maps.

The subject-level maps (no ``ses-``/``run-`` entity) are what the group level reads. With several
runs (or sessions) they combine the runs as CONN does, by concatenating the denoised series
(:func:`~bids_ketamine_fc.participant.connectivity.combine_runs`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.participant.bold import brain_voxel_index
from bids_ketamine_fc.participant.connectivity import (
    SeedCorrelation,
    combine_runs,
    fisher_z,
    reduce_dimensions,
    to_volume,
)
from bids_ketamine_fc.utils.derivatives import set_header_space
from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write, atomic_write_text


def _space(space_entities: str) -> str:
    """Return the template name of ``space-S[_res-R]``."""
    return space_entities.split("_")[0].removeprefix("space-")


def _run_sources(result: dict) -> list[str]:
    """Return the ``Sources`` of a run's first seed map sidecar (the fMRIPrep files it read)."""
    sidecars = [
        v for k, v in result["files"].items() if k.startswith("seed-") and k.endswith("json")
    ]
    return json.loads(Path(sidecars[0]).read_text()).get("Sources", []) if sidecars else []


def run_folder(prefix: str) -> Path:
    """Return ``sub-X[/ses-Y]/func`` for a run prefix ``sub-X[_ses-Y]_task-...``."""
    parts = prefix.split("_")
    folder = Path(parts[0])
    if len(parts) > 1 and parts[1].startswith("ses-"):
        folder = folder / parts[1]
    return folder / "func"


def subject_map_name(subject: str, task: str, space_entities: str, seed: str) -> str:
    """Return the subject-level seed map name ``sub-X_task-T_space-S[_res-R]_seed-N_stat-fisherz_boldmap``."""
    return f"sub-{subject}_task-{task}_{space_entities}_seed-{seed}_stat-fisherz_boldmap"


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
    """Read a run's sufficient statistics written by :func:`~bids_ketamine_fc.participant.run.process_run`."""
    with np.load(path) as npz:
        corr = SeedCorrelation(
            mask=npz["mask"],
            cross=npz["cross"],
            voxel_ss=npz["voxel_ss"],
            seed_ss=npz["seed_ss"],
            seed_coef=np.zeros((len(npz["seeds"]), 0)),
        )
        if "voxel_sum" in npz:
            for name in ("voxel_sum", "voxel_wsum", "seed_sum", "seed_wsum"):
                setattr(corr, name, npz[name])
            corr.weight_sum, corr.weight_sq = float(npz["weight_sum"]), float(npz["weight_sq"])
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
        Results of :func:`~bids_ketamine_fc.participant.run.process_run` for the subject's runs.
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
                "Sources": [uri for r, _ in included for uri in _run_sources(r)],
            }
        )
        img = nb.Nifti1Image(to_volume(z[row], combined.mask), affine)
        atomic_save_img(set_header_space(img, _space(space_entities)), Path(f"{stem}.nii.gz"))
        atomic_write_text(Path(f"{stem}.json"), json.dumps(sidecar, indent=2, default=str))
        written.append(f"{stem}.nii.gz")
    return written


def reduced_data_name(subject: str, task: str, space_entities: str) -> str:
    """Return ``sub-X_task-T_space-S[_res-R]_desc-reduced_bold`` (the group ICA input)."""
    return f"sub-{subject}_task-{task}_{space_entities}_desc-reduced_bold"


def write_reduced_data(
    subject: str, task: str, space_entities: str, results: list[dict], output_dir: Path
) -> str | None:
    """Write the subject's denoised, smoothed data in its leading temporal dimensions (4D NIfTI).

    The runs' reduced coefficients (``reduced.npy`` of each run) are stacked on the voxels common
    to all runs (concatenation, as for the maps) and truncated again to the runs' number of
    dimensions. Volumes are not time points but temporal components: for any two voxels, the inner
    product of their values equals that of their denoised series (projected on those components).

    Returns
    -------
    str or None
        The file written, or None when no run kept reduced data.
    """
    included = [r for r in results if r.get("stats") and r.get("reduced")]
    if not included:
        return None
    loaded = [load_stats(r["stats"]) for r in included]
    common = np.logical_and.reduce([corr.mask for corr, _, _ in loaded])
    keep = brain_voxel_index(common)
    blocks = []
    for result, (corr, _, _) in zip(included, loaded, strict=True):
        position = np.searchsorted(brain_voxel_index(corr.mask), keep)
        blocks.append(np.load(result["reduced"])[:, position])
    n_dims = max(block.shape[0] for block in blocks)
    reduced = blocks[0] if len(blocks) == 1 else reduce_dimensions(np.concatenate(blocks), n_dims)
    stem = output_dir / f"sub-{subject}" / "func" / reduced_data_name(subject, task, space_entities)
    # Scaled int16 (precision ~3e-5 of the range) halves the file and the gzip time; the slope is
    # set here without an intercept so that the background reads back as exactly 0.
    slope = float(np.abs(reduced).max()) / 32767 or 1.0
    # One row a volume, brain voxels only (5x fewer values than the grid): the transpose is the 4D
    # image in NIfTI's (Fortran) order, which nibabel writes without another copy.
    volumes = np.zeros((reduced.shape[0], common.size), dtype=np.int16)
    volumes[:, keep] = np.round(reduced / np.float32(slope))
    volumes = volumes.T.reshape((*common.shape, reduced.shape[0]), order="F")
    img = nb.Nifti1Image(volumes, loaded[0][2])
    img.header.set_slope_inter(slope, 0.0)
    atomic_save_img(set_header_space(img, _space(space_entities)), Path(f"{stem}.nii.gz"))
    sources = [uri for r in included for uri in _run_sources(r)]
    atomic_write_text(
        Path(f"{stem}.json"),
        json.dumps(
            {
                "Description": "Denoised, smoothed BOLD data of the subject (runs concatenated) in its "
                f"{reduced.shape[0]} leading temporal dimensions: volumes are temporal principal "
                "components scaled by their singular values, so inner products between voxels equal "
                "those of the denoised series. Input of the group ICA.",
                "Runs": len(included),
                "Dimensions": int(reduced.shape[0]),
                "SkullStripped": True,
                "SpatialReference": sources[0] if sources else _space(space_entities),
                "Sources": sources,
                "VolumesKept": int(sum(r["qc"]["n_kept"] for r in included)),
            },
            indent=2,
        ),
    )
    return f"{stem}.nii.gz"
