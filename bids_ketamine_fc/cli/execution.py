"""How the participant workflow runs: in this process, or on a pool of worker processes.

A workflow with a single run is a chain (the run, then the subject's outputs) that no pool can
speed up, so it runs in this process (nipype's ``Linear`` plugin), as with ``--nprocs 1``. Several
runs with ``--nprocs`` above 1 go to :class:`WaitingMultiProcPlugin`: nipype's ``MultiProc``,
whose scheduling loop waits for a job to finish instead of waking up every ``poll_sleep_duration``.
nipype runs a full garbage collection at each wake-up with a free processor (0.1-0.4 s of CPU in a
process holding pybids' index and a workflow of 24 participants); the objects that exist when the
workflow starts are frozen out of those collections (:func:`gc.freeze`), which also keeps the
forked workers from copying pages the collector would touch.
"""

from __future__ import annotations

import gc
from concurrent.futures import FIRST_COMPLETED, wait

from nipype.pipeline.plugins.multiproc import MultiProcPlugin

from bids_ketamine_fc.config import Settings

#: Longest wait of the scheduling loop for a job to finish, in seconds.
MAX_WAIT = 2.0


class WaitingMultiProcPlugin(MultiProcPlugin):
    """nipype's ``MultiProc`` that sleeps until a running job finishes when none can start."""

    def run(self, graph, config, updatehash=False):
        """Run the graph, with the objects existing now left out of garbage collections."""
        gc.collect()
        gc.freeze()
        try:
            return super().run(graph, config, updatehash=updatehash)
        finally:
            gc.unfreeze()

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        before = self._progress()
        super()._send_procs_to_workers(updatehash=updatehash, graph=graph)
        if before is None or self._progress() != before:
            return
        running = [future for future in self._task_obj.values() if not future.done()]
        if running:
            wait(running, timeout=MAX_WAIT, return_when=FIRST_COMPLETED)

    def _progress(self) -> tuple[int, int] | None:
        """Jobs submitted and nodes started so far (None if nipype's internals have changed)."""
        try:
            return int(self._taskid), int(self.proc_done.sum())
        except (AttributeError, TypeError):
            return None


def choose_plugin(settings: Settings, n_runs: int):
    """Return the nipype plugin (name or instance) and its arguments for ``n_runs`` runs.

    Parameters
    ----------
    settings : Settings
        ``nprocs`` and ``mem_gb`` are used.
    n_runs : int
        Runs in the workflow (one ``DenoiseRun`` node each).

    Returns
    -------
    plugin : str or nipype plugin
    plugin_args : dict
    """
    if settings.nprocs == 1 or n_runs <= 1:
        return "Linear", {}
    plugin_args = {"n_procs": settings.nprocs, "raise_insufficient": False}
    if settings.mem_gb:
        plugin_args["memory_gb"] = settings.mem_gb
    return WaitingMultiProcPlugin(plugin_args=plugin_args), plugin_args
