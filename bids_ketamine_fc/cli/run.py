"""``bids_ketamine_fc`` entry point: check the inputs, then run the participant or group level.

Every way a run can end goes through :func:`main`: success, a user error (one line on standard
error, the status of its class), an interruption (one line, 130 or 143), an operating-system error
on a file (one line, 66, 73 or 74) or a crash (one line; the traceback in the log file only).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from bids_ketamine_fc.cli.logs import Logs
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import (
    ExitCode,
    Interrupted,
    UsageError,
    UserInputError,
    os_error_code,
)

LOGGER = logging.getLogger("bids_ketamine_fc")


def build_settings(opts) -> Settings:
    """Turn parsed arguments into :class:`Settings`, checking paths and labels.

    Raises
    ------
    UserInputError
        For a missing or non-BIDS input, an OUTPUT_DIR inside an input dataset, or a bad label.
    """
    from bids_ketamine_fc.cli.execution import read_plugin_file
    from bids_ketamine_fc.utils.bids import check_output_dir, clean_labels, resolve_input_dirs

    # the group level reads OUTPUT_DIR and the phenotype only, never fMRIPrep's outputs
    participant = opts.analysis_level == "participant"
    bids_dir, fmriprep_dir = resolve_input_dirs(opts.bids_dir, opts.fmriprep_dir, participant)
    output_dir = check_output_dir(opts.output_dir, bids_dir, fmriprep_dir)
    from bids_ketamine_fc.cli.checks import default_work_dir

    work_dir = Path(opts.work_dir or default_work_dir(output_dir)).absolute()
    for folder, name in ((output_dir, "OUTPUT_DIR"), (fmriprep_dir, "the fMRIPrep derivatives")):
        if folder is not None and (work_dir == folder or folder in work_dir.parents):
            raise UsageError(f"-w/--work-dir {work_dir} is inside {name}: put it elsewhere")
    plugin, plugin_args = read_plugin_file(opts.use_plugin) if opts.use_plugin else (None, {})
    return Settings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=opts.analysis_level,
        fmriprep_dir=fmriprep_dir,
        work_dir=work_dir,
        participant_label=clean_labels(opts.participant_label, "sub", "--participant-label"),
        session_label=clean_labels(opts.session_label, "ses", "--session-label"),
        task_id=clean_labels([opts.task_id], "task", "--task-id")[0],
        space=opts.space,
        seeds=_absolute_if_file(opts.seeds),
        denoise_strategy=_absolute_if_file(opts.denoise_strategy),
        smoothing_fwhm=opts.smoothing_fwhm,
        fd_threshold=opts.fd_threshold,
        dummy_scans=opts.dummy_scans,
        min_seed_coverage=opts.min_seed_coverage,
        min_volumes=opts.min_volumes,
        reduced_dims=opts.reduced_dims,
        nprocs=opts.nprocs,
        omp_nthreads=opts.omp_nthreads,
        mem_gb=opts.mem_gb,
        nipype_plugin=plugin,
        plugin_args=plugin_args,
        verbosity=opts.verbosity,
        phenotype=opts.phenotype.absolute() if opts.phenotype else None,
        pain_pre=opts.pain_pre,
        pain_post=opts.pain_post,
        pain_max=opts.pain_max,
        responder_threshold=opts.responder_threshold,
        covariates=tuple(opts.covariates),
        voxel_p=opts.voxel_p,
        cluster_p=opts.cluster_p,
        inference=tuple(dict.fromkeys(opts.inference)),
        n_permutations=opts.n_permutations,
        random_seed=opts.random_seed,
        ica_components=opts.ica_components,
        dual_regression=opts.dual_regression,
        correlation_model=opts.correlation_model,
        correlation_inference=opts.correlation_inference,
        roi=opts.roi.absolute() if opts.roi else None,
        roi_seed=opts.roi_seed,
        prediction=tuple(dict.fromkeys(opts.prediction)),
        prediction_permutations=opts.prediction_permutations,
    )


def _absolute_if_file(value: str) -> str:
    """Make a file argument absolute (nipype nodes run in their own folders); keep preset names."""
    path = Path(value)
    return str(path.absolute()) if path.suffix and path.exists() else value


def check_output_folders(settings: Settings) -> None:
    """Refuse, before any work, an OUTPUT_DIR (or work folder) that cannot be written.

    Raises
    ------
    OutputError
        A file stands where the folder should be, or nothing can be written there.
    """
    from bids_ketamine_fc.cli.checks import check_writable

    folders = [(settings.output_dir, "OUTPUT_DIR"), (settings.output_dir / "logs", "OUTPUT_DIR")]
    if settings.analysis_level == "participant":
        folders.append((settings.work_dir, "-w/--work-dir"))
    else:
        folders.append((settings.output_dir / "group", "OUTPUT_DIR"))
    for folder, what in folders:
        check_writable(folder, what)


def start_outputs(settings: Settings, logs: Logs) -> None:
    """Log into ``OUTPUT_DIR/logs`` (with what was logged so far) and record the settings there."""
    logs.open_file(settings.output_dir / "logs" / f"{settings.analysis_level}.log")
    settings.write(settings.output_dir / "logs" / f"config-{settings.analysis_level}.json")


def _run_level(settings: Settings, logs: Logs) -> int:
    from bids_ketamine_fc.cli.checks import check_options

    check_options(settings)
    check_output_folders(settings)
    if settings.analysis_level == "participant":
        from bids_ketamine_fc.cli.participant import all_failed, preflight, run_participant
        from bids_ketamine_fc.utils.timing import StageClock

        clock = StageClock()
        failures = []
        runs = preflight(settings, failures)  # every check that needs no output comes first
        if not runs:
            raise all_failed(failures)
        clock.lap("preflight")
        start_outputs(settings, logs)
        return run_participant(settings, runs, failures, clock)
    from bids_ketamine_fc.cli.group import run_group

    start_outputs(settings, logs)
    return run_group(settings)


def main(argv: list[str] | None = None) -> int:
    """Run ``bids_ketamine_fc``; return the exit status (``docs/usage.rst`` lists them)."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from bids_ketamine_fc.cli import interrupt
    from bids_ketamine_fc.cli.parser import get_parser

    opts = get_parser().parse_args(argv)
    logs = Logs(opts.verbosity)
    settings = None
    try:
        with interrupt.guard():
            settings = build_settings(opts)
            return _run_level(settings, logs)
    except UserInputError as err:
        return _fail(str(err), err.exit_code)
    except Interrupted as err:
        detail = getattr(err, "detail", None) or "run the same command again to resume"
        return _fail(f"interrupted by {err.name}: {detail}", err.exit_code)
    except OSError as err:
        LOGGER.debug("Operating-system error", exc_info=True, extra={"console": False})
        return _fail(*_describe_os_error(err, settings))
    except Exception as err:
        path = logs.crash_file()
        LOGGER.error("bids_ketamine_fc crashed", exc_info=True, extra={"console": False})
        message = f"crashed ({type(err).__name__}: {err}); the traceback is in {path}"
        return _fail(f"{message}; please report it", ExitCode.CRASH)
    finally:
        logs.close()


def _fail(message: str, code: int) -> int:
    """Print the one line of a failed run (and log it); return its status."""
    message = " ".join(str(message).split())
    LOGGER.error(message, extra={"console": False})
    print(f"bids_ketamine_fc: error: {message}", file=sys.stderr)
    return int(code)


def _describe_os_error(err: OSError, settings: Settings | None) -> tuple[str, ExitCode]:
    """One line and a status for an operating-system error on a file (disk full, permission...)."""
    name = err.filename or "a file"
    reason = err.strerror or str(err)
    ours = settings is not None and any(
        Path(str(name)).absolute().is_relative_to(folder)
        for folder in (settings.output_dir, settings.work_dir)
    )
    if ours or settings is None:
        return f"cannot write {name}: {reason}; free space or fix permissions", os_error_code(err)
    code = ExitCode.IO_ERROR if os_error_code(err) == ExitCode.IO_ERROR else ExitCode.NO_INPUT
    return f"cannot read {name}: {reason}; check the file and its permissions", code


if __name__ == "__main__":
    sys.exit(main())
