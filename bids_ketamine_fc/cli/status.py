"""Participant progress on the console, failures kept per participant, and the closing summary.

:class:`ParticipantStatus` is nipype's ``status_callback``: it prints a line when a participant
starts and when it finishes (with its time), and records a participant whose step failed, with the
reason read from the step's result (the exception's message). nipype skips the failed
participant's later steps and carries on with the others (``stop_on_first_crash`` off).
:meth:`ParticipantStatus.summary` ends the level: every failed participant and run with its reason,
on the console and in ``OUTPUT_DIR/logs/summary-participant-<time>.tsv``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bids_ketamine_fc import exceptions
from bids_ketamine_fc.cli.interrupt import interrupted_by
from bids_ketamine_fc.exceptions import ExitCode, UserInputError

LOGGER = logging.getLogger("bids_ketamine_fc")
_SUBJECT = re.compile(r"single_subject_([A-Za-z0-9]+)_wf")
#: The JSON sidecar of the summary table.
SUMMARY_COLUMNS = {
    "participant_id": {"Description": "BIDS participant label."},
    "status": {
        "Description": "What became of the participant in this run.",
        "Levels": {
            "completed": "every step ran; the outputs are in OUTPUT_DIR",
            "failed": "left out: its inputs are bad (or a step crashed); see reason",
            "not run": "not reached (the run was interrupted)",
        },
    },
    "run": {"Description": "The run at fault (n/a: the participant as a whole)."},
    "seconds": {
        "Description": "Time from the participant's first step to its outputs.",
        "Units": "s",
    },
    "reason": {"Description": "Why the participant failed: the file at fault and the fix."},
}
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*): (.+)$")


@dataclass(frozen=True)
class Failure:
    """Why a participant (or one of its runs) could not be processed.

    Attributes
    ----------
    participant : str
        Label, without ``sub-``.
    run : str
        Run prefix (``sub-X[_ses-Y]_task-Z[_run-N]``), or ``""`` for the participant as a whole.
    stage : str
        ``"inputs"`` (found by the checks before any work) or ``"processing"``.
    reason : str
        One line: the file at fault and the fix, or the unexpected error.
    exit_code : ExitCode
        The status this failure alone would give (:data:`ExitCode.CRASH` for a bug).
    """

    participant: str
    run: str
    stage: str
    reason: str
    exit_code: ExitCode

    @classmethod
    def from_error(cls, err: Exception, participant: str, run: str = "", stage: str = "inputs"):
        """Describe ``err`` (a user error, or an unexpected one) as a failure."""
        if isinstance(err, UserInputError):
            return cls(participant, run, stage, one_line(str(err)), err.exit_code)
        reason = f"unexpected {type(err).__name__}: {one_line(str(err))}"
        return cls(participant, run, stage, reason, ExitCode.CRASH)


def one_line(text: str) -> str:
    """Collapse whitespace and newlines."""
    return " ".join(str(text).split())


def reason_from_traceback(text: str) -> tuple[str, ExitCode]:
    """Return the message and exit status of the exception that ends a formatted traceback."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match is None:
            continue
        name, message = match.groups()
        error = getattr(exceptions, name, None)
        if isinstance(error, type) and issubclass(error, UserInputError):
            return message, error.exit_code
        return f"unexpected {name}: {message}", ExitCode.CRASH
    return "unexpected error (no message)", ExitCode.CRASH


