"""Progress bars with the time left (tqdm), shown on a terminal only.

In a log file or a pipe a bar is noise, so it is drawn only when its stream is a terminal; the
group level's long steps (permutations, leave-one-out folds) log their total time either way.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str = "it", stream=None, enabled: bool = True):
    """Return a tqdm bar over ``total`` steps: elapsed time, rate and the estimated time left.

    Parameters
    ----------
    total : int
    desc : str
        What is counted (``"seed PCC, groups: permutations"``).
    unit : str
    stream : file, optional
        Where the bar goes (standard error by default); disabled unless it is a terminal.
    enabled : bool
        False gives a bar that draws nothing.
    """
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        disable=not (enabled and terminal),
        leave=False,
        mininterval=0.5,
        dynamic_ncols=True,
    )
