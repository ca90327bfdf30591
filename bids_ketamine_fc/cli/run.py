"""``bids_ketamine_fc`` entry point: check the inputs, then run the participant or group level."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UsageError, UserInputError

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
    work_dir = (opts.work_dir or output_dir.parent / "work").absolute()
    if work_dir == output_dir or output_dir in work_dir.parents:
        raise UsageError(f"-w/--work-dir {work_dir} is inside OUTPUT_DIR: put it elsewhere")
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
        responder_threshold=opts.responder_threshold,
        covariates=tuple(opts.covariates),
        voxel_p=opts.voxel_p,
        cluster_p=opts.cluster_p,
        inference=tuple(dict.fromkeys(opts.inference)),
        n_permutations=opts.n_permutations,
        random_seed=opts.random_seed,
        ica_components=opts.ica_components,
        correlation_model=opts.correlation_model,
        correlation_inference=opts.correlation_inference,
        roi=opts.roi.absolute() if opts.roi else None,
        roi_seed=opts.roi_seed,
    )


def _absolute_if_file(value: str) -> str:
    """Make a file argument absolute (nipype nodes run in their own folders); keep preset names."""
    path = Path(value)
    return str(path.absolute()) if path.suffix and path.exists() else value


def setup_logging(settings: Settings, log_file: Path) -> None:
    """Log to stderr (INFO, or DEBUG with -vv) and in full to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    level = logging.DEBUG if settings.verbosity > 1 else logging.INFO
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.handlers.clear()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level if settings.verbosity else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    # A user error is printed once, as the final line, by main(); the log file keeps it too.
    console.addFilter(lambda record: not getattr(record, "user_error", False))
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    LOGGER.addHandler(console)
    LOGGER.addHandler(to_file)


def start_outputs(settings: Settings) -> None:
    """Start logging into ``OUTPUT_DIR/logs`` and record the settings there."""
    logs = settings.output_dir / "logs"
    setup_logging(settings, logs / f"{settings.analysis_level}.log")
    settings.write(logs / f"config-{settings.analysis_level}.json")


def main(argv: list[str] | None = None) -> int:
    """Run ``bids_ketamine_fc``; return the exit status."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from bids_ketamine_fc.cli.parser import get_parser

    opts = get_parser().parse_args(argv)
    try:
        settings = build_settings(opts)
        if settings.analysis_level == "participant":
            from bids_ketamine_fc.cli.participant import preflight, run_participant
            from bids_ketamine_fc.utils.timing import StageClock

            clock = StageClock()
            runs = preflight(settings)  # every check that needs no output comes first
            clock.lap("preflight")
            start_outputs(settings)
            return run_participant(settings, runs, clock)
        from bids_ketamine_fc.cli.group import run_group

        start_outputs(settings)
        return run_group(settings)
    except UserInputError as err:
        message = " ".join(str(err).split())
        if LOGGER.handlers:  # the log file exists only once outputs have started
            LOGGER.error(message, extra={"user_error": True})
        print(f"bids_ketamine_fc: error: {message}", file=sys.stderr)
        return int(err.exit_code)
    except Exception:
        LOGGER.exception("bids_ketamine_fc crashed")
        raise
    finally:
        for handler in list(LOGGER.handlers):
            handler.close()
            LOGGER.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
