"""Bad input and interruption at the participant level (issue 11: one test per case).

Every user-caused failure ends with one line on standard error that names the file or option and
the fix, with the status of ``docs/usage.rst``; a bad participant is reported and skipped while the
others complete; Ctrl-C and SIGTERM stop every worker and keep the completed participants; no
worker outlives ``kill -9``; a rerun resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import make_dataset

from bids_ketamine_fc.cli.run import main


def run_cli(capsys, root, bids, *extra, level="participant"):
    argv = [bids, root / "out", level, "-w", root / "work", "--seeds", root / "seeds.json"]
    code = main([str(a) for a in [*argv, *extra]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The closing line; every earlier line of standard error is a warning, none a traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("bids_ketamine_fc: error: "), err
    assert all(" WARNING " in line for line in lines[:-1]), err
    assert "Traceback" not in err
    return lines[-1]


def nothing_written(out: Path) -> bool:
    return not out.exists() or not [p for p in out.iterdir() if p.name != "logs"]


def test_bad_participants_among_good_ones_are_skipped_and_summarised(tmp_path, capsys):
    """Truncated gzip (found while reading) and random bytes (found before): the others complete."""
    bids = make_dataset(tmp_path, subjects=("01", "02", "03"), n_volumes=40)
    truncated = next(bids.rglob("sub-02_*_desc-preproc_bold.nii.gz"))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage = next(bids.rglob("sub-03_*_desc-brain_mask.nii.gz"))
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    code, out, err = run_cli(capsys, tmp_path, bids)
    assert code == 3, err
    line = error_line(err)
    assert "2 participant(s) failed (sub-02, sub-03)" in line and "summary-participant" in line
    assert truncated.name in err and "truncated or corrupt" in err
    assert garbage.name in err and "not a readable NIfTI" in err
    assert "sub-01: started" in out and "sub-01: finished" in out
    assert list((tmp_path / "out/sub-01/func").glob("sub-01_task-rest_*_boldmap.nii.gz"))
    assert (tmp_path / "out/dataset_description.json").exists()
    assert not (tmp_path / "out/sub-02").exists() and not (tmp_path / "out/sub-03").exists()
    summary = pd.read_csv(next((tmp_path / "out/logs").glob("summary-participant-*.tsv")), sep="\t")
    assert dict(zip(summary["participant_id"], summary["status"], strict=True)) == {
        "sub-01": "completed",
        "sub-02": "failed",
        "sub-03": "failed",
    }
    log = (tmp_path / "out/logs/participant.log").read_text()
    assert "Traceback" in log  # the details stay in the log


def test_every_input_problem_of_every_run_in_one_pass(tmp_path, capsys):
    """n/a in the confounds of two runs, one with a corrupt mask, one confounds table missing:
    every problem named at once, nothing written."""
    bids = make_dataset(tmp_path, subjects=("01", "02", "03"), n_volumes=40)
    tables = sorted(bids.rglob("*_desc-confounds_timeseries.tsv"))
    for tsv in tables[:2]:
        table = pd.read_csv(tsv, sep="\t")
        table.loc[5, "rot_x"] = np.nan
        table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    tables[2].unlink()
    mask = next(bids.rglob("sub-02_*_desc-brain_mask.nii.gz"))
    mask.write_bytes(b"\x1f\x8b" + bytes(100))
    code, _, err = run_cli(capsys, tmp_path, bids)
    line = error_line(err)
    assert code == 65  # data errors (65) and a missing input (66): reported as a data error
    assert tables[0].name in line and tables[1].name in line and "rot_x" in line
    assert mask.name in line and "no confounds table found" in line
    assert nothing_written(tmp_path / "out")


def test_session_label_on_a_dataset_without_sessions(tmp_path, capsys):
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    code, _, err = run_cli(capsys, tmp_path, bids, "--session-label", "01")
    line = error_line(err)
    assert code == 18 and "--session-label 01" in line and "has no sessions" in line
    assert "task" not in line.split("error: ")[1]  # the task and space are not blamed


@pytest.mark.parametrize(
    ("where", "what"),
    [("out", "OUTPUT_DIR"), ("work", "-w/--work-dir"), ("out/logs", "OUTPUT_DIR")],
)
def test_a_file_where_an_output_folder_should_be(tmp_path, capsys, where, what):
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("not a folder")
    start = time.monotonic()
    code, _, err = run_cli(capsys, tmp_path, bids)
    line = error_line(err)
    assert code == 73 and what in line and "is a file, not a folder" in line
    assert time.monotonic() - start < 30  # refused before any work
    assert not (tmp_path / "out/sub-01").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        code, _, err = run_cli(capsys, tmp_path, bids)
    finally:
        (tmp_path / "out").chmod(0o755)
    assert code == 73 and "OUTPUT_DIR" in error_line(err) and "cannot write" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_read_only_mounted_output_folder(tmp_path):
    """As root (CI), chmod does not stop writes: OUTPUT_DIR is a read-only bind mount instead."""
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "bids_ketamine_fc.cli.run", bids, out, "participant", "-w",
               tmp_path / "work", "--seeds", tmp_path / "seeds.json"]  # fmt: skip
    script = (
        'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" || exit 99; '
        'touch "$0/probe" 2>/dev/null && exit 98; exec "$@"'
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, out, *map(str, command)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode in (98, 99):
        pytest.skip("no read-only bind mount here (unshare or mount not permitted)")
    assert done.returncode == 73, done.stderr
    line = error_line(done.stderr)
    assert "OUTPUT_DIR" in line and "cannot write" in line and "Read-only file system" in line
    assert not list(out.iterdir())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--smoothing-fwhm", "inf"),
        ("--smoothing-fwhm", "nan"),
        ("--smoothing-fwhm", "1e6"),
        ("--smoothing-fwhm", "1000"),
        ("--fd-threshold", "0"),
        ("--dummy-scans", "-1"),
        ("--mem-gb", "0"),
        ("--random-seed", "-1"),
    ],
)
def test_impossible_option_values_are_refused_before_any_work(tmp_path, capsys, option, value):
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    try:
        code, _, err = run_cli(capsys, tmp_path, bids, option, value)
    except SystemExit as exc:  # refused by the parser itself
        code, err = exc.code, capsys.readouterr().err
    assert code == 64
    line = error_line(err)
    assert option in line
    assert nothing_written(tmp_path / "out")


def test_implausible_values_warn_and_the_console_shows_progress(tmp_path, capsys):
    """25 mm smoothing and 3 mm FD work with a warning; all-zero motion is flagged; -v adds our
    debug lines but never nipype's."""
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    tsv = next(bids.rglob("*_desc-confounds_timeseries.tsv"))
    table = pd.read_csv(tsv, sep="\t")
    motion = [c for c in table.columns if c.startswith(("trans_", "rot_"))]
    table[motion] = 0.0
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    extra = ("--smoothing-fwhm", "25", "--fd-threshold", "3", "-v")
    code, out, err = run_cli(capsys, tmp_path, bids, *extra)
    assert code == 0, err
    assert "--smoothing-fwhm 25 mm is wider than usual" in err
    assert "--fd-threshold 3 mm scrubs almost nothing" in err
    assert "motion column(s) trans_x" in err and "are all zero" in err
    assert "sub-01: started" in out and "sub-01: finished" in out
    assert "nipype.workflow" not in out + err and "[Node]" not in out + err
    assert "[Node]" in (tmp_path / "out/logs/participant.log").read_text()


