"""How the participant workflow runs: here, on a pool of processes, or as ``--use-plugin`` says.

The plugin file is fMRIPrep's and XCP-D's: YAML (or JSON) with ``plugin`` (a nipype plugin name:
``MultiProc``, ``SLURM``, ``SGE``, ``PBS``, ``LSF``...) and optional ``plugin_args`` (passed to the
plugin as they are). It always wins over the choice below; ``--nprocs`` and ``--mem-gb`` only fill
in ``n_procs`` and ``memory_gb`` of the multiprocessing plugins when the file leaves them out.

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
from pathlib import Path

from nipype.pipeline.plugins.multiproc import MultiProcPlugin

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import MissingInputError, UsageError

#: Longest wait of the scheduling loop for a job to finish, in seconds.
MAX_WAIT = 2.0
#: Plugins that run the nodes here or in child processes; others submit to a scheduler.
LOCAL_PLUGINS = ("Linear", "MultiProc", "LegacyMultiProc", "WaitingMultiProc")
#: Seconds between two polls of a scheduler's queue (nipype's default; ``squeue``, ``qstat``...).
SCHEDULER_POLL = 2.0


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


def choose_plugin(settings: Settings, n_runs: int, status_callback=None):
    """Return the nipype plugin (name or instance) and its arguments for ``n_runs`` runs.

    Parameters
    ----------
    settings : Settings
        ``nipype_plugin`` and ``plugin_args`` (``--use-plugin``), ``nprocs`` and ``mem_gb``.
    n_runs : int
        Runs in the workflow (one ``DenoiseRun`` node each).
    status_callback : callable, optional
        nipype's ``status_callback`` (:class:`~bids_ketamine_fc.cli.status.ParticipantStatus`).

    Returns
    -------
    plugin : str or nipype plugin
    plugin_args : dict
    """
    callback = {"status_callback": status_callback} if status_callback is not None else {}
    if settings.nipype_plugin is not None:  # --use-plugin: the user's file always wins
        plugin_args = {**dict(settings.plugin_args), **callback}
        if settings.nipype_plugin in ("MultiProc", "LegacyMultiProc"):
            plugin_args.setdefault("n_procs", settings.nprocs)
            if settings.mem_gb:
                plugin_args.setdefault("memory_gb", settings.mem_gb)
        return settings.nipype_plugin, plugin_args
    if settings.nprocs == 1 or n_runs <= 1:
        return "Linear", callback
    # "mem_thread" starts the small jobs first: a participant's outputs step outranks the next
    # participant's runs, so finished participants reach OUTPUT_DIR early (and on Ctrl-C).
    plugin_args = {
        "n_procs": settings.nprocs,
        "raise_insufficient": False,
        "scheduler": "mem_thread",
        **callback,
    }
    if settings.mem_gb:
        plugin_args["memory_gb"] = settings.mem_gb
    return WaitingMultiProcPlugin(plugin_args=plugin_args), plugin_args


def plugin_name(plugin) -> str:
    """Return a plugin's name as nipype spells it (``"SLURM"``), given its name or an instance."""
    return plugin if isinstance(plugin, str) else type(plugin).__name__.removesuffix("Plugin")


def read_plugin_file(path: Path) -> tuple[str, dict]:
    """Read a nipype plugin file and check it names a plugin that waits for its jobs.

    Parameters
    ----------
    path : Path
        The ``--use-plugin`` file.

    Returns
    -------
    (plugin, plugin_args) : tuple of str and dict

    Raises
    ------
    MissingInputError
        The file cannot be read.
    UsageError
        A malformed file, an unknown plugin, or a plugin that submits the graph and
        exits (``SLURMGraph``, ``SGEGraph``, ``PBSGraph``, ``CondorDAGMan``): the group level and the
        dataset description need the participant outputs once the run returns.
    """
    import yaml
    from nipype.pipeline import plugins
    from nipype.pipeline.plugins.base import GraphPluginBase

    option = f"--use-plugin {path}"
    try:
        content = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise MissingInputError(f"{option}: cannot read the file ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise UsageError(f"{option} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(content, dict) or not isinstance(content.get("plugin"), str):
        raise UsageError(f"{option}: expected a mapping with 'plugin' (e.g. plugin: SLURM)")
    name, plugin_args = content["plugin"], content.get("plugin_args") or {}
    if not isinstance(plugin_args, dict):
        raise UsageError(f"{option}: 'plugin_args' must be a mapping of plugin arguments")
    known = sorted(n.removesuffix("Plugin") for n in dir(plugins) if n.endswith("Plugin"))
    plugin_class = getattr(plugins, f"{name}Plugin", None)
    if plugin_class is None:
        raise UsageError(f"{option}: unknown nipype plugin {name!r}; use one of {known}")
    if issubclass(plugin_class, GraphPluginBase):
        raise UsageError(
            f"{option}: plugin {name} submits the jobs and exits without waiting for them; "
            "use a plugin that waits (SLURM, SGE, PBS, LSF, MultiProc)"
        )
    return name, plugin_args
