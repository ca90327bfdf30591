"""brainlife.io: the repository's ``main`` on brainlife-shaped folders made from the demo.

brainlife stages each input object in its own folder and writes ``config.json`` (built here from
``config.json.sample`` and ``config.json.group.sample``) in the task folder, where it runs
``main``. The participant task gets fMRIPrep's BOLD, mask and regressors of one demo participant;
its outputs equal the demo's participant level (``demo_run``) byte for byte. The group task gets
participant outputs shaped as the participant task writes them and a phenotype table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bids_ketamine_fc import __version__
from bids_ketamine_fc.cli.brainlife import option_args
from bids_ketamine_fc.cli.parser import get_parser

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
SPACE = "MNI152NLin2009cAsym"


def _run_main(task: Path, root: Path) -> subprocess.CompletedProcess:
    """Run ``main`` as brainlife does: in the task folder, holding config.json."""
    env = dict(os.environ, TEMPLATEFLOW_HOME=str(root / "templateflow"),
               TEMPLATEFLOW_AUTOUPDATE="0", NIPYPE_NO_ET="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
    return subprocess.run(
        ["bash", str(ROOT / "main")], cwd=task, env=env, capture_output=True, text=True, timeout=900
    )


def _stage(path: Path, staged: Path) -> str:
    """Copy an input into its brainlife folder; return its path relative to the task folder."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, staged)
    return os.path.relpath(staged, staged.parents[2] / "task")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def participant_task(demo_run, tmp_path_factory):
    """The participant task of sub-01: ``(task folder, main's result)``."""
    root, _ = demo_run
    base = tmp_path_factory.mktemp("brainlife")
    func = root / "bids" / "derivatives" / "fmriprep" / "sub-01" / "func"
    stem = f"sub-01_task-rest_space-{SPACE}"
    config = json.loads((ROOT / "config.json.sample").read_text())
    staged = base / "fmriprep_task"
    config["bold"] = _stage(
        func / f"{stem}_desc-preproc_bold.nii.gz", staged / "bold_img" / "bold.nii.gz"
    )
    config["mask"] = _stage(
        func / f"{stem}_desc-brain_mask.nii.gz", staged / "bold_mask" / "mask.nii.gz"
    )
    confounds = func / "sub-01_task-rest_desc-confounds_timeseries"
    config["regressors"] = _stage(Path(f"{confounds}.tsv"), staged / "regress" / "regressors.tsv")
    config["regressors_json"] = _stage(
        Path(f"{confounds}.json"), staged / "regress" / "regressors.json"
    )
    anat = func.parent / "anat"
    for label in ("GM", "WM", "CSF"):  # the tissue maps: CONN's aCompCor, as the BIDS-App's run
        name = f"sub-01_space-{SPACE}_res-2_label-{label}_probseg.nii.gz"
        config[label.lower()] = _stage(anat / name, staged / "anat" / f"{label.lower()}.nii.gz")
    sidecar = json.loads((func / f"{stem}_desc-preproc_bold.json").read_text())
    config["_inputs"][0]["meta"] |= {"subject": "01", "RepetitionTime": sidecar["RepetitionTime"]}
    task = base / "task"
    task.mkdir()
    (task / "config.json").write_text(json.dumps(config))
    return task, _run_main(task, root)


def test_participant_task_writes_the_demo_outputs(demo_run, participant_task):
    _, out = demo_run
    task, done = participant_task
    assert done.returncode == 0, done.stderr
    fc = task / "fc"
    assert (fc / "dataset_description.json").is_file()
    assert sorted(p.name for p in fc.glob("sub-*") if p.is_dir()) == ["sub-01"]
    written = _files(fc / "sub-01")
    assert len([name for name in written if name.endswith("_boldmap.nii.gz")]) == 9
    assert written == _files(out / "sub-01")  # the same files as the demo's participant level
    assert (task / "html" / "index.html").read_bytes() == (fc / "sub-01.html").read_bytes()
    product = json.loads((task / "product.json").read_text())
    assert product["brainlife"][0]["type"] == "success"
    assert product["subject"] == "sub-01" and len(product["seeds"]) == 9
    (run,) = product["runs"]
    assert run["included"] and run["dof"] > 10 and run["mean_fd"] > 0
    assert not (task / "bl_work").exists()  # the scaffold and work folder are removed


