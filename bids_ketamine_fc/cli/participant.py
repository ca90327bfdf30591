"""The participant level: check every run up front, then run the nipype workflow."""

from __future__ import annotations

import logging
from pathlib import Path

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import NoUsableDataError, UsageError, UserInputError

LOGGER = logging.getLogger("bids_ketamine_fc")
# nipype's MultiProc polls every 2 s by default; runs here last seconds.
POLL_SLEEP = 0.1


def preflight(settings: Settings) -> list:
    """Find the runs and check everything that can be checked without reading the BOLD data.

    Confounds columns and the seeds against each run's brain mask are
    checked here so that a user mistake stops the run before any output is written; a low-pass
    cut-off at or above a run's Nyquist frequency is logged (no effective low-pass, as in CONN).

    Returns
    -------
    list of RunInputs
    """
    import nibabel as nb

    from bids_ketamine_fc.participant.denoising import lowpass_note
    from bids_ketamine_fc.participant.run import prepare_confounds
    from bids_ketamine_fc.participant.seeds import load_seed_set, resolve_seeds
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
    for run in runs:
        note = lowpass_note(high, run.tr)
        if note:
            LOGGER.warning("%s: %s", run.bold.name, note)
        prepare_confounds(run.confounds, strategy, settings.dummy_scans)
        resolve_seeds(seeds, nb.load(run.mask), settings.space, settings.min_seed_coverage)
    return runs


def run_participant(settings: Settings, runs: list) -> int:
    """Run the participant workflow on ``runs`` and report what was excluded.

    Returns
    -------
    int
        0 when at least one run was usable.
    """
    from bids_ketamine_fc.utils.bids import write_dataset_description
    from bids_ketamine_fc.workflows.base import init_bids_ketamine_fc_wf

    settings.work_dir.mkdir(parents=True, exist_ok=True)
    workflow = init_bids_ketamine_fc_wf(settings, runs)
    crash_dir = settings.work_dir / "crashes"
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": True,
            "poll_sleep_duration": POLL_SLEEP,
            "remove_unnecessary_outputs": False,
        }
    )
    workflow.config["monitoring"] = {"enabled": False}
    _quiet_nipype(settings.verbosity)
    plugin_args = {"n_procs": settings.nprocs, "raise_insufficient": False}
    if settings.mem_gb:
        plugin_args["memory_gb"] = settings.mem_gb
    LOGGER.info("Running %d runs of %d participants", len(runs), len({r.subject for r in runs}))
    try:
        graph = workflow.run(
            plugin="MultiProc" if settings.nprocs > 1 else "Linear", plugin_args=plugin_args
        )
    except RuntimeError as err:
        message = _user_error_from_crash(crash_dir)
        if message:
            raise UserInputError(message) from err
        raise
    included = sum(
        node.result.outputs.n_included
        for node in graph.nodes()
        if node.name == "ds_subject" and node.result is not None
    )
    if included == 0:
        raise NoUsableDataError(
            "no usable run: every run was excluded (see the *_desc-denoising_qc.tsv files); "
            "relax --fd-threshold or --min-volumes"
        )
    write_dataset_description(settings)
    LOGGER.info(
        "Participant level done: %d usable runs; outputs in %s", included, settings.output_dir
    )
    return 0


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
