"""Cost of the reports: one participant (97x115x97x300 run, nine seeds) and the demo's group.

Goals (issue 10): the participant report takes at most 15 s, and a few seconds is the aim because
it runs inside the participant level (issue 13 wants that level at 2x a bare load of the run);
the group report of the demo (24 participants, nine seeds, 20 ICA components) at most 60 s.

``participant``: the run of ``bench_participant.py`` (generated in its work folder if absent) goes
through the participant level once; then, in fresh child processes, each round times the bare
nibabel load of the run (the baseline), the import of the report modules and the drawing of the
report from the run's results, and prints the ratio to the load.

``group``: the demo (``--demo DIR``, generated and run through both levels when it has no group
output) is read back; each round times, in a fresh child process, the import and the drawing of
the figures and ``group.html``, against a bare load of the subject-level maps.

    python benchmarks/bench_reports.py participant [--rounds 3] [--workdir /tmp/bench_participant]
    python benchmarks/bench_reports.py group --demo DIR [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def child(*args: str, env: dict | None = None) -> dict:
    """Run this script in a child process; return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, env=env
    )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _participant_once(out: Path, work: Path) -> dict:
    """Child: time a bare load of the run, the report imports and the report itself."""
    import nibabel as nb
    import numpy as np

    results = sorted(work.rglob("denoise_*/result.json"))
    result = json.loads(results[0].read_text())
    bold = next((out.parent / "bids").rglob("*_desc-preproc_bold.nii.gz"))
    start = time.perf_counter()
    nb.load(bold).get_fdata(dtype=np.float32)
    load = time.perf_counter() - start
    start = time.perf_counter()
    from bids_ketamine_fc.reports.citation import participant_markdown, to_html
    from bids_ketamine_fc.reports.participant import write_participant_report

    imports = time.perf_counter() - start
    start = time.perf_counter()
    settings = (out / "logs/config-participant.json").read_text()
    maps = {
        path.name.split("_seed-")[1].split("_")[0]: str(path)
        for path in sorted((out / "sub-01/func").glob("*_stat-fisherz_boldmap.nii.gz"))
    }
    runs = [{"run": "sub-01_task-rest", "qc": result["qc"], "report": result["report"]}]
    methods = to_html(participant_markdown(json.loads(settings)))
    write_participant_report("01", runs, maps, out / "sub-01_bench.html", settings, methods)
    return {"load": load, "imports": imports, "report": time.perf_counter() - start}


def participant(args) -> None:
    root = args.workdir.absolute()
    env = dict(
        os.environ,
        TEMPLATEFLOW_HOME=str(root / "templateflow"),
        NIPYPE_NO_ET="1",
        TEMPLATEFLOW_AUTOUPDATE="0",
    )
    if not (root / f"generated-{args.volumes}").exists():
        subprocess.run(
            [
                sys.executable,
                str(HERE / "bench_participant.py"),
                "--prepare",
                "--volumes",
                str(args.volumes),
                "--workdir",
                str(root),
            ],
            check=True,
        )
        (root / f"generated-{args.volumes}").touch()
    out, work = root / "out-reports", root / "work-reports"
    if not (out / "sub-01.html").exists():
        command = [
            sys.executable,
            "-m",
            "bids_ketamine_fc.cli.run",
            str(root / "bids"),
            str(out),
            "participant",
            "-w",
            str(work),
            "--nprocs",
            "1",
        ]
        subprocess.run(command, check=True, env=env)
    print(f"load average before: {_load_avg()}")
    rounds = []
    for k in range(args.rounds):
        times = child("--child-participant", str(out), str(work), env=env)
        rounds.append(times)
        print(
            f"round {k + 1}: load {times['load']:.2f} s, imports {times['imports']:.2f} s, "
            f"report {times['report']:.2f} s = {times['report'] / times['load']:.2f}x the load "
            f"(with imports {(times['report'] + times['imports']) / times['load']:.2f}x)",
            flush=True,
        )
    print(f"load average after: {_load_avg()}")
    report = statistics.median(r["report"] for r in rounds)
    imports = statistics.median(r["imports"] for r in rounds)
    print(f"participant report: median {report:.2f} s + imports {imports:.2f} s (goal <= 15 s)")


def _group_once(out: Path) -> dict:
    """Child: time a bare load of the subject maps, the report imports and the report."""
    import nibabel as nb
    import numpy as np

    start = time.perf_counter()
    for path in sorted(out.glob("sub-*/func/*_stat-fisherz_boldmap.nii.gz")):
        np.asarray(nb.load(path).dataobj, dtype=np.float32)
    load = time.perf_counter() - start
    start = time.perf_counter()
    import pandas as pd

    from bids_ketamine_fc.config import Settings
    from bids_ketamine_fc.group.maps import find_subject_maps
    from bids_ketamine_fc.reports.group import write_group_report

    imports = time.perf_counter() - start
    values = json.loads((out / "logs/config-group.json").read_text())
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    for key in ("bids_dir", "output_dir", "fmriprep_dir", "work_dir", "phenotype", "roi"):
        fields[key] = Path(fields[key]) if fields.get(key) else None
    settings = Settings(**fields)
    group = out / "group"

    def read(name):
        return pd.read_csv(group / name, sep="\t", na_values=["n/a"])

    start = time.perf_counter()
    write_group_report(
        settings,
        find_subject_maps(settings),
        read("subjects.tsv"),
        read("clusters.tsv"),
        read("group_comparison.tsv"),
    )
    return {"load": load, "imports": imports, "report": time.perf_counter() - start}


def group(args) -> None:
    demo = args.demo.absolute()
    out = demo / "output"
    if not (out / "group" / "group.html").exists():
        env = dict(os.environ, DEMO_DIR=str(demo))
        subprocess.run(["bash", str(HERE.parent / "scripts/demo.sh")], check=True, env=env)
    env = dict(
        os.environ,
        TEMPLATEFLOW_HOME=str(demo / "templateflow"),
        NIPYPE_NO_ET="1",
        TEMPLATEFLOW_AUTOUPDATE="0",
    )
    print(f"load average before: {_load_avg()}")
    rounds = []
    for k in range(args.rounds):
        times = child("--child-group", str(out), env=env)
        rounds.append(times)
        print(
            f"round {k + 1}: bare load of the subject maps {times['load']:.2f} s, imports "
            f"{times['imports']:.2f} s, group report {times['report']:.2f} s",
            flush=True,
        )
    print(f"load average after: {_load_avg()}")
    report = statistics.median(r["report"] for r in rounds)
    print(f"group report: median {report:.2f} s (goal <= 60 s)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-participant":
        return print(json.dumps(_participant_once(Path(sys.argv[2]), Path(sys.argv[3]))))
    if len(sys.argv) > 1 and sys.argv[1] == "--child-group":
        return print(json.dumps(_group_once(Path(sys.argv[2]))))
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    one = sub.add_parser("participant")
    one.add_argument("--volumes", type=int, default=300)
    one.add_argument("--rounds", type=int, default=3)
    one.add_argument("--workdir", type=Path, default=Path("/tmp/bench_participant"))
    many = sub.add_parser("group")
    many.add_argument("--demo", type=Path, required=True, help="demo folder (made if needed)")
    many.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    (participant if args.which == "participant" else group)(args)


if __name__ == "__main__":
    main()
