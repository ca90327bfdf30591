"""One run, start to finish: confounds, outliers, cleaning operator, seeds, correlation, files.

Pure Python (no nipype): :class:`~bids_ketamine_fc.interfaces.connectivity.DenoiseRun` wraps
:func:`process_run`; :mod:`.outputs` installs the files and writes the subject-level maps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.config import RunOptions
from bids_ketamine_fc.participant.connectivity import (
    SeedCorrelation,
    fisher_z,
    reduce_dimensions,
    seed_correlation,
    to_volume,
)
from bids_ketamine_fc.participant.denoising import build_operator
from bids_ketamine_fc.participant.qc import write_qc_table, write_report_data
from bids_ketamine_fc.participant.regressors import RunConfounds, read_run
from bids_ketamine_fc.participant.seed_grid import load_placed
from bids_ketamine_fc.participant.seeds import load_seed_set, resolve_seeds, seed_index
from bids_ketamine_fc.participant.strategy import Strategy
from bids_ketamine_fc.participant.weighting import centred_coefficients
from bids_ketamine_fc.utils.derivatives import set_header_space
from bids_ketamine_fc.utils.io import atomic_write_tsv, save_img
from bids_ketamine_fc.utils.timing import StageClock

LOGGER = logging.getLogger("bids_ketamine_fc")


def check_motion(regressors: np.ndarray, names: list[str], source: Path) -> list[str]:
    """Warn when the strategy's motion regressors are all zero (was motion estimated at all?).

    Returns
    -------
    list of str
        The all-zero motion columns (empty when none).
    """
    zero = [
        name
        for column, name in enumerate(names)
        if name.startswith(("trans_", "rot_")) and not np.any(regressors[:, column])
    ]
    if zero:
        shown = ", ".join(zero[:4]) + (f" and {len(zero) - 4} more" if len(zero) > 4 else "")
        LOGGER.warning(
            "%s: motion column(s) %s are all zero: was head motion estimated? Their regression "
            "does nothing; check the fMRIPrep run.",
            Path(source).name,
            shown,
        )
    return zero


def process_run(
    run: dict, strategy: Strategy, options: RunOptions, out_dir: Path, n_threads: int = 1
) -> dict:
    """Denoise one run, correlate its seeds and write the run's files into ``out_dir``.

    Parameters
    ----------
    run : dict
        ``bold``, ``mask``, ``confounds``, ``tr``, ``prefix`` (``sub-X[_ses-Y]_task-Z[_run-N]``),
        ``space_prefix`` (with ``space``/``res``), ``space`` and optionally ``seeds_file`` (the
        seeds already placed on the run's grid, :func:`~.seed_grid.save_placed`) and ``probseg``
        (``{"GM"|"WM"|"CSF": path}``, fMRIPrep's tissue probability maps in the run's space).
    strategy : Strategy
        The denoising strategy.
    options : RunOptions
        Seeds, smoothing, dummy scans, minimum seed coverage and volumes, reduced dimensions.
    out_dir : Path
        Where the files go (nipype's node folder); the subject's output node moves them.
    n_threads : int
        Threads for smoothing (BLAS threads are set by the caller).

    Returns
    -------
    dict
        ``qc`` (one row of the QC table), ``files`` (name -> path), ``stats`` (npz of the
        sufficient statistics, absent when the run is excluded), ``reduced``, ``report``
        (npz of what the participant report draws, :func:`~.qc.write_report_data`) and
        ``timings`` (seconds by stage).
    """
    out_dir = Path(out_dir)
    clock = StageClock()
    mask_img = nb.load(run["mask"])
    mask = np.asarray(mask_img.dataobj) > 0
    resolved = _run_seeds(run, mask_img, options)
    clock.lap("seeds")
    data = read_run(run, strategy, mask_img, options.dummy_scans)
    clock.lap("read")
    series, outliers = data.series, data.outliers
    fd, n_dummy = data.confounds.fd, data.confounds.n_dummy
    qc = _run_qc(strategy, data.confounds, outliers, series.tsnr, data.names)
    qc["notes"] = "; ".join(data.notes) or "n/a"
    report = out_dir / "report_data.npz"
    if qc["n_kept"] < options.min_volumes:
        reason = f"{qc['n_kept']} volumes left after scrubbing"
        write_report_data(report, fd, outliers, n_dummy, run["tr"])
        return _excluded(
            run, qc, out_dir, f"{reason} (fewer than --min-volumes {options.min_volumes})"
        )
    censor = strategy.scrub is not None and strategy.scrub.method == "censor"
    filt = strategy.to_dict().get("filter")
    operator = build_operator(
        data.regressors,
        outliers,
        run["tr"],
        strategy.detrend,
        filt,
        strategy.filter_order,
        censor=censor,
        weights=data.weights,
    )
    qc["dof"] = operator.dof
    qc["n_regressors"] = operator.n_regressors
    clock.lap("operator")
    seeds = seed_index(resolved, mask)
    rows = np.flatnonzero(~outliers) if censor else np.arange(fd.size)
    write_report_data(
        report, fd, outliers, n_dummy, run["tr"], series=series.data, operator=operator,
        rows=rows, tsnr=series.tsnr, seeds=seeds, seed_names=[s.name for s in resolved],
        mask=mask, affine=mask_img.affine,
    )  # fmt: skip
    clock.lap("report data")
    if operator.dof < 3:
        return _excluded(run, qc, out_dir, f"only {operator.dof} temporal degrees of freedom left")
    corr = seed_correlation(
        series.data, mask, mask_img.affine, operator, seeds, options.smoothing_fwhm, n_threads,
        strategy.scaling,
    )  # fmt: skip
    del series, data
    clock.lap("correlation")
    files = _write_run_files(
        run, corr, operator, resolved, qc, strategy, options, out_dir, outliers
    )
    names_seeds = [item.seed.name for item in resolved]
    stats = _save_stats(out_dir / "seed_stats.npz", corr, names_seeds, mask_img.affine)
    clock.lap("run files")
    reduced = None
    if options.reduced_dims > 0:
        reduced = str(out_dir / "reduced.npy")
        # the weighted-centred coefficients have one row more than their rank, operator.dof
        dims = min(options.reduced_dims, operator.dof)
        np.save(reduced, reduce_dimensions(centred_coefficients(corr, operator), dims))
    qc.update(included=True, exclusion_reason="n/a")
    files["qc"] = _write_qc(qc, run, out_dir)
    clock.lap("reduced data")
    files["qc-json"] = str(Path(files["qc"]).with_suffix(".json"))
    return {
        "qc": qc,
        "files": files,
        "stats": str(stats),
        "reduced": reduced,
        "report": str(report),
        "timings": clock.seconds,
    }


def _run_seeds(run: dict, mask_img, options: RunOptions):
    """Resolve the seeds on the run's mask, from the seeds placed by the preflight if given."""
    seeds = load_seed_set(options.seeds)
    placed = None
    if run.get("seeds_file"):
        placed = load_placed(
            Path(run["seeds_file"]), seeds, run["space"], mask_img.affine, mask_img.shape
        )
    return resolve_seeds(seeds, mask_img, run["space"], options.min_seed_coverage, placed)


def _run_qc(strategy: Strategy, confounds: RunConfounds, outliers, tsnr, names: list[str]) -> dict:
    """Return the run's QC row before the operator is built (volumes, motion, tSNR, regressors)."""
    fd, n_dummy = confounds.fd, confounds.n_dummy
    return {
        "mean_fd": float(np.mean(fd)) if fd.size else 0.0,
        "n_volumes": int(n_dummy + fd.size),
        "n_dummy": int(n_dummy),
        "n_scrubbed": int(outliers.sum()),
        "n_kept": int(fd.size - outliers.sum()),
        "tsnr_median": float(np.median(tsnr)),
        "n_confounds": len(names),
        "n_regressors": len(names) + int(outliers.sum()) + strategy.detrend + 1,
        "regressors": " ".join(names),
        "compcor_source": confounds.compcor_source,
        "strategy": strategy.name,
    }


def _save_stats(path: Path, corr: SeedCorrelation, seeds: list[str], affine) -> Path:
    """Write the run's sufficient statistics (combined across runs by :mod:`.outputs`)."""
    names = ("voxel_sum", "voxel_wsum", "seed_sum", "seed_wsum", "weight_sum", "weight_sq")
    weighted = {name: getattr(corr, name) for name in names} if corr.voxel_sum is not None else {}
    np.savez(
        path,
        mask=corr.mask,
        cross=corr.cross,
        voxel_ss=corr.voxel_ss,
        seed_ss=corr.seed_ss,
        seeds=np.array(seeds),
        affine=affine,
        **weighted,
    )
    return path


def _excluded(run: dict, qc: dict, out_dir: Path, reason: str) -> dict:
    LOGGER.warning("%s excluded: %s", run["prefix"], reason)
    qc.setdefault("dof", 0)
    qc.update(included=False, exclusion_reason=reason)
    files = {"qc": _write_qc(qc, run, out_dir)}
    files["qc-json"] = str(Path(files["qc"]).with_suffix(".json"))
    report = out_dir / "report_data.npz"
    return {"qc": qc, "files": files, "stats": None, "report": str(report)}


def _write_qc(qc: dict, run: dict, out_dir: Path) -> str:
    return write_qc_table(qc, out_dir / f"{run['prefix']}_desc-denoising_qc.tsv")


def map_sidecar(
    seed_definition: dict,
    strategy: Strategy,
    qc: dict,
    options: RunOptions,
    sources: list[str],
    tr: float | None = None,
) -> dict:
    """Return the JSON sidecar of a seed map: seed, strategy, volumes, dof and software versions.

    ``RepetitionTime`` (s) is the run's; the group level warns when participants differ in it.
    """
    return {
        "Description": "Fisher z-transformed Pearson correlation of the seed's mean denoised series "
        "(unsmoothed) with each voxel's denoised, smoothed series.",
        "Seed": seed_definition,
        "DenoisingStrategy": strategy.to_dict(),
        "SmoothingFWHM": options.smoothing_fwhm,
        "RepetitionTime": tr,
        "VolumesTotal": qc["n_volumes"],
        "VolumesDummy": qc["n_dummy"],
        "VolumesScrubbed": qc["n_scrubbed"],
        "VolumesKept": qc["n_kept"],
        "DegreesOfFreedom": qc["dof"],
        "CompCorSource": qc.get("compcor_source", "none"),
        "DenoisingNotes": [] if qc.get("notes", "n/a") == "n/a" else qc["notes"].split("; "),
        "Sources": sources,
        "SoftwareVersions": software_versions(),
    }


def software_versions() -> dict:
    """Return the versions of the packages that shape the numbers."""
    from importlib.metadata import version  # importing nilearn for its version takes a second

    from bids_ketamine_fc import __version__

    return {
        "bids_ketamine_fc": __version__,
        "numpy": np.__version__,
        "scipy": version("scipy"),
        "nibabel": nb.__version__,
        "nilearn": version("nilearn"),
    }


def _write_run_files(
    run, corr: SeedCorrelation, operator, resolved, qc, strategy, options, out_dir, outliers
) -> dict:
    files = {}
    z = fisher_z(corr.r())
    affine = nb.load(run["mask"]).affine
    sources = run.get("sources") or [Path(run[key]).name for key in ("bold", "mask", "confounds")]
    for row, item in enumerate(resolved):
        stem = out_dir / f"{run['space_prefix']}_seed-{item.seed.name}_stat-fisherz_boldmap"
        img = nb.Nifti1Image(to_volume(z[row], corr.mask), affine)
        save_img(set_header_space(img, run["space"]), Path(f"{stem}.nii.gz"))
        sidecar = map_sidecar(item.definition, strategy, qc, options, sources, run["tr"])
        Path(f"{stem}.json").write_text(json.dumps(sidecar, indent=2, default=str))
        files[f"seed-{item.seed.name}"] = f"{stem}.nii.gz"
        files[f"seed-{item.seed.name}-json"] = f"{stem}.json"
    names = [item.seed.name for item in resolved]
    ts_path = out_dir / f"{run['prefix']}_desc-seeds_timeseries.tsv"
    atomic_write_tsv(pd.DataFrame(operator.series(corr.seed_coef), columns=names), ts_path)
    rows = np.arange(qc["n_dummy"], qc["n_volumes"])
    if strategy.scrub is not None and strategy.scrub.method == "censor":
        rows = rows[~outliers]
    columns = {
        name: {"Description": f"Denoised mean time series of the voxels of seed {name} "
               "(unsmoothed data)."}
        for name in names
    }  # fmt: skip
    sidecar = {
        "Description": "Denoised mean time series of each seed, one row a volume (RowVolumes).",
        "RepetitionTime": run["tr"],
        "RowVolumes": rows.tolist(),
        "ScrubbedVolumes": (np.flatnonzero(outliers) + qc["n_dummy"]).tolist(),
        "Sources": sources,
        **columns,
    }
    ts_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    files["timeseries"] = str(ts_path)
    files["timeseries-json"] = str(ts_path.with_suffix(".json"))
    return files
