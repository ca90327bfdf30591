"""The participant level through a real Slurm cluster (``--use-plugin``, nipype's SLURM plugin).

A one-node cluster on this machine (:mod:`slurm_cluster`) runs the participant level of two demo
participants; every output equals, byte for byte, that of the default MultiProc run
(``demo_run``). ``.ci/run`` installs Slurm and munge from Debian; where the daemons cannot start,
the test is skipped and says why.
"""

from __future__ import annotations

import getpass
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slurm():
    cluster = SlurmCluster()
    try:
        cluster.start()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as err:
        cluster.stop()
        pytest.skip(f"no local Slurm cluster: {err}")
    yield cluster
    cluster.stop()


def _files(out: Path, subjects: tuple[str, ...]) -> dict[str, bytes]:
    """The participants' outputs but their HTML reports (which print the run's settings)."""
    return {
        str(path.relative_to(out)): path.read_bytes()
        for subject in subjects
        for path in sorted((out / f"sub-{subject}").rglob("*"))
        if path.is_file() and path.suffix != ".html"
    }


def test_slurm_plugin_gives_the_multiproc_outputs(slurm, demo_run, tmp_path):
    root, multiproc_out = demo_run  # the demo's participant level, run with MultiProc
    env = dict(slurm.env, TEMPLATEFLOW_HOME=str(root / "templateflow"),
               TEMPLATEFLOW_AUTOUPDATE="0", NIPYPE_NO_ET="1")  # fmt: skip
    env.setdefault("LOGNAME", getpass.getuser())  # nipype names Slurm jobs after it
    plugin = tmp_path / "slurm.yml"
    plugin.write_text("plugin: SLURM\nplugin_args:\n  sbatch_args: --time=10\n")
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, "-m", "bids_ketamine_fc.cli.run", str(root / "bids"), str(out),
               "participant", "--participant-label", "01", "02", "--use-plugin", str(plugin),
               "-w", str(work)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr + slurm.log_tail()
    jobs = list(work.rglob("batch/slurm-*.out"))
    assert len(jobs) == 4, "each participant's two nodes ran as Slurm jobs"
    assert "nipype's SLURM plugin" in (out / "logs" / "participant.log").read_text()
    through_slurm, multiproc = _files(out, ("01", "02")), _files(multiproc_out, ("01", "02"))
    assert len([name for name in multiproc if name.endswith("_boldmap.nii.gz")]) >= 18
    assert sorted(through_slurm) == sorted(multiproc)
    assert [name for name in multiproc if through_slurm[name] != multiproc[name]] == []
    description = "dataset_description.json"
    assert (out / description).read_bytes() == (multiproc_out / description).read_bytes()
