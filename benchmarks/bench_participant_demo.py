"""Participant level of the 24-participant demo: wall time against the sum of the bare loads.

The demo's runs are small (49x58x49x200 at 4 mm), so this measures what does not scale with the
data: start-up, the preflight over 24 participants, nipype and the pool of worker processes.
Each round times nibabel loading every run one after the other (in a child process), then the
whole participant command line with ``--nprocs 1`` and with ``--nprocs <cores>``.

    python benchmarks/bench_participant_demo.py [--rounds 2] [--workdir /tmp/bench_demo]

The demo is generated on the first call (a few minutes); TEMPLATEFLOW_HOME is set to its home.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def time_loads(fmriprep: Path) -> float:
    """Seconds nibabel takes to load every preprocessed run as float32 (run in a child process)."""
    import nibabel as nb
    import numpy as np

    total = 0.0
    for bold in sorted(fmriprep.glob("sub-*/func/*_desc-preproc_bold.nii.gz")):
        start = time.perf_counter()
        data = nb.load(bold).get_fdata(dtype=np.float32)
        total += time.perf_counter() - start
        del data
    return total


def run_cli(root: Path, nprocs: int) -> float:
    """Run the participant level on the demo; return its wall time in seconds."""
    env = dict(os.environ, TEMPLATEFLOW_HOME=str(root / "templateflow"), NIPYPE_NO_ET="1")
    env["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    out, work = root / f"out-nprocs{nprocs}", root / f"work{time.time_ns()}"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        *(sys.executable, "-m", "bids_ketamine_fc.cli.run", str(root / "bids"), str(out)),
        *("participant", "-w", str(work), "--nprocs", str(nprocs)),
    ]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_demo"))
    parser.add_argument("--nprocs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--loads", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loads:
        return print(time_loads(args.loads))
    root = args.workdir.absolute()
    if not (root / "bids" / "participants.tsv").exists():
        subprocess.run([sys.executable, "-m", "bids_ketamine_fc.demo", str(root)], check=True)
    fmriprep = root / "bids" / "derivatives" / "fmriprep"
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratios: dict[int, list[float]] = {1: [], args.nprocs: []}
    for round_ in range(1, args.rounds + 1):
        loads = subprocess.run(
            [sys.executable, __file__, "--loads", str(fmriprep)], check=True, capture_output=True
        )
        loads_s = float(loads.stdout)
        line = f"round {round_}: sum of the 24 bare loads {loads_s:.2f} s"
        for nprocs in ratios:
            wall = run_cli(root, nprocs)
            ratios[nprocs].append(wall / loads_s)
            line += f"; --nprocs {nprocs} {wall:.2f} s = {wall / loads_s:.2f}x"
        print(line, flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for nprocs, values in ratios.items():
        print(f"time ratio --nprocs {nprocs}: median {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
