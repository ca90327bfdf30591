"""Where messages go: our progress on the console, everything (with nipype's) in the log file.

- Standard output: our progress lines (``INFO``; ``-v`` adds our ``DEBUG`` lines).
- Standard error: our warnings and errors, one line each; a user error is printed once, by
  ``main()``, as the last line.
- ``OUTPUT_DIR/logs/<level>.log``: every record at ``DEBUG``, with nipype's messages, Python
  warnings (scipy's, nilearn's...) and tracebacks. Records logged before the log file exists
  (the checks that precede any output) are kept in memory and written into it when it opens.

Records with ``console=False`` (``LOGGER.error(..., extra={"console": False})``) go to the file only.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import tempfile
import time
from pathlib import Path

LOGGER = logging.getLogger("bids_ketamine_fc")
#: Loggers whose records go to the log file only (nipype's internals, warnings, worker pools).
FILE_ONLY = ("nipype", "py.warnings", "concurrent.futures")
_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _ConsoleFilter(logging.Filter):
    def __init__(self, below: int | None = None):
        super().__init__()
        self.below = below

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "console", True):
            return False
        return self.below is None or record.levelno < self.below


class _ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message``, with the level named from warnings up."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = f" {record.levelname}" if record.levelno >= logging.WARNING else ""
        return f"{stamp}{level} {record.getMessage()}"


class Logs:
    """The handlers of one command: console now, the log file when outputs start.

    Parameters
    ----------
    verbosity : int
        ``-v`` count: 0 shows our ``INFO`` lines, 1 or more our ``DEBUG`` lines too.
    """

    def __init__(self, verbosity: int = 0):
        self.path: Path | None = None
        self._file: logging.Handler | None = None
        self._saved: dict[str, tuple] = {}
        out = logging.StreamHandler(sys.stdout)
        out.setLevel(logging.DEBUG if verbosity else logging.INFO)
        out.addFilter(_ConsoleFilter(below=logging.WARNING))
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        err.addFilter(_ConsoleFilter())
        for handler in (out, err):
            handler.setFormatter(_ConsoleFormatter())
        self._buffer = logging.handlers.MemoryHandler(
            capacity=100_000, flushLevel=logging.CRITICAL + 1
        )
        self._console = [out, err]
        LOGGER.setLevel(logging.DEBUG)
        for handler in list(LOGGER.handlers):
            LOGGER.removeHandler(handler)
        for handler in (*self._console, self._buffer):
            LOGGER.addHandler(handler)
        for name in FILE_ONLY:  # until the file opens, their records wait in the buffer
            self._take_over(name, self._buffer)
        logging.captureWarnings(True)

    def _take_over(self, name: str, handler: logging.Handler) -> None:
        logger = logging.getLogger(name)
        if name not in self._saved:
            self._saved[name] = (list(logger.handlers), logger.propagate, logger.level)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
        if name != "nipype":  # nipype sets the levels of its own loggers
            logger.setLevel(logging.DEBUG)

    def open_file(self, path: Path) -> Path:
        """Start writing the log file ``path`` (appending), with the records so far."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(_FORMAT))
        self._buffer.setTarget(handler)
        self._buffer.flush()
        LOGGER.removeHandler(self._buffer)
        LOGGER.addHandler(handler)
        for name in FILE_ONLY:
            self._take_over(name, handler)
        self._file, self.path = handler, path
        return path

    def crash_file(self) -> Path:
        """Return the log file, or (before outputs started) a new one in the temporary folder."""
        if self.path is None:
            fd, name = tempfile.mkstemp(prefix="bids_ketamine_fc-crash-", suffix=".log")
            with open(fd, "w"):
                pass
            self.open_file(Path(name))
        return self.path

    def close(self) -> None:
        """Remove every handler installed here and give the other loggers back their own."""
        logging.captureWarnings(False)
        for handler in (*self._console, self._buffer, self._file):
            if handler is not None:
                LOGGER.removeHandler(handler)
                handler.close()
        for name, (handlers, propagate, level) in self._saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.propagate, logger.level = propagate, level
        self._saved.clear()
