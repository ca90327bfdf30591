"""The group level: run the analyses, then draw their figures and write the report."""

from __future__ import annotations

import logging
import time

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import Interrupted

LOGGER = logging.getLogger("bids_ketamine_fc")


def run_group(settings: Settings) -> int:
    """Run the group level of ``settings``: ``OUTPUT_DIR/group`` and ``group/group.html``.

    Parameters
    ----------
    settings : Settings
        Group options (phenotype, pain columns, threshold, covariates, inference...).

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    UserInputError
        For every problem with the user's data or options (the message names the culprit).
    Interrupted
        On ``SIGINT``/``SIGTERM`` (``detail`` says what is left).
    """
    import json

    from bids_ketamine_fc.group.run import analyse_group
    from bids_ketamine_fc.reports.behaviour import write_figures
    from bids_ketamine_fc.reports.citation import read_settings, write_citation
    from bids_ketamine_fc.reports.group import write_group_report

    start = time.monotonic()
    try:
        results = analyse_group(settings)
        write_figures(settings.output_dir, results.index, results.behaviour)
        participant = read_settings(settings.output_dir, "participant")
        methods = write_citation(settings.output_dir, participant, json.loads(settings.to_json()))
        write_group_report(
            settings, results.index, results.subjects, results.clusters, results.comparison, methods
        )
    except Interrupted as err:
        err.detail = (
            f"{settings.output_dir / 'group'} is incomplete (each file in it is whole); "
            "run the group level again"
        )
        raise
    LOGGER.info("Group level done in %.1f s.", time.monotonic() - start)
    return 0
