"""How the participant workflow is executed: in process, or on a pool that waits for its jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins.multiproc import MultiProcPlugin

from bids_ketamine_fc.cli.execution import WaitingMultiProcPlugin, choose_plugin
from bids_ketamine_fc.config import Settings


def _settings(tmp_path: Path, **changes) -> Settings:
    return Settings(tmp_path, tmp_path / "out", "participant", tmp_path, tmp_path / "w", **changes)


def test_one_run_or_one_process_runs_in_this_process(tmp_path):
    assert choose_plugin(_settings(tmp_path, nprocs=1), 5) == ("Linear", {})
    assert choose_plugin(_settings(tmp_path, nprocs=4), 1) == ("Linear", {})


def test_several_runs_go_to_the_waiting_pool(tmp_path):
    plugin, args = choose_plugin(_settings(tmp_path, nprocs=3, mem_gb=7.5), 2)
    try:
        assert isinstance(plugin, WaitingMultiProcPlugin)
        assert args == {
            "n_procs": 3,
            "raise_insufficient": False,
            "scheduler": "mem_thread",  # small jobs first: a finished participant's outputs
            "memory_gb": 7.5,
        }
        assert (plugin.processors, plugin.memory_gb) == (3, 7.5)
    finally:
        plugin.pool.shutdown()


def _pause(seconds):
    import time

    time.sleep(seconds)
    return seconds


def _run_counting_wakeups(plugin_class, base_dir: Path) -> tuple[list, int]:
    """Run three 1 s jobs on two processes with 0.1 s polling; count the scheduler's wake-ups."""
    workflow = pe.Workflow(name="pauses", base_dir=str(base_dir))
    for number in range(3):
        node = pe.Node(niu.Function(function=_pause), name=f"pause{number}")
        node.inputs.seconds = 1.0
        workflow.add_nodes([node])
    workflow.config["execution"].update(
        {"poll_sleep_duration": 0.1, "crashdump_dir": str(base_dir)}
    )
    calls = []

    class Counting(plugin_class):
        def _send_procs_to_workers(self, updatehash=False, graph=None):
            calls.append(1)
            return super()._send_procs_to_workers(updatehash=updatehash, graph=graph)

    graph = workflow.run(plugin=Counting(plugin_args={"n_procs": 2}))
    return [node.result.outputs.out for node in graph.nodes()], len(calls)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_waiting_pool_runs_jobs_without_polling(tmp_path):
    outputs, waiting = _run_counting_wakeups(WaitingMultiProcPlugin, tmp_path / "waiting")
    assert outputs == [1.0, 1.0, 1.0]
    _, polling = _run_counting_wakeups(MultiProcPlugin, tmp_path / "polling")
    # nipype's loop wakes up every 0.1 s (plus a garbage collection) for 2 s of jobs, 22 times on
    # an idle machine; this one when a job ends (or every 2 s): 5 times
    assert waiting <= 8
    assert polling > waiting
