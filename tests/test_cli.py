"""The command line: bad input gives one line on stderr, a non-zero exit and no outputs."""

import json
import shutil

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from datasets import AFFINE, make_dataset

from bids_ketamine_fc import __version__
from bids_ketamine_fc.cli.parser import get_parser
from bids_ketamine_fc.cli.run import main


@pytest.fixture
def dataset(tmp_path):
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    return tmp_path, bids


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_user_error(code, err, *words, out=None, status=None):
    assert code != 0
    if status is not None:
        assert code == status, (code, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("bids_ketamine_fc: error: "), err
    assert all(" WARNING " in line for line in lines[:-1]), err  # only warnings before
    assert "Traceback" not in err
    for word in words:
        assert word in lines[-1], lines[-1]
    if out is not None:
        assert not list(out.glob("sub-*")) and not (out / "dataset_description.json").exists()


def base_args(root, bids, *extra):
    return [
        bids,
        root / "out",
        "participant",
        "-w",
        root / "work",
        "--seeds",
        root / "seeds.json",
        *extra,
    ]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        get_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_missing_and_non_bids_dir(tmp_path, capsys):
    code, err = run_cli(capsys, tmp_path / "nope", tmp_path / "out", "participant")
    assert_user_error(code, err, "does not exist", out=tmp_path / "out", status=66)
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, tmp_path / "empty", tmp_path / "out", "participant")
    assert_user_error(code, err, "dataset_description.json", status=16)


def test_no_outputs_for_task_or_space(dataset, capsys):
    root, bids = dataset
    code, err = run_cli(capsys, *base_args(root, bids, "--task-id", "nback"))
    assert_user_error(code, err, "--task-id nback", out=root / "out", status=18)
    code, err = run_cli(capsys, *base_args(root, bids, "--space", "MNI152NLin6Asym"))
    assert_user_error(code, err, "MNI152NLin6Asym", out=root / "out", status=18)


@pytest.mark.parametrize(
    "label,words,status",
    [
        ("07", ["07", "not found"], 18),
        ("../01", ["not a valid BIDS label"], 64),
        ("sub-0/1", ["not a valid"], 64),
    ],
)
def test_bad_participant_labels(dataset, capsys, label, words, status):
    root, bids = dataset
    code, err = run_cli(capsys, *base_args(root, bids, "--participant-label", label))
    assert_user_error(code, err, *words, out=root / "out", status=status)


@pytest.mark.parametrize(
    "args,status,word",
    [
        (["participant", "--smoothing-fwhm", "-1"], 64, "--smoothing-fwhm"),
        (["participant", "--nprocs", "two"], 64, "--nprocs"),
        (["subject"], 17, "analysis_level"),
        ([], 64, "required"),
    ],
)
def test_command_line_mistakes_exit_with_usage_codes(tmp_path, capsys, args, status, word):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), str(tmp_path / "out"), *args] if args else [str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == status
    assert_user_error(status, err, word)


def test_confounds_missing_or_lacking_columns(dataset, capsys):
    root, bids = dataset
    tsv = next(bids.rglob("*_desc-confounds_timeseries.tsv"))
    table = pd.read_csv(tsv, sep="\t")
    table.drop(columns=["rot_z", "trans_x_derivative1"]).to_csv(tsv, sep="\t", index=False)
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(
        code, err, "rot_z", "trans_x_derivative1", tsv.name, out=root / "out", status=65
    )
    tsv.unlink()
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(code, err, "confounds", out=root / "out", status=66)


def test_bold_and_mask_on_different_grids(dataset, capsys):
    root, bids = dataset
    mask = next(bids.rglob("*_desc-brain_mask.nii.gz"))
    img = nb.load(mask)
    nb.save(nb.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), mask)
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(code, err, "different grids", mask.name, out=root / "out", status=65)


def test_nan_inside_mask(dataset, capsys):
    root, bids = dataset
    bold = next(bids.rglob("*_desc-preproc_bold.nii.gz"))
    data = np.asarray(nb.load(bold).dataobj).copy()
    data[16, 20, 16, 5] = np.nan
    nb.save(nb.Nifti1Image(data, AFFINE), bold)
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(code, err, "NaN", bold.name, out=root / "out", status=65)


def test_no_usable_tr(dataset, capsys):
    root, bids = dataset
    bold = next(bids.rglob("*_desc-preproc_bold.nii.gz"))
    bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text("{}")
    img = nb.load(bold)
    img.header.set_xyzt_units("mm", "unknown")
    nb.save(nb.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), bold)
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(code, err, "RepetitionTime", out=root / "out")