def test_group_task_from_participant_outputs_and_a_phenotype(demo_run, participant_task):
    root, out = demo_run
    task_01, _ = participant_task
    base = task_01.parent
    config = json.loads((ROOT / "config.json.group.sample").read_text())
    config["fc"] = [os.path.relpath(task_01 / "fc", base / "task_group")]
    config["_inputs"] = [{"id": "fc", "meta": {"subject": "01"}, "keys": ["fc"]}]
    for subject in sorted(p.name for p in out.glob("sub-*") if p.is_dir() and p.name != "sub-01"):
        fc = base / f"participant_task_{subject}" / "fc"  # shaped as the participant task's
        shutil.copytree(out / subject, fc / subject)
        shutil.copyfile(out / "dataset_description.json", fc / "dataset_description.json")
        config["fc"].append(os.path.relpath(fc, base / "task_group"))
        config["_inputs"].append({"id": "fc", "meta": {"subject": subject[4:]}, "keys": ["fc"]})
    phenotype = pd.read_csv(root / "bids" / "participants.tsv", sep="\t").merge(
        pd.read_csv(root / "bids" / "phenotype" / "pain.tsv", sep="\t"), on="participant_id"
    )
    (base / "phenotype_task").mkdir()
    phenotype.to_csv(base / "phenotype_task" / "phenotype.tsv", sep="\t", index=False)
    config["phenotype"] = "../phenotype_task/phenotype.tsv"
    config |= {"n_permutations": 100, "ica_components": 5, "random_seed": 2, "nprocs": 2}
    task = base / "task_group"
    task.mkdir()
    (task / "config.json").write_text(json.dumps(config))
    done = _run_main(task, root)
    assert done.returncode == 0, done.stderr
    subjects = pd.read_csv(task / "group" / "subjects.tsv", sep="\t")
    assert len(subjects) == 8 and subjects["included"].all()
    for name in ("clusters.tsv", "correlation.tsv", "group.html", "ica/components.tsv"):
        assert (task / "group" / name).is_file(), name
    assert (task / "html" / "index.html").read_bytes() == (task / "group/group.html").read_bytes()
    product = json.loads((task / "product.json").read_text())
    assert product["brainlife"][0]["type"] == "success"
    assert product["participants"] == 8
    assert product["responders"] + product["non_responders"] == 8
    assert set(product["clusters"]["significant"]) <= {"rft", "permutation"}


def test_a_bad_config_gives_one_error_line_and_product_json(tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    config = json.loads((ROOT / "config.json.sample").read_text())  # its inputs do not exist
    (task / "config.json").write_text(json.dumps(config))
    done = _run_main(task, tmp_path)
    assert done.returncode == 66, done.stderr  # no input
    (line,) = done.stderr.strip().splitlines()
    assert "bold.nii.gz" in line and "does not exist" in line
    product = json.loads((task / "product.json").read_text())
    assert product["brainlife"] == [{"type": "error", "msg": line.split("error: ", 1)[1]}]


def test_parameters_become_options_and_main_pins_the_image():
    config = {"denoise_strategy": "36p", "covariates": "age sex", "inference": ["rft"],
              "verbosity": 2, "n_permutations": 10, "fd_threshold": None, "bold": "x.nii.gz",
              "work_dir": "/elsewhere", "nprocs": 4}  # fmt: skip
    args = option_args(config, get_parser())
    assert args == ["--denoise-strategy", "36p", "--covariates", "age", "sex", "--inference",
                    "rft", "-v", "-v", "--n-permutations", "10"]  # fmt: skip
    for sample in ("config.json.sample", "config.json.group.sample"):
        parameters = {k: v for k, v in json.loads((ROOT / sample).read_text()).items()}
        known = {"bold", "mask", "regressors", "regressors_json", "fc", "phenotype", "nprocs"}
        options = {a.dest for a in get_parser()._actions}
        assert set(parameters) - known - options == {"_inputs"}, sample
    main = (ROOT / "main").read_text()
    assert f"IMAGE=docker://bids/bids_ketamine_fc:{__version__}\n" in main
    assert os.access(ROOT / "main", os.X_OK)
