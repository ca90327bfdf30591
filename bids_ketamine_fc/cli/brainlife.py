"""brainlife.io: run one level from a brainlife ``config.json`` (what the repository's ``main`` runs).

brainlife runs an app's ``main`` in a folder holding ``config.json``: the input files by key,
the app's parameters, and ``_inputs`` (one entry per input object, its ``meta`` carrying
``subject``, ``session``, ``task``, ``run``). Its BIDS export builds no fMRIPrep tree, so this
module builds the minimal one the BIDS-App reads, runs it, and writes brainlife's output folders
and ``product.json`` (messages and key numbers). ``config.json`` says which level:

- participant: ``bold`` (fMRIPrep's preprocessed BOLD, neuro/func/task), ``mask`` (its brain
  mask, neuro/mask) and ``regressors`` (its confounds, neuro/func/regressors, with
  ``regressors_json``), one file each or lists of the same length for several runs of the
  subject; optionally ``gm``, ``wm``, ``csf`` (fMRIPrep's tissue probability maps in the same
  space, from which the ``conn`` presets compute CONN's aCompCor; without them fMRIPrep's
  aCompCor columns are used, with a note); writes ``fc/`` (the participant's outputs, a
  BIDS-Derivatives dataset) and
  ``html/index.html`` (its report).
- group: ``fc`` (a list of participant outputs) and ``phenotype`` (a TSV with
  ``participant_id`` and the pain scores); writes ``group/`` and ``html/`` (the group report).

Every other key of ``config.json`` named as an option's destination (``denoise_strategy``,
``smoothing_fwhm``, ``n_permutations``...) is passed as that option.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from bids_ketamine_fc.cli import brainlife_outputs as outputs
from bids_ketamine_fc.exceptions import ExitCode, MissingInputError, UsageError, UserInputError

RUN_KEYS = ("bold", "mask", "regressors")
#: Options this module sets (paths, selection, processes) rather than copies from config.json.
_RESERVED = {
    "bids_dir", "output_dir", "analysis_level", "participant_label", "session_label",
    "fmriprep_dir", "work_dir", "phenotype", "use_plugin", "help", "version", "bids_exec_spec",
    "nprocs",
}  # fmt: skip
_SCAFFOLD = "bl_work"
_DESCRIPTION = {"Name": "brainlife inputs", "BIDSVersion": "1.9.0"}
_FMRIPREP_DESCRIPTION = {
    "Name": "fMRIPrep outputs (from brainlife)",
    "BIDSVersion": "1.9.0",
    "DatasetType": "derivative",
    "GeneratedBy": [{"Name": "fMRIPrep"}],
}


def _label(value, what: str) -> str:
    """Make a BIDS label of a brainlife meta value: its letters and digits."""
    label = re.sub(r"[^A-Za-z0-9]", "", str(value))
    if not label:
        raise UsageError(f"config.json: {what} {value!r} has no letter or digit to make a label")
    return label


def _paths(config: dict, key: str) -> list[Path]:
    """Return the file(s) of ``key``, relative paths taken from the task folder (``_here``)."""
    value = config.get(key) or []
    values = value if isinstance(value, list) else [value]
    return [Path(os.path.normpath(Path(config["_here"], v))) for v in values]


def _input_metas(config: dict, key: str, count: int) -> list[dict]:
    """Return the ``meta`` of each input object holding ``key``, in config order (brainlife's)."""
    entries = [
        e for e in config.get("_inputs", []) if key in e.get("keys", []) or e.get("id") == key
    ]
    if len(entries) != count:
        raise UsageError(
            f"config.json: {count} '{key}' files but {len(entries)} '_inputs' for them"
        )
    return [entry.get("meta") or {} for entry in entries]


def option_args(config: dict, parser) -> list[str]:
    """Turn config.json parameters named as option destinations into command-line arguments."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    args = []
    for key, value in config.items():
        action = actions.get(key)
        if action is None or key in _RESERVED or value is None or value == "":
            continue
        flags = [s for s in action.option_strings if s.startswith("--")] or action.option_strings
        if action.nargs == 0:  # a count (-v: how many) or a switch (true or false)
            args += [action.option_strings[0]] * int(value)
        elif action.nargs in ("+", "*"):
            values = value if isinstance(value, list) else str(value).replace(",", " ").split()
            args += [flags[0], *map(str, values)]
        else:
            args += [flags[0], str(value)]
    return args


def _link(source: Path, target: Path) -> None:
    if not source.is_file():
        raise MissingInputError(f"config.json: input file {source} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve())


def _run_files(config: dict) -> tuple[dict, list[dict]]:
    """Return the participant inputs by key (a path a run) and the BOLD inputs' meta."""
    files = {key: _paths(config, key) for key in RUN_KEYS}
    missing = [key for key in RUN_KEYS if not files[key]]
    if missing:
        raise UsageError(f"config.json: no {', '.join(missing)} input (participant level)")
    count = len(files["bold"])
    if any(len(files[key]) != count for key in RUN_KEYS):
        raise UsageError("config.json: give as many bold, mask and regressors files (one per run)")
    files["regressors_json"] = _paths(config, "regressors_json")
    return files, _input_metas(config, "bold", count)


def _run_stem(meta: dict, subject: str, task: str) -> tuple[Path, str]:
    """Return the folder (in the fMRIPrep dataset) and the file-name stem of one run."""
    folder, stem = Path(f"sub-{subject}"), [f"sub-{subject}"]
    if meta.get("session"):
        session = f"ses-{_label(meta['session'], 'meta.session')}"
        folder, stem = folder / session, [*stem, session]
    stem.append(f"task-{_label(meta.get('task') or task, 'task')}")
    if meta.get("run"):
        stem.append(f"run-{_label(meta['run'], 'meta.run')}")
    return folder / "func", "_".join(stem)


def _fmriprep_tree(config: dict, bids: Path, space: str) -> str:
    """Build ``bids`` (raw) with ``derivatives/fmriprep`` holding the inputs; return the subject."""
    files, metas = _run_files(config)
    subjects = {_label(meta.get("subject"), "meta.subject") for meta in metas}
    if len(subjects) != 1:
        raise UsageError(f"config.json: the runs must be of one subject, got {sorted(subjects)}")
    subject = subjects.pop()
    fmriprep = bids / "derivatives" / "fmriprep"
    outputs.write_json(bids / "dataset_description.json", _DESCRIPTION)
    outputs.write_json(fmriprep / "dataset_description.json", _FMRIPREP_DESCRIPTION)
    for index, meta in enumerate(metas):
        folder, stem = _run_stem(meta, subject, config.get("task_id") or "rest")
        bold = fmriprep / folder / f"{stem}_space-{space}_desc-preproc"
        _link(files["bold"][index], Path(f"{bold}_bold.nii.gz"))
        _link(
            files["mask"][index], fmriprep / folder / f"{stem}_space-{space}_desc-brain_mask.nii.gz"
        )
        confounds = fmriprep / folder / f"{stem}_desc-confounds_timeseries"
        _link(files["regressors"][index], Path(f"{confounds}.tsv"))
        if index < len(files["regressors_json"]):
            _link(files["regressors_json"][index], Path(f"{confounds}.json"))
        sidecar = {k: meta[k] for k in ("RepetitionTime", "TaskName") if k in meta}
        if sidecar:  # brainlife's meta of fMRIPrep's BOLD holds its sidecar
            outputs.write_json(Path(f"{bold}_bold.json"), sidecar)
    anat = fmriprep / f"sub-{subject}" / "anat"
    for label in ("GM", "WM", "CSF"):  # optional tissue maps: CONN's own aCompCor (conn presets)
        for path in _paths(config, label.lower())[:1]:
            _link(path, anat / f"sub-{subject}_space-{space}_label-{label}_probseg.nii.gz")
    return subject


def _participant_outputs(config: dict, bids: Path) -> Path:
    """Gather the ``fc`` inputs as one OUTPUT_DIR (``sub-*`` linked) beside a minimal BIDS_DIR."""
    folders = _paths(config, "fc")
    if not folders:
        raise UsageError("config.json: no 'fc' input (group level: the participant outputs)")
    derivatives = bids.parent / "derivatives"
    derivatives.mkdir(parents=True)
    outputs.write_json(bids / "dataset_description.json", _DESCRIPTION)
    for folder in folders:
        subjects = sorted(folder.glob("sub-*/"))
        if not folder.is_dir() or not subjects:
            raise MissingInputError(f"config.json: fc input {folder} holds no sub-* folder")
        for subject in subjects:
            target = derivatives / subject.name
            if target.exists():
                raise UsageError(f"config.json: {subject.name} is in two fc inputs; give it once")
            target.symlink_to(subject.resolve(), target_is_directory=True)
    description = folders[0] / "dataset_description.json"
    if description.is_file():
        shutil.copyfile(description, derivatives / "dataset_description.json")
    return derivatives


def _level_args(config: dict, here: Path, bids: Path, parser) -> tuple[str, Path, list[str]]:
    """Return the level ``config`` describes, its OUTPUT_DIR and its own arguments."""
    if config.get("fc"):
        out = _participant_outputs(config, bids)
        phenotype = (_paths(config, "phenotype") or [here])[0]
        if not phenotype.is_file():
            raise MissingInputError("config.json: no 'phenotype' file (a TSV of pain scores)")
        return "group", out, ["--phenotype", str(phenotype)]
    space = config.get("space") or parser.get_default("space")
    return "participant", here / "fc", ["--participant-label", _fmriprep_tree(config, bids, space)]


def run(config_path: Path) -> int:
    """Run the level ``config_path`` describes, in its folder; return the exit status."""
    from bids_ketamine_fc.cli.parser import get_parser

    here = config_path.parent.absolute()
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return outputs.fail(here, UsageError(f"{config_path}: not readable as JSON ({err})"))
    config["_here"] = here  # brainlife gives paths relative to the task folder
    scaffold = here / _SCAFFOLD
    shutil.rmtree(scaffold, ignore_errors=True)
    bids, work = scaffold / "bids", scaffold / "work"
    parser = get_parser()
    nprocs = str(config.get("nprocs") or len(os.sched_getaffinity(0)))
    try:
        level, out, extra = _level_args(config, here, bids, parser)
        argv = [str(bids), str(out), level, "-w", str(work), "--nprocs", nprocs, *extra]
        code, message = outputs.call_main(argv + option_args(config, parser))
    except UserInputError as err:
        return outputs.fail(here, err)
    if code != ExitCode.SUCCESS:
        return outputs.fail(here, message, code)
    write = outputs.group_product if level == "group" else outputs.participant_product
    status = write(here, out)
    shutil.rmtree(scaffold, ignore_errors=True)
    return status


def main(argv: list[str] | None = None) -> int:
    """``bids_ketamine_fc-brainlife [config.json]``: what the repository's ``main`` runs."""
    args = sys.argv[1:] if argv is None else argv
    return run(Path(args[0] if args else "config.json"))


if __name__ == "__main__":
    sys.exit(main())