def test_low_pass_above_nyquist_is_no_low_pass_as_conn(dataset, capsys, caplog):
    root, bids = dataset
    strategy = root / "fast.yml"
    strategy.write_text(
        "name: fast\nconfounds: {motion: basic}\nfilter: {type: fft, low: 0.01, high: 0.3}\n"
    )
    code, _ = run_cli(capsys, *base_args(root, bids, "--denoise-strategy", strategy))
    assert code == 0
    assert "Nyquist frequency 0.25 Hz" in caplog.text
    sidecar = next((root / "out").rglob("*_seed-mPFC_*.json"))
    notes = json.loads(sidecar.read_text())["DenoisingNotes"]
    assert notes and "no effective low-pass" in notes[0]


def test_malformed_seed_file_and_seed_outside_brain(dataset, capsys):
    root, bids = dataset
    (root / "seeds.json").write_text(
        json.dumps({"seeds": [{"name": "x", "center": [1, 2], "radius": 5}]})
    )
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(code, err, "seeds.json", "center", out=root / "out")
    (root / "seeds.json").write_text(
        json.dumps({"seeds": [{"name": "far", "center": [0, 0, 200], "radius": 5}]})
    )
    code, err = run_cli(capsys, *base_args(root, bids))
    assert_user_error(code, err, "far", out=root / "out")


@pytest.mark.parametrize("where", ["bids", "fmriprep", "inside"])
def test_output_dir_inside_inputs(dataset, capsys, where):
    root, bids = dataset
    out = {
        "bids": bids,
        "fmriprep": bids / "derivatives/fmriprep",
        "inside": bids / "sub-01" / "out",
    }[where]
    code, err = run_cli(capsys, bids, out, "participant")
    assert_user_error(code, err, "OUTPUT_DIR", status=64)


def test_too_few_volumes_excludes_run_then_fails_when_nothing_left(tmp_path, capsys):
    bids = make_dataset(tmp_path, subjects=("01", "02"), n_volumes=40)
    tsv = next(bids.rglob("sub-01_*_desc-confounds_timeseries.tsv"))
    table = pd.read_csv(tsv, sep="\t")
    # every volume moves 2 mm from the one before: ART scrubs them all
    table["trans_x"] = 2.0 * (np.arange(len(table)) % 2)
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    code, err = run_cli(capsys, *base_args(tmp_path, bids))
    assert code == 0, err
    qc = pd.read_csv(tmp_path / "out/sub-01/func/sub-01_task-rest_desc-denoising_qc.tsv", sep="\t")
    assert not qc["included"][0] and "scrubbing" in qc["exclusion_reason"][0]
    assert list((tmp_path / "out/sub-02/func").glob("*_seed-mPFC_stat-fisherz_boldmap.nii.gz"))
    assert not list((tmp_path / "out/sub-01/func").glob("*_boldmap.nii.gz"))
    shutil.rmtree(tmp_path / "out")
    code, err = run_cli(capsys, *base_args(tmp_path, bids, "--participant-label", "01"))
    assert_user_error(code, err, "no usable run", status=65)


def test_sessions_and_runs_are_combined_and_selected(tmp_path, capsys):
    bids = make_dataset(
        tmp_path, subjects=("01",), sessions=("1", "2"), runs=("1", "2"), n_volumes=40
    )
    code, err = run_cli(capsys, *base_args(tmp_path, bids, "--session-label", "ses-2"))
    assert code == 0, err
    out = tmp_path / "out" / "sub-01"
    runs = sorted(p.name for p in out.rglob("*_seed-mPFC_stat-fisherz_boldmap.nii.gz"))
    assert runs == [
        "sub-01_ses-2_task-rest_run-1_space-MNI152NLin2009cAsym_seed-mPFC_stat-fisherz_boldmap.nii.gz",
        "sub-01_ses-2_task-rest_run-2_space-MNI152NLin2009cAsym_seed-mPFC_stat-fisherz_boldmap.nii.gz",
        "sub-01_task-rest_space-MNI152NLin2009cAsym_seed-mPFC_stat-fisherz_boldmap.nii.gz",
    ]
    sidecar = json.loads((out / "func" / runs[2].replace(".nii.gz", ".json")).read_text())
    assert sidecar["Runs"] == ["sub-01_ses-2_task-rest_run-1", "sub-01_ses-2_task-rest_run-2"]
    per_run = [
        json.loads((out / "ses-2/func" / r.replace(".nii.gz", ".json")).read_text())
        for r in runs[:2]
    ]
    assert sidecar["DegreesOfFreedom"] == sum(s["DegreesOfFreedom"] for s in per_run)


def test_only_the_participant_level_needs_fmriprep(tmp_path, capsys):
    from bids_ketamine_fc.cli.run import build_settings

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.9.0"}')
    settings = build_settings(get_parser().parse_args([str(raw), str(tmp_path / "out"), "group"]))
    assert settings.fmriprep_dir is None
    code, err = run_cli(capsys, raw, tmp_path / "out", "participant")
    assert_user_error(code, err, "no fMRIPrep derivatives", "--fmriprep-dir")
