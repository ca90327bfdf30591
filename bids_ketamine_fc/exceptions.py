"""Exceptions that name a user mistake, and the one table of exit statuses.

The command line turns a :class:`UserInputError` into one line on standard error and the exit status
of its class (:attr:`UserInputError.exit_code`); anything else is a crash and keeps its traceback in
the log. The statuses follow the BIDS-Apps 2.0 proposal (BEP027) where one applies: BIDS codes 16-18
and the BSD ``sysexits`` codes 64-74; ``docs/usage.rst`` and ``boutiques.json`` list the same table
(a test keeps them equal to :data:`EXIT_CODES`).
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of ``bids_ketamine_fc`` (see :data:`EXIT_CODES` for their meaning)."""

    SUCCESS = 0
    CRASH = 1
    SOME_FAILED = 3
    NOT_BIDS = 16
    UNKNOWN_LEVEL = 17
    NOTHING_SELECTED = 18
    USAGE = 64
    DATA_ERROR = 65
    NO_INPUT = 66
    CANNOT_CREATE = 73
    IO_ERROR = 74
    INTERRUPTED = 130
    TERMINATED = 143


#: What each exit status means, as documented (``docs/usage.rst``, ``boutiques.json``).
EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "Success: every selected participant was processed.",
    ExitCode.CRASH: "Crash: a bug or an unexpected failure; the traceback is in OUTPUT_DIR/logs/.",
    ExitCode.SOME_FAILED: "Some participants failed (their inputs are bad) and were skipped; the "
    "others completed. The summary on standard error and in OUTPUT_DIR/logs/ lists each failure.",
    ExitCode.NOT_BIDS: "BIDS_DIR is not a BIDS dataset (no or invalid dataset_description.json).",
    ExitCode.UNKNOWN_LEVEL: "Unknown analysis level: use participant or group.",
    ExitCode.NOTHING_SELECTED: "The selection (--participant-label, --session-label, --task-id, "
    "--space) matched no data.",
    ExitCode.USAGE: "Usage: an option is missing, unknown or has an impossible value.",
    ExitCode.DATA_ERROR: "Data error: an input file exists but its content is wrong (corrupt "
    "image, malformed or empty table, missing column, NaN), or every run or participant was "
    "excluded.",
    ExitCode.NO_INPUT: "No input: a file or folder the run needs is missing or unreadable "
    "(fMRIPrep outputs, brain mask, confounds, phenotype, participant-level maps).",
    ExitCode.CANNOT_CREATE: "Cannot create output: OUTPUT_DIR, the work folder or a file in "
    "them cannot be created or written (read-only, permission, a file in place of a folder).",
    ExitCode.IO_ERROR: "Input/output error while reading or writing (disk full, device error).",
    ExitCode.INTERRUPTED: "Interrupted (Ctrl-C, SIGINT); completed participants are kept in "
    "OUTPUT_DIR and a rerun resumes.",
    ExitCode.TERMINATED: "Terminated (SIGTERM, e.g. by a scheduler); as for an interruption.",
}


class UserInputError(ValueError):
    """A problem with the user's data or options: the message names the culprit and the fix.

    Raised as such it is a data error (:attr:`ExitCode.DATA_ERROR`); the subclasses below carry the
    other statuses.
    """

    exit_code = ExitCode.DATA_ERROR


class UsageError(UserInputError):
    """An option is missing, unknown or has an impossible value."""

    exit_code = ExitCode.USAGE


class MissingInputError(UserInputError):
    """A file or folder the run needs does not exist or cannot be read."""

    exit_code = ExitCode.NO_INPUT


class NotBIDSError(UserInputError):
    """BIDS_DIR is not a BIDS dataset."""

    exit_code = ExitCode.NOT_BIDS


class NothingSelectedError(UserInputError):
    """The selection options matched no data."""

    exit_code = ExitCode.NOTHING_SELECTED


class OutputError(UserInputError):
    """An output file or folder cannot be created or written."""

    exit_code = ExitCode.CANNOT_CREATE


class NoUsableDataError(UserInputError):
    """Nothing usable remains (every run or participant was excluded)."""


#: errno values that mean "this path cannot be created or written" rather than a device failure.
_CANNOT_CREATE = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
}


def os_error_code(err: OSError) -> ExitCode:
    """Exit status of an operating-system error: cannot create (73) or I/O error (74)."""
    return ExitCode.CANNOT_CREATE if err.errno in _CANNOT_CREATE else ExitCode.IO_ERROR


class Interrupted(KeyboardInterrupt):  # noqa: N818 (a KeyboardInterrupt, named like it)
    """``SIGINT`` or ``SIGTERM`` arrived: stop, keep what is complete, exit 130 or 143."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> ExitCode:
        """130 for ``SIGINT``, 143 for ``SIGTERM`` (128 + the signal, as a shell reports it)."""
        return ExitCode.INTERRUPTED if self.name == "SIGINT" else ExitCode.TERMINATED
