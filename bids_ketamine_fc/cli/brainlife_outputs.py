"""brainlife.io outputs: run the command line, then write the output folders and ``product.json``.

``product.json`` holds brainlife's ``brainlife`` list of messages (``{"type": "success" | "info" |
"warning" | "error", "msg": ...}``, shown on the task's page) and a few key numbers of the run.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from bids_ketamine_fc.exceptions import ExitCode, UserInputError

QC_COLUMNS = ("run", "included", "exclusion_reason", "mean_fd", "n_kept", "dof", "tsnr_median")
CLUSTER_COLUMNS = ("seed", "model", "contrast", "inference", "size_vox", "peak_label", "p_fwe")


def write_json(path: Path, content: dict) -> Path:
    """Write ``content`` as JSON to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, default=_plain) + "\n")
    return path


def _plain(value):
    """JSON for numpy and pandas scalars (NaN becomes null)."""
    number = value.item() if hasattr(value, "item") else value
    return None if isinstance(number, float) and number != number else number


class _Tee(io.TextIOBase):
    """Write to a stream and remember the text (the command line's last error line)."""

    def __init__(self, stream):
        self.stream, self.text = stream, []

    def write(self, text: str) -> int:
        self.text.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def call_main(argv: list[str]) -> tuple[int, str]:
    """Run ``bids_ketamine_fc`` in this process; return its exit status and last stderr line."""
    from bids_ketamine_fc.cli.run import main

    tee, stderr = _Tee(sys.stderr), sys.stderr
    sys.stderr = tee
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: a parameter of config.json is not a valid option
        code = stop.code if isinstance(stop.code, int) else ExitCode.USAGE
    finally:
        sys.stderr = stderr
    lines = [line for line in "".join(tee.text).splitlines() if line.strip()]
    return int(code), lines[-1] if lines else f"bids_ketamine_fc exited with status {code}"


def fail(here: Path, error: UserInputError | str, code: int | None = None) -> int:
    """Write ``product.json`` with the error as its message; return the exit status."""
    message = " ".join(str(error).split())
    if code is None:
        code = int(getattr(error, "exit_code", ExitCode.USAGE))
        print(f"bids_ketamine_fc-brainlife: error: {message}", file=sys.stderr)
    write_json(here / "product.json", {"brainlife": [{"type": "error", "msg": message}]})
    return code


def _copy_report(report: Path, html: Path) -> None:
    """Copy an HTML report to ``html/index.html`` with the local files it links to."""
    shutil.rmtree(html, ignore_errors=True)
    html.mkdir(parents=True)
    text = report.read_text()
    (html / "index.html").write_text(text)
    for link in set(re.findall(r'(?:src|href)="([^"#:]+)"', text)):
        source = report.parent / link
        if source.is_file():
            (html / link).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, html / link)


def participant_product(here: Path, out: Path) -> int:
    """Write ``html/`` (the participant report) and ``product.json`` (QC numbers); return 0."""
    subject = sorted(p.name for p in out.glob("sub-*") if p.is_dir())[0]
    _copy_report(out / f"{subject}.html", here / "html")
    tables = sorted((out / subject).rglob("*_desc-denoising_qc.tsv"))
    qc = pd.concat([pd.read_csv(t, sep="\t") for t in tables], ignore_index=True)
    maps = (out / subject).rglob("*_seed-*.nii.gz")
    seeds = sorted({p.name.split("_seed-")[1].split("_")[0] for p in maps})
    kept = int(qc["included"].sum())
    summary = f"{subject}: {kept} of {len(qc)} runs kept; maps of {len(seeds)} seeds"
    messages = [{"type": "success", "msg": f"{summary} ({', '.join(seeds)})"}]
    messages += [
        {"type": "warning", "msg": f"{row['run']} excluded: {row['exclusion_reason']}"}
        for _, row in qc.iterrows()
        if not row["included"]
    ]
    runs = qc[[c for c in QC_COLUMNS if c in qc]].to_dict(orient="records")
    product = {"brainlife": messages, "subject": subject, "seeds": seeds, "runs": runs}
    write_json(here / "product.json", product)
    return 0


def group_product(here: Path, out: Path) -> int:
    """Write ``group/``, ``html/`` (the group report) and ``product.json``; return 0."""
    group = here / "group"
    shutil.rmtree(group, ignore_errors=True)
    shutil.move(out / "group", group)
    shutil.copytree(out / "logs", group / "logs")
    _copy_report(group / "group.html", here / "html")
    subjects = pd.read_csv(group / "subjects.tsv", sep="\t")
    included = subjects[subjects["included"]]
    counts = {
        "participants": len(subjects),
        "included": len(included),
        "responders": int((included["group"] == "R").sum()),
        "non_responders": int((included["group"] == "NR").sum()),
    }
    analysed = f"{counts['included']} of {counts['participants']} participants analysed"
    groups = f"{counts['responders']} R, {counts['non_responders']} NR"
    messages = [{"type": "success", "msg": f"{analysed} ({groups})"}]
    settings = json.loads((group / "logs" / "config-group.json").read_text())
    clusters = _clusters(group, settings["cluster_p"], messages)
    write_json(here / "product.json", {"brainlife": messages, **counts, "clusters": clusters})
    return 0


def _clusters(group: Path, cluster_p: float, messages: list[dict]) -> dict:
    """Count the significant clusters per inference, describe the strongest (adds a message)."""
    table = pd.read_csv(group / "clusters.tsv", sep="\t")
    significant = table[pd.to_numeric(table["p_fwe"], errors="coerce") < cluster_p]
    summary = {"significant": significant.groupby("inference").size().to_dict()}
    if significant.empty:
        messages.append({"type": "info", "msg": f"no cluster with p(FWE) < {cluster_p}"})
        return summary
    best = significant.sort_values("p_fwe").iloc[0]
    summary["strongest"] = {key: best[key] for key in CLUSTER_COLUMNS}
    text = ", ".join(f"{key} {best[key]}" for key in CLUSTER_COLUMNS)
    messages.append({"type": "info", "msg": f"{len(significant)} clusters; strongest: {text}"})
    correlation = pd.read_csv(group / "correlation.tsv", sep="\t")
    summary["correlations"] = correlation.to_dict(orient="records")
    return summary