class ParticipantStatus:
    """Follow the participants through the nipype run; usable as nipype's ``status_callback``.

    Parameters
    ----------
    runs : dict
        ``{participant label: [run prefix, ...]}`` of the participants that go to nipype.
    failures : list of Failure
        Participants already refused by the checks before the run.
    """

    def __init__(self, runs: dict[str, list[str]], failures: list[Failure] | None = None):
        self.runs = runs
        self.failures = list(failures or [])
        self.started: dict[str, float] = {}
        self.finished: dict[str, tuple[float, int]] = {}
        self.stopped = False
        self._start = time.monotonic()
        self._node_started: set[str] = set()
        self.timings: dict[str, dict] = {}  # ds_subject node -> its stage times
        self._labels = {p.replace("-", ""): p for prefixes in runs.values() for p in prefixes}

    def __call__(self, node, status: str) -> None:
        """Take nipype's news of ``node``: ``"start"``, ``"end"`` or ``"exception"``."""
        if self.stopped or interrupted_by():  # nipype calls back from ``finally`` clauses
            return
        try:
            self._update(node, status)
        except Exception:  # progress must never stop the run
            LOGGER.debug("Status callback failed for %s (%s).", node, status, exc_info=True)

    def _update(self, node, status: str) -> None:
        match = _SUBJECT.search(node.fullname)
        if match is None:
            return
        subject = match.group(1)
        if status == "start":
            self._node_started.add(node.fullname)
        if subject not in self.started:
            self.started[subject] = time.monotonic()
            n_runs = len(self.runs.get(subject, []))
            LOGGER.info("sub-%s: started (%d run%s).", subject, n_runs, "" if n_runs == 1 else "s")
        if status == "exception":
            self._failed(subject, node)
        elif status == "end" and node.name == "ds_subject":
            seconds = time.monotonic() - self.started[subject]
            included = int(node.result.outputs.n_included)
            self.finished[subject] = (seconds, included)
            self.timings[node.fullname] = dict(getattr(node.result.outputs, "timings", {}) or {})
            done = (
                "already complete (reused from the work folder)"
                if node.fullname not in self._node_started  # nipype found it cached
                else f"finished in {seconds:.1f} s"
            )
            n_runs = len(self.runs.get(subject, []))
            LOGGER.info("sub-%s: %s (%d of %d runs usable).", subject, done, included, n_runs)

    def _failed(self, subject: str, node) -> None:
        try:
            message, code = reason_from_traceback(node.result.runtime.traceback)
        except Exception:  # no result file: the step failed before its interface ran
            message, code = f"step {node.name} failed (crash file in the work folder)", 1
        label = node.name.removeprefix("denoise_")
        failure = Failure(subject, self._labels.get(label, ""), "processing", message, code)
        self.failures.append(failure)
        LOGGER.warning("sub-%s: failed: %s", subject, message)

    @property
    def failed(self) -> list[str]:
        """Labels of the participants with a failure, sorted."""
        return sorted({f.participant for f in self.failures})

    def table(self) -> pd.DataFrame:
        """One row per participant: ``participant_id``, ``status``, ``run``, ``seconds``, ``reason``."""
        rows = []
        for subject in sorted(set(self.runs) | set(self.failed)):
            mine = [f for f in self.failures if f.participant == subject]
            seconds, _ = self.finished.get(subject, (float("nan"), 0))
            if not mine:
                status = "completed" if subject in self.finished else "not run"
                rows.append((f"sub-{subject}", status, "n/a", round(seconds, 1), "n/a"))
            for failure in mine:
                rows.append(
                    (f"sub-{subject}", "failed", failure.run or "n/a", seconds, failure.reason)
                )
        return pd.DataFrame(rows, columns=["participant_id", "status", "run", "seconds", "reason"])

    def summary(self, logs: Path) -> Path:
        """Log the failed participants and runs with their reasons; write the table to ``logs``.

        The reasons are listed when some participant completed (otherwise the closing error
        line gives them).
        """
        from bids_ketamine_fc.utils.io import atomic_write_text, atomic_write_tsv

        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = atomic_write_tsv(self.table(), Path(logs) / f"summary-participant-{stamp}.tsv")
        atomic_write_text(path.with_suffix(".json"), json.dumps(SUMMARY_COLUMNS, indent=2) + "\n")
        total = len(set(self.runs) | set(self.failed))
        completed = len(set(self.finished) - set(self.failed))
        LOGGER.info(
            "Participant level: %d of %d participant(s) completed in %.1f s.",
            completed,
            total,
            time.monotonic() - self._start,
        )
        if not completed:  # the closing error line names the failures
            return path
        for failure in self.failures:
            where = f" ({failure.run})" if failure.run else ""
            LOGGER.warning("Failed: sub-%s%s: %s", failure.participant, where, failure.reason)
        return path

    def exit_code(self) -> ExitCode:
        """0, :data:`ExitCode.SOME_FAILED`, or the failures' own status when none completed.

        A crash (a bug) anywhere gives :data:`ExitCode.CRASH`.
        """
        codes = {f.exit_code for f in self.failures}
        if not codes:
            return ExitCode.SUCCESS
        if ExitCode.CRASH in codes:
            return ExitCode.CRASH
        if set(self.finished) - set(self.failed):
            return ExitCode.SOME_FAILED
        return codes.pop() if len(codes) == 1 else ExitCode.DATA_ERROR
