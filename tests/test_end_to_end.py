"""End to end on small generated datasets (the demo generator, fewer subjects): both levels.

``demo_run`` (``conftest.py``) is the participant level of an 8-participant demo, shared with the
brainlife and Slurm tests.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from datasets import STUDY_SEEDS
from demo_runs import run_level, run_participant

from bids_ketamine_fc.demo import generate_demo

pytestmark = pytest.mark.integration


def sphere_mean(path, centre, radius=8.0):
    img = nb.load(path)
    ijk = np.indices(img.shape).reshape(3, -1).T
    xyz = nb.affines.apply_affine(img.affine, ijk)
    inside = np.linalg.norm(xyz - centre, axis=1) <= radius
    return float(np.nanmean(np.asarray(img.dataobj).reshape(-1)[inside]))


def test_outputs_named_as_spec_with_sidecars(demo_run):
    root, out = demo_run
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_ketamine_fc"
    func = out / "sub-01" / "func"
    for seed in STUDY_SEEDS:
        stem = func / f"sub-01_task-rest_space-MNI152NLin2009cAsym_seed-{seed}_stat-fisherz_boldmap"
        img = nb.load(f"{stem}.nii.gz")
        assert img.get_data_dtype() == np.float32
        sidecar = json.loads(stem.with_suffix(".json").read_text())
        assert sidecar["Seed"]["Name"] == seed
        assert sidecar["DenoisingStrategy"]["name"] == "conn"
        assert sidecar["VolumesKept"] <= 120 and sidecar["DegreesOfFreedom"] > 10
        assert "nilearn" in sidecar["SoftwareVersions"]
    series = pd.read_csv(func / "sub-01_task-rest_desc-seeds_timeseries.tsv", sep="\t")
    assert list(series.columns) == STUDY_SEEDS
    qc = pd.read_csv(func / "sub-01_task-rest_desc-denoising_qc.tsv", sep="\t")
    for column in ("mean_fd", "n_scrubbed", "n_kept", "dof", "tsnr_median", "regressors"):
        assert column in qc
    # CONN drops no volume: the demo's two non-steady-state volumes stay (Effect of rest, hrf weights)
    assert qc["n_dummy"][0] == 0 and qc["n_volumes"][0] == 120
    assert qc["compcor_source"][0] in ("tissue maps", "fMRIPrep confounds")
    assert (out / "sub-01.html").stat().st_size > 10_000
    reduced = nb.load(func / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-reduced_bold.nii.gz")
    assert reduced.ndim == 4 and reduced.shape[3] == min(50, int(qc["dof"][0]))
    assert oct((func / f"{stem.name}.nii.gz").stat().st_mode)[-3:] != "600"


def test_seeds_placed_once_and_stage_times_logged(demo_run):
    root, out = demo_run
    # eight participants on one grid: the seeds were placed once, in one file every run read
    assert len(list((root / "work" / "seeds").glob("seeds_space-MNI152NLin2009cAsym_*.npz"))) == 1
    lines = (out / "logs" / "participant.log").read_text().splitlines()
    times = json.loads(next(x for x in lines if "Stage times " in x).split("Stage times ")[1])
    assert {"preflight", "workflow", "nipype run"} <= set(times["cli"])
    assert len(times["subjects"]) == 8
    subject = times["subjects"]["bids_ketamine_fc_wf.single_subject_01_wf.ds_subject"]
    assert {"read", "correlation"} <= set(subject["runs"]["sub-01_task-rest"])
    assert "report" in subject["outputs"]


def test_planted_coupling_shows_in_the_maps(demo_run):
    root, out = demo_run
    truth = pd.read_csv(root / "ground_truth.tsv", sep="\t")
    values = []
    for pid in truth["participant_id"]:
        path = (
            out
            / pid
            / "func"
            / f"{pid}_task-rest_space-MNI152NLin2009cAsym_seed-mPFC_stat-fisherz_boldmap.nii.gz"
        )
        values.append(sphere_mean(path, (4.0, -62.0, 42.0)))
    r = np.corrcoef(values, truth["planted_coupling"])[0, 1]
    assert r > 0.6, (values, truth["planted_coupling"].tolist())
    # The seed's own neighbourhood correlates strongly; a far region does not.
    path = (
        out
        / "sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_seed-mPFC_stat-fisherz_boldmap.nii.gz"
    )
    assert sphere_mean(path, (1.0, 55.0, -3.0), 6) > 1.0
    assert abs(sphere_mean(path, (0.0, -20.0, 60.0), 6)) < 0.5


def test_resumes_from_the_work_directory(demo_run):
    root, out = demo_run
    stamp = (out / "sub-01.html").stat().st_mtime
    run_participant(root, "MNI152NLin2009cAsym", "--participant-label", "sub-01")
    cached = list(
        (root / "work").rglob("denoise_sub01_taskrest/result_denoise_sub01_taskrest.pklz")
    )
    assert cached and (out / "sub-01.html").stat().st_mtime >= stamp


def test_mni152nlin6asym_las_grid(tmp_path):
    generate_demo(tmp_path, n_subjects=2, n_volumes=80, space="MNI152NLin6Asym", seed=4)
    out = run_participant(tmp_path, "MNI152NLin6Asym")
    path = (
        out
        / "sub-01/func/sub-01_task-rest_space-MNI152NLin6Asym_seed-mPFC_stat-fisherz_boldmap.nii.gz"
    )
    img = nb.load(path)
    assert img.affine[0, 0] < 0  # LAS, as FSL's grid
    assert sphere_mean(path, (1.0, 55.0, -3.0), 6) > 1.0


@pytest.fixture(scope="module")
def group_run(demo_run):
    root, out = demo_run
    # the group level needs OUTPUT_DIR and the phenotype only: a raw dataset without fMRIPrep
    raw = root / "raw"
    shutil.copytree(root / "bids", raw, ignore=shutil.ignore_patterns("derivatives", "sub-*"))
    assert not list(raw.rglob("*.nii*"))
    options = ("--n-permutations", "200", "--random-seed", "2", "--ica-components", "5")
    assert run_level(root, "group", *options, bids=raw) == out
    return root, out


def test_group_level_after_the_participant_level(group_run):
    root, out = group_run
    assert json.loads((out / "logs" / "config-group.json").read_text())["fmriprep_dir"] is None
    group = out / "group"
    subjects = pd.read_csv(group / "subjects.tsv", sep="\t")
    truth = pd.read_csv(root / "ground_truth.tsv", sep="\t")
    assert subjects["included"].all() and len(subjects) == len(truth)
    assert (
        subjects.set_index("participant_id")["group"] == truth.set_index("participant_id")["group"]
    ).all()
    for name in (
        "clusters.tsv",
        "correlation.tsv",
        "prediction.tsv",
        "group.html",
        "ica/components.tsv",
    ):
        assert (group / name).exists(), name
    components = pd.read_csv(group / "ica/components.tsv", sep="\t")
    assert len(components) == 5 and components["selected"].sum() == 1
    assert list(
        (group / "seed-mPFC").glob("*_model-groupsAge_contrast-NRgtR_stat-t_boldmap.nii.gz")
    )


def test_derivatives_pass_the_bids_validator(group_run):
    _, out = group_run
    validator = Path(sys.executable).with_name("bids-validator-deno")
    if not validator.exists():
        pytest.skip("bids-validator-deno is not installed (pip install '.[test]')")
    # cwd=out: the validator asks git about the folder it runs in
    done = subprocess.run(
        [str(validator), "--format", "json", str(out)], capture_output=True, text=True, cwd=out
    )
    issues = json.loads(done.stdout)["issues"]["issues"]
    errors = [
        (i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"
    ]
    assert errors == []
    assert done.returncode == 0


GROUP_FILE = re.compile(
    r"^(?:sub-[A-Za-z0-9]+_)?space-[A-Za-z0-9]+(?:_res-[A-Za-z0-9]+)?"
    r"(?P<entities>(?:_[a-z]+-[A-Za-z0-9]+)*)_[a-z]+\.(?:nii\.gz|json|png)$"
)
GROUP_ENTITIES = ("seed", "component", "model", "contrast", "inference", "cluster", "stat", "desc")


def test_group_files_follow_the_naming_rules(group_run):
    _, out = group_run
    for path in (out / "group").rglob("*.*"):
        if path.suffix in (".tsv", ".html") or path.name in {"clusters.json", "subjects.json"}:
            continue
        if path.suffix == ".json" and (path.with_suffix(".tsv")).exists():
            continue  # a table's sidecar
        match = GROUP_FILE.match(path.name)
        assert match, path.name
        keys = [item.split("-")[0] for item in match["entities"].split("_")[1:]]
        assert keys == sorted(keys, key=GROUP_ENTITIES.index), path.name
        if path.parent.name.startswith("seed-"):
            assert f"_{path.parent.name}_" in path.name


def test_every_table_column_image_header_and_source_is_described(group_run):
    _, out = group_run
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert (out / "README.md").is_file() and (out / ".bidsignore").is_file()
    for tsv in out.rglob("*.tsv"):
        sidecar = json.loads(tsv.with_suffix(".json").read_text())
        columns = pd.read_csv(tsv, sep="\t", nrows=0).columns
        assert [c for c in columns if "Description" not in sidecar.get(c, {})] == [], tsv.name
        assert not any("``" in str(v) or ":func:" in str(v) for v in sidecar.values()), tsv.name
    for image in out.rglob("*.nii.gz"):
        header = nb.load(image).header
        assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 4), image.name
        assert header.get_xyzt_units()[0] == "mm", image.name
        sidecar = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
        for source in sidecar.get("Sources", []):
            dataset = source.split(":")[1]
            assert source.startswith("bids:") and (dataset in links or dataset == ""), source
            assert "/tmp" not in source and not source.split(":")[2].startswith("/"), source
