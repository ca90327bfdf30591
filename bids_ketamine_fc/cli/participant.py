"""The participant level: check every run up front, then run the nipype workflow."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import NoUsableDataError, UsageError, UserInputError
from bids_ketamine_fc.utils.timing import StageClock

LOGGER = logging.getLogger("bids_ketamine_fc")
# nipype's MultiProc polls every 2 s by default; runs here last seconds.
POLL_SLEEP = 0.1


def preflight(settings: Settings) -> list:
    """Find the runs and check everything that can be checked without reading the BOLD data.

    Confounds columns and the seeds against each run's brain mask are
    checked here so that a user mistake stops the run before any output is written; a low-pass
    cut-off at or above a run's Nyquist frequency is logged (no effective low-pass, as in CONN).
    The seeds are placed once per grid and saved in the work folder for the runs' nodes
    (:mod:`~bids_ketamine_fc.participant.seed_grid`).

    Returns
    -------
    list of RunInputs
        With ``seeds_file`` set.
    """
    import dataclasses

    import nibabel as nb

    from bids_ketamine_fc.participant.denoising import lowpass_note
    from bids_ketamine_fc.participant.run import prepare_confounds
    from bids_ketamine_fc.participant.seed_grid import save_placed
    from bids_ketamine_fc.participant.seeds import load_seed_set, place_seeds, resolve_seeds
    from bids_ketamine_fc.participant.strategy import load_strategy
    from bids_ketamine_fc.utils.bids import SUPPORTED_SPACES, collect_runs

    if settings.space not in SUPPORTED_SPACES:
        raise UsageError(
            f"--space {settings.space} is not supported: use one of {', '.join(SUPPORTED_SPACES)}"
        )
    strategy = load_strategy(settings.denoise_strategy, settings.fd_threshold)
    seeds = load_seed_set(settings.seeds)
    runs = collect_runs(
        settings.fmriprep_dir,
        settings.task_id,
        settings.space,
        settings.participant_label,
        settings.session_label,
    )
    high = strategy.filter.high if strategy.filter is not None else None
    placed_by_grid: dict[tuple, tuple] = {}  # (shape, affine) -> (affine, placed seeds)
    grid_of_run = []
    for run in runs:
        note = lowpass_note(high, run.tr)
        if note:
            LOGGER.warning("%s: %s", run.bold.name, note)
        prepare_confounds(run.confounds, strategy, settings.dummy_scans)
        mask_img = nb.load(run.mask)
        grid = (mask_img.shape[:3], mask_img.affine.round(6).tobytes())
        if grid not in placed_by_grid:
            placed_by_grid[grid] = (mask_img.affine, place_seeds(seeds, mask_img, settings.space))
        placed = placed_by_grid[grid][1]
        resolve_seeds(seeds, mask_img, settings.space, settings.min_seed_coverage, placed)
        grid_of_run.append(grid)
    files = {
        grid: save_placed(placed, settings.space, affine, settings.work_dir / "seeds")
        for grid, (affine, placed) in placed_by_grid.items()
    }
    return [
        dataclasses.replace(run, seeds_file=files[grid])
        for run, grid in zip(runs, grid_of_run, strict=True)
    ]


def run_participant(settings: Settings, runs: list, clock: StageClock | None = None) -> int:
    """Run the participant workflow on ``runs`` and report what was excluded.

    Parameters
    ----------
    settings : Settings
    runs : list of RunInputs
        From :func:`preflight`.
    clock : StageClock, optional
        Started by the caller (its laps so far, e.g. the preflight, are logged with the others).

    Returns
    -------
    int
        0 when at least one run was usable.
    """
    from bids_ketamine_fc.cli.execution import (
        LOCAL_PLUGINS,
        SCHEDULER_POLL,
        choose_plugin,
        plugin_name,
    )
    from bids_ketamine_fc.utils.bids import write_dataset_description
    from bids_ketamine_fc.workflows.base import init_bids_ketamine_fc_wf

    clock = clock or StageClock()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    workflow = init_bids_ketamine_fc_wf(settings, runs)
    crash_dir = settings.work_dir / "crashes"
    plugin, plugin_args = choose_plugin(settings, len(runs))
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": True,
            "poll_sleep_duration": POLL_SLEEP,
            "remove_unnecessary_outputs": False,
        }
    )
    if plugin_name(plugin) not in LOCAL_PLUGINS:  # a scheduler's queue is polled at nipype's pace
        workflow.config["execution"]["poll_sleep_duration"] = SCHEDULER_POLL
    workflow.config["monitoring"] = {"enabled": False}
    _quiet_nipype(settings.verbosity)
    LOGGER.info(
        "Running %d runs of %d participants with nipype's %s plugin",
        len(runs),
        len({r.subject for r in runs}),
        plugin_name(plugin),
    )
    clock.lap("workflow")
    try:
        graph = workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        message = _user_error_from_crash(crash_dir)
        if message:
            raise UserInputError(message) from err
        raise
    clock.lap("nipype run")
    subjects = [n for n in graph.nodes() if n.name == "ds_subject" and n.result is not None]
    included = sum(node.result.outputs.n_included for node in subjects)
    if included == 0:
        raise NoUsableDataError(
            "no usable run: every run was excluded (see the *_desc-denoising_qc.tsv files); "
            "relax --fd-threshold or --min-volumes"
        )
    write_dataset_description(settings)
    clock.lap("finish")
    _log_stage_times(clock, subjects)
    LOGGER.info(
        "Participant level done: %d usable runs; outputs in %s", included, settings.output_dir
    )
    return 0


def _log_stage_times(clock: StageClock, subject_nodes: list) -> None:
    """Log the seconds spent in each stage (one JSON line; ``benchmarks/`` reads it)."""
    nodes = {node.fullname: node.result.outputs.timings for node in subject_nodes}
    times = {"cli": clock.seconds, "total": round(clock.total(), 4), "subjects": nodes}
    LOGGER.info("Stage times %s", json.dumps(times))


def _quiet_nipype(verbosity: int) -> None:
    """Keep nipype's per-node messages out of the console unless -v was given."""
    from nipype import config
    from nipype import logging as nipype_logging

    level = "INFO" if verbosity else "WARNING"
    for key in ("workflow_level", "interface_level", "utils_level"):
        config.set("logging", key, level)
    nipype_logging.update_logging(config)


def _user_error_from_crash(crash_dir: Path) -> str | None:
    """Return the message of a UserInputError raised inside a node, read from its crash file."""
    marker = "UserInputError: "
    for crash in sorted(Path(crash_dir).glob("crash-*.txt")):
        for line in crash.read_text(errors="replace").splitlines():
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return None