# --- interruption -------------------------------------------------------------------------------


def _start(root: Path, bids: Path) -> subprocess.Popen:
    """The command line in its own process group (as a shell job: Ctrl-C reaches every process)."""
    command = [sys.executable, "-m", "bids_ketamine_fc.cli.run", str(bids), str(root / "out"),
               "participant", "-w", str(root / "work"), "--seeds", str(root / "seeds.json"),
               "--nprocs", "2"]  # fmt: skip
    env = dict(os.environ, NIPYPE_NO_ET="1")
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(child) for child in listing.read_text().split()}
        except OSError:
            continue
    return _alive(found)


def _alive(pids) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _finished(out: Path) -> set[str]:
    return {p.stem for p in out.glob("sub-*.html")}


def _interrupt_when_one_more_finished(root, bids, signum) -> tuple[subprocess.Popen, set]:
    before = _finished(root / "out")
    process = _start(root, bids)
    _wait_for(lambda: len(_finished(root / "out")) > len(before) or process.poll() is not None)
    workers = _children(process.pid)
    os.killpg(process.pid, signum)
    process.wait(timeout=60)
    return process, workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigint_then_sigterm_mid_run_keep_completed_participants_and_resume(tmp_path, capsys):
    subjects = tuple(f"{i:02d}" for i in range(1, 7))
    bids = make_dataset(tmp_path, subjects=subjects, n_volumes=100)
    out = tmp_path / "out"
    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        process, workers = _interrupt_when_one_more_finished(tmp_path, bids, signum)
        stdout, stderr = process.communicate()
        assert process.returncode == status, stdout + stderr
        name = signal.Signals(signum).name
        assert (
            stderr.strip()
            .splitlines()[-1]
            .startswith(f"bids_ketamine_fc: error: interrupted by {name}")
        )
        assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr
        assert "BrokenProcessPool" not in stdout + stderr
        assert workers and not _alive(workers)
        done = _finished(out)
        assert 0 < len(done) < len(subjects), "the run was not interrupted in the middle"
        for report in done:
            assert list((out / report / "func").glob(f"{report}_task-rest_*_boldmap.nii.gz"))
        assert not list(out.rglob(".*.partial-*"))
    code, stdout, err = run_cli(capsys, tmp_path, bids, "--nprocs", "2")
    assert code == 0, err
    assert _finished(out) == {f"sub-{s}" for s in subjects}
    assert "already complete (reused from the work folder)" in stdout


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_kill_9_leaves_no_worker_behind(tmp_path):
    bids = make_dataset(tmp_path, subjects=("01", "02", "03", "04"), n_volumes=100)
    process = _start(tmp_path, bids)
    _wait_for(lambda: _children(process.pid) or process.poll() is not None)
    workers = _children(process.pid)
    assert workers, f"no worker started: {process.communicate()}"
    process.kill()
    process.wait(timeout=10)
    _wait_for(lambda: not _alive(workers), timeout=10)
