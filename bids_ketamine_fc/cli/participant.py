"""The participant level: check every run up front, then run the nipype workflow.

A participant whose inputs are bad is reported and left out, and the others go on: the checks
before the run collect every problem of every run (:func:`preflight`), and during the run nipype
skips only the steps that depend on a failed one (``stop_on_first_crash`` off;
:class:`~bids_ketamine_fc.cli.status.ParticipantStatus` follows the participants and sums up).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from bids_ketamine_fc.cli.status import Failure, ParticipantStatus
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import (
    ExitCode,
    Interrupted,
    NoUsableDataError,
    UsageError,
    UserInputError,
)
from bids_ketamine_fc.utils.timing import StageClock

LOGGER = logging.getLogger("bids_ketamine_fc")
# nipype's MultiProc polls every 2 s by default; runs here last seconds.
POLL_SLEEP = 0.1


def preflight(settings: Settings, failures: list[Failure] | None = None) -> list:
    """Find the runs and check everything that can be checked without reading the BOLD data.

    The confounds and the seeds against each run's brain mask are checked here, so that a user
    mistake is reported before any output is written; a low-pass cut-off at or above a run's
    Nyquist frequency is logged (no effective low-pass, as in CONN). Problems of the options, the
    seed set or the strategy stop everything; problems of a run stop its participant only.

    Parameters
    ----------
    settings : Settings
    failures : list of Failure, optional
        When given, every run's problems are appended to it (all of them, not only the first) and
        the participants concerned are left out of the list returned; otherwise the first problem
        is raised.

    Returns
    -------
    list of RunInputs
        The runs of the participants without problems.
    """
    from bids_ketamine_fc.participant.seeds import load_seed_set
    from bids_ketamine_fc.participant.strategy import load_strategy
    from bids_ketamine_fc.utils.bids import SUPPORTED_SPACES, collect_runs

    if settings.space not in SUPPORTED_SPACES:
        raise UsageError(
            f"--space {settings.space} is not supported: use one of {', '.join(SUPPORTED_SPACES)}"
        )
    strategy = load_strategy(settings.denoise_strategy, settings.fd_threshold)
    seeds = load_seed_set(settings.seeds)
    found = [] if failures is not None else None
    runs = collect_runs(
        settings.fmriprep_dir,
        settings.task_id,
        settings.space,
        settings.participant_label,
        settings.session_label,
        problems=found,
    )
    problems = []
    for bad in found or []:  # the confounds of a run without usable images are checked too
        errors = [*bad.errors, *check_confounds(bad.confounds, strategy, settings)]
        problems += [Failure.from_error(err, bad.subject, bad.prefix) for err in errors]
    grids = SeedGrids(seeds, settings)
    for run in runs:
        for err in check_run(run, strategy, grids, settings):
            if failures is None:
                raise err
            problems.append(Failure.from_error(err, run.subject, run.prefix))
    if failures is not None:
        failures.extend(problems)
    bad = {failure.participant for failure in problems}
    return grids.attach([run for run in runs if run.subject not in bad])


class SeedGrids:
    """The seeds placed once per grid of the runs' masks (an atlas is resampled once per grid).

    The placed seeds are saved in the work folder for the runs' nodes
    (:mod:`~bids_ketamine_fc.participant.seed_grid`); a problem placing them is kept and
    reported for every run on that grid.
    """

    def __init__(self, seeds: list, settings: Settings):
        self.seeds, self.settings = seeds, settings
        self.placed: dict[tuple, tuple] = {}  # grid -> (affine, placed seeds or the error)
        self.of_run: dict = {}

    def resolve(self, run, mask_img) -> None:
        """Place the seeds on ``run``'s grid (once per grid) and check them against its mask."""
        from bids_ketamine_fc.participant.seeds import place_seeds, resolve_seeds

        grid = (mask_img.shape[:3], mask_img.affine.round(6).tobytes())
        if grid not in self.placed:
            try:
                placed = place_seeds(self.seeds, mask_img, self.settings.space)
            except UserInputError as err:
                placed = err
            self.placed[grid] = (mask_img.affine, placed)
        placed = self.placed[grid][1]
        if isinstance(placed, UserInputError):
            raise placed
        space, coverage = self.settings.space, self.settings.min_seed_coverage
        resolve_seeds(self.seeds, mask_img, space, coverage, placed)
        self.of_run[run.prefix] = grid

    def attach(self, runs: list) -> list:
        """Save the placed seeds of the runs' grids; return the runs with ``seeds_file`` set."""
        import dataclasses

        from bids_ketamine_fc.participant.seed_grid import save_placed

        files = {}
        for run in runs:
            grid = self.of_run[run.prefix]
            if grid not in files:
                affine, placed = self.placed[grid]
                folder = self.settings.work_dir / "seeds"
                files[grid] = save_placed(placed, self.settings.space, affine, folder)
        return [dataclasses.replace(run, seeds_file=files[self.of_run[run.prefix]]) for run in runs]


