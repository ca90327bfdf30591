"""Interruption: Ctrl-C and SIGTERM end every worker, and no worker outlives the main process.

:func:`guard` is entered by ``main()`` around the work of one level. Inside it:

- ``SIGINT`` and ``SIGTERM`` raise :class:`~bids_ketamine_fc.exceptions.Interrupted` in the main
  process (a ``KeyboardInterrupt``, so that no ``except Exception`` of nipype or of the analyses
  takes it for a failed step);
- every process forked from the main process (nipype's ``MultiProc`` workers) ignores ``SIGINT``
  (a terminal sends Ctrl-C to the whole process group: the main process alone decides), dies on
  ``SIGTERM`` (the default), and exits when the main process dies, even by ``kill -9``: Linux's
  parent-death signal when the fork came from the main thread, and everywhere a watchdog thread
  that checks the parent process every :data:`WATCH_INTERVAL` seconds;
- on the way out of an interruption, :func:`stop_workers` ends the workers started inside the guard
  (``SIGTERM``, then ``SIGKILL`` after :data:`GRACE` seconds).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

from bids_ketamine_fc.exceptions import Interrupted

LOGGER = logging.getLogger("bids_ketamine_fc")

#: Seconds a worker has to end after ``SIGTERM`` before it is killed.
GRACE = 3.0
#: Seconds between two checks of a worker that its main process is alive.
WATCH_INTERVAL = 1.0
_PR_SET_PDEATHSIG = 1

# State shared with the at-fork hooks (registered once per process: they cannot be removed).
_STATE = {"main_pid": None, "hooked": False, "interrupted": None, "fork_from_main": False}


def _raise_interrupted(signum, frame) -> None:
    if os.getpid() != _STATE["main_pid"]:  # a forked child before its hook reset the handlers
        if signum == signal.SIGINT:
            return
        os._exit(128 + signum)
    if _STATE["interrupted"] is None:
        _STATE["interrupted"] = signum
        # A second Ctrl-C while the workers are being stopped must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)


def _before_fork() -> None:
    _STATE["fork_from_main"] = threading.current_thread() is threading.main_thread()


def _after_fork_in_child() -> None:
    parent = _STATE["main_pid"]
    if parent is None:  # not inside a guard
        return
    _STATE["main_pid"] = None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux") and _STATE["fork_from_main"]:
        # The parent-death signal follows the thread that forked: only the main thread lives
        # as long as the process.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the main process died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL)
        if os.getppid() != parent:
            os._exit(1)


def interrupted_by() -> int | None:
    """Return the signal that interrupted the current guard, or None."""
    return _STATE["interrupted"]


@contextlib.contextmanager
def guard():
    """Handle ``SIGINT``/``SIGTERM`` and protect against orphaned workers inside the block.

    Outside the main thread (where Python cannot set signal handlers) the block runs unguarded.

    Raises
    ------
    Interrupted
        When ``SIGINT`` or ``SIGTERM`` arrives; the workers started inside are stopped first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _STATE["hooked"]:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _STATE["hooked"] = True
    before = set(multiprocessing.active_children())
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _STATE.update(main_pid=os.getpid(), interrupted=None)
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    except Interrupted:
        stop_workers(before)
        raise
    finally:
        _STATE["main_pid"] = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_workers(keep: set | None = None, grace: float = GRACE) -> int:
    """End the multiprocessing children of this process (except ``keep``); return how many.

    ``SIGTERM`` first; those still alive after ``grace`` seconds get ``SIGKILL``.
    """
    children = [p for p in multiprocessing.active_children() if p not in (keep or set())]
    for child in children:
        with contextlib.suppress(OSError):
            child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            with contextlib.suppress(OSError):
                child.kill()
            child.join(1.0)
    _join_pool_managers(grace)
    if children:
        LOGGER.debug("Stopped %d worker process(es).", len(children))
    return len(children)


def _join_pool_managers(timeout: float) -> None:
    """Let process pools notice their dead workers now, while their messages still reach the log."""
    from concurrent.futures import process

    manager = getattr(process, "_ExecutorManagerThread", None)  # private: absent in some versions
    if manager is None:
        return
    for thread in threading.enumerate():
        if isinstance(thread, manager):
            thread.join(timeout)
