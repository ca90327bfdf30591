"""Run the command line on a generated demo (``bids_ketamine_fc.demo``) in a subprocess."""

import os
import subprocess
import sys


def run_level(root, level, *extra, bids=None):
    """Run the command line on the demo in ``root`` (TemplateFlow home beside it); return OUTPUT_DIR."""
    env = dict(os.environ, TEMPLATEFLOW_HOME=str(root / "templateflow"),
               TEMPLATEFLOW_AUTOUPDATE="0", NIPYPE_NO_ET="1")  # fmt: skip
    out = root / "out"
    command = [sys.executable, "-m", "bids_ketamine_fc.cli.run", str(bids or root / "bids"),
               str(out), level, "-w", str(root / "work"), *extra]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def run_participant(root, space="MNI152NLin2009cAsym", *extra):
    return run_level(root, "participant", "--nprocs", "2", "--space", space, *extra)