def check_run(run, strategy, grids: SeedGrids, settings: Settings) -> list[Exception]:
    """Return every problem of one run found without reading its BOLD data (empty when none)."""
    from bids_ketamine_fc.participant.denoising import lowpass_note
    from bids_ketamine_fc.participant.regressors import tissue_labels
    from bids_ketamine_fc.participant.seeds import read_brain_mask

    note = lowpass_note(strategy.filter.high if strategy.filter is not None else None, run.tr)
    if note:
        LOGGER.warning("%s: %s", run.bold.name, note)
    maps = set(tissue_labels(strategy)) <= set(run.probseg)
    errors = check_confounds(run.confounds, strategy, settings, maps)
    try:
        grids.resolve(run, read_brain_mask(run.mask))
    except UserInputError as err:
        errors.append(err)
    return errors


def check_confounds(
    confounds, strategy, settings: Settings, tissue_maps: bool = True
) -> list[Exception]:
    """Return the problems of a run's confounds table for ``strategy`` (none if not found).

    ``tissue_maps``: whether the run's tissue probability maps were found (then the ``conn``
    presets need no aCompCor columns in the table).
    """
    from bids_ketamine_fc.participant.regressors import prepare_confounds
    from bids_ketamine_fc.participant.run import check_motion

    if confounds is None:
        return []
    try:
        table = prepare_confounds(confounds, strategy, settings.dummy_scans, tissue_maps)
    except UserInputError as err:
        return [err]
    check_motion(table.regressors, table.names, confounds)
    return []


