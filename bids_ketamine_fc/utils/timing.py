"""Wall time of the stages of a computation, for the log and ``benchmarks/``."""

from __future__ import annotations

import time


class StageClock:
    """Record the wall time between successive calls of :meth:`lap`, by stage name.

    ``clock.lap("read")`` after reading adds the seconds since the previous lap (or since the
    clock was made) to ``clock.seconds["read"]``.
    """

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> float:
        """Add the time since the previous lap (or the start) to ``stage``; return it."""
        now = time.perf_counter()
        elapsed = now - self._last
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + elapsed, 4)
        self._last = now
        return elapsed

    def total(self) -> float:
        """Return the seconds since the clock started."""
        return time.perf_counter() - self._start