def all_failed(failures: list[Failure]) -> UserInputError:
    """Return the error to raise when no participant is left: its problem, or all of them."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for failure in failures:
        by_reason[failure.reason].append(f"sub-{failure.participant}")
    if len(by_reason) == 1:
        error = UserInputError(failures[0].reason)
    else:
        listed = "; ".join(
            f"{', '.join(dict.fromkeys(who))}: {reason}"
            for reason, who in list(by_reason.items())[:5]
        )
        more = f" (and {len(by_reason) - 5} more problems)" if len(by_reason) > 5 else ""
        error = UserInputError(f"no participant can be processed: {listed}{more}")
    codes = {f.exit_code for f in failures}
    error.exit_code = codes.pop() if len(codes) == 1 else ExitCode.DATA_ERROR
    return error


def run_participant(
    settings: Settings,
    runs: list,
    failures: list[Failure] | None = None,
    clock: StageClock | None = None,
) -> int:
    """Run the participant workflow on ``runs``; report the participants that failed.

    Parameters
    ----------
    settings : Settings
    runs : list of RunInputs
        From :func:`preflight`.
    failures : list of Failure, optional
        Participants already left out by :func:`preflight` (they are in the summary).
    clock : StageClock, optional
        Started by the caller (its laps so far, e.g. the preflight, are logged with the others).

    Returns
    -------
    int
        The exit status: 0, or :data:`~bids_ketamine_fc.exceptions.ExitCode.SOME_FAILED` when
        some participants failed and others completed (see
        :meth:`~bids_ketamine_fc.cli.status.ParticipantStatus.exit_code`).

    Raises
    ------
    NoUsableDataError
        No run of any completed participant was usable.
    Interrupted
        On ``SIGINT``/``SIGTERM``, with the summary written and ``detail`` set.
    """
    from bids_ketamine_fc.cli.execution import choose_plugin, plugin_name
    from bids_ketamine_fc.reports.citation import read_settings, write_citation
    from bids_ketamine_fc.utils.bids import write_dataset_description

    clock = clock or StageClock()
    for failure in failures or []:
        where = f" ({failure.run})" if failure.run else ""
        LOGGER.warning("sub-%s%s left out: %s", failure.participant, where, failure.reason)
    by_subject = defaultdict(list)
    for run in runs:
        by_subject[run.subject].append(run.prefix)
    status = ParticipantStatus(dict(by_subject), failures)
    _remove_partial(settings, by_subject)  # left by a run killed with kill -9
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    _nipype_to_log_file(settings.verbosity)
    plugin = plugin_name(choose_plugin(settings, len(runs))[0])
    LOGGER.info(
        "Running %d run(s) of %d participant(s) with nipype's %s plugin; work folder %s",
        len(runs),
        len(by_subject),
        plugin,
        settings.work_dir,
    )
    clock.lap("workflow")
    try:
        if plugin != "Linear":
            _run_workflow(settings, runs, status)
        else:  # one participant after the other, so that each lands in OUTPUT_DIR when done
            for subject in by_subject:
                _run_workflow(settings, [r for r in runs if r.subject == subject], status)
    except Interrupted as err:
        status.stopped = True
        _remove_partial(settings, status.started)
        summary = status.summary(settings.output_dir / "logs")
        err.detail = (
            f"{len(status.finished)} participant(s) completed are in {settings.output_dir}; "
            f"run the same command again to resume (summary: {summary})"
        )
        raise
    clock.lap("nipype run")

    def describe(settings: Settings) -> None:
        write_dataset_description(settings)
        write_citation(
            settings.output_dir,
            json.loads(settings.to_json()),
            read_settings(settings.output_dir, "group"),
        )

    code = _conclude(settings, status, describe)
    clock.lap("finish")
    _log_stage_times(clock, status.timings)
    return code


def _log_stage_times(clock: StageClock, subjects: dict) -> None:
    """Log the seconds spent in each stage (one JSON line; ``benchmarks/`` reads it)."""
    times = {"cli": clock.seconds, "total": round(clock.total(), 4), "subjects": subjects}
    LOGGER.info("Stage times %s", json.dumps(times), extra={"console": False})


def _run_workflow(settings: Settings, runs: list, status: ParticipantStatus) -> None:
    """Run the workflow of ``runs``; a failed participant does not stop the others."""
    from bids_ketamine_fc.cli.execution import (
        LOCAL_PLUGINS,
        SCHEDULER_POLL,
        choose_plugin,
        plugin_name,
    )
    from bids_ketamine_fc.workflows.base import init_bids_ketamine_fc_wf

    workflow = init_bids_ketamine_fc_wf(settings, runs)
    plugin, plugin_args = choose_plugin(settings, len(runs), status)
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(settings.work_dir / "crashes"),
            "crashfile_format": "txt",
            "stop_on_first_crash": False,
            "poll_sleep_duration": POLL_SLEEP,
            "remove_unnecessary_outputs": False,
        }
    )
    if plugin_name(plugin) not in LOCAL_PLUGINS:  # a scheduler's queue is polled at nipype's pace
        workflow.config["execution"]["poll_sleep_duration"] = SCHEDULER_POLL
    workflow.config["monitoring"] = {"enabled": False}
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError:  # some participants failed: the status has their reasons
        LOGGER.debug("nipype reported failed steps", exc_info=True, extra={"console": False})


def _remove_partial(settings: Settings, subjects) -> None:
    """Remove the half-written files of killed workers from these participants' folders."""
    from bids_ketamine_fc.utils.io import remove_partial

    removed = sum(remove_partial(settings.output_dir / f"sub-{s}") for s in subjects)
    if removed:
        LOGGER.debug("Removed %d half-written file(s) from OUTPUT_DIR.", removed)


def _conclude(settings: Settings, status: ParticipantStatus, write_description) -> int:
    summary = status.summary(settings.output_dir / "logs")
    code = status.exit_code()
    completed = set(status.finished) - set(status.failed)
    if not completed:
        raise all_failed(status.failures)
    included = sum(status.finished[s][1] for s in completed)
    if included == 0:
        raise NoUsableDataError(
            "no usable run: every run was excluded (see the *_desc-denoising_qc.tsv files); "
            "relax --fd-threshold or --min-volumes"
        )
    write_description(settings)
    LOGGER.info("Outputs in %s (%d usable run(s)).", settings.output_dir, included)
    if code != ExitCode.SUCCESS:
        failed = ", ".join(f"sub-{s}" for s in status.failed)
        raise_code = UserInputError(
            f"{len(status.failed)} participant(s) failed ({failed}), the others completed; "
            f"the reasons are above and in {summary}"
        )
        raise_code.exit_code = code
        raise raise_code
    return int(code)


def _nipype_to_log_file(verbosity: int) -> None:
    """Send nipype's messages to the log file (never the console), in full with -vv."""
    from nipype import config
    from nipype import logging as nipype_logging

    level = "DEBUG" if verbosity > 1 else "INFO"
    for key in ("workflow_level", "interface_level", "utils_level"):
        config.set("logging", key, level)
    nipype_logging.update_logging(config)
