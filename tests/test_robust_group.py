"""Bad input at the group level (issue 11): nothing dropped in silence, refusals before any output.

The maps come from ``test_group_run.make_dataset`` (generated subject-level maps and phenotype).
"""

from __future__ import annotations

import json
import warnings

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from test_group_run import make_dataset

from bids_ketamine_fc.cli.run import main


def run_group_cli(capsys, settings, *extra):
    argv = [settings.bids_dir, settings.output_dir, "group", "--inference", "rft", *extra]
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("bids_ketamine_fc: error: "), err
    assert all(" WARNING " in line for line in lines[:-1]), err
    assert "Traceback" not in err
    return lines[-1]


def _participants(settings) -> pd.DataFrame:
    return pd.read_csv(settings.bids_dir / "participants.tsv", sep="\t", dtype=str)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", ["participants.tsv", "the file is empty"]),
        ("participant_id\tnrs_pre\tnrs_post\tage\n", ["a header and no participant"]),
    ],
)
def test_empty_or_header_only_participants_tsv(tmp_path, capsys, content, words):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    (settings.bids_dir / "participants.tsv").write_text(content)
    code, _, err = run_group_cli(capsys, settings)
    line = error_line(err)
    assert code == 65 and all(word in line for word in words)
    assert not (settings.output_dir / "group" / "seed-PCC").exists()


def test_everyone_left_out_says_why(tmp_path, capsys):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    table = _participants(settings)
    table["age"] = "n/a"
    table.to_csv(settings.bids_dir / "participants.tsv", sep="\t", index=False)
    code, _, err = run_group_cli(capsys, settings)
    line = error_line(err)
    assert code == 65 and "all 6 are left out" in line and "missing covariate age (6:" in line
    assert err.count("left out of the group analysis: missing covariate age") == 6


def test_ica_dimension_refused_before_any_output(tmp_path, capsys):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    for func in settings.output_dir.glob("sub-*/func"):
        label = func.parent.name
        reduced = np.zeros((30, 36, 30, 5), np.int16)
        reduced[10:20, 10:20, 10:20] = np.arange(1, 6)
        name = f"{label}_task-rest_space-MNI152NLin2009cAsym_res-2_desc-reduced_bold.nii.gz"
        nb.save(nb.Nifti1Image(reduced, np.diag([2.0, 2.0, 2.0, 1.0])), func / name)
    code, _, err = run_group_cli(capsys, settings, "--ica-components", "500")
    line = error_line(err)
    assert code == 64 and "--ica-components 500" in line and "at most 5 dimensions" in line
    assert not (settings.output_dir / "group" / "seed-PCC").exists()


def _plant_sex(settings, rng) -> pd.DataFrame:
    """Sex adds 0.5 to every map; most responders are men and most non-responders women."""
    table = _participants(settings)
    responders = table["nrs_post"].astype(int) <= 4
    table["sex"] = np.where(responders, "M", "F")
    table.loc[[0, 9], "sex"] = ["F", "M"]  # one of each group the other way: not collinear
    table.to_csv(settings.bids_dir / "participants.tsv", sep="\t", index=False)
    for pid, sex in zip(table["participant_id"], table["sex"], strict=True):
        for path in (settings.output_dir / pid / "func").glob("*_boldmap.nii.gz"):
            img = nb.load(path)
            data = np.asarray(img.dataobj) + (0.5 if sex == "M" else 0.0) * rng.uniform(0.9, 1.1)
            nb.save(nb.Nifti1Image(data.astype(np.float32), img.affine), path)
    return table


def _sidecar(settings, pid: str, strategy: str, tr: float) -> None:
    for path in (settings.output_dir / pid / "func").glob("*_boldmap.nii.gz"):
        sidecar = {"DenoisingStrategy": {"name": strategy}, "RepetitionTime": tr}
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))


def test_nothing_dropped_in_silence_and_categorical_covariates(tmp_path, capsys, tf_home):
    """One run: a text age, maps without a phenotype row, mixed denoising and TR, another source
    dataset, a categorical covariate (sex) recovered in the design, one permutation."""
    settings = make_dataset(tmp_path, n_per_group=5, seeds=("mPFC",), effect=0.0)
    table = _plant_sex(settings, np.random.default_rng(1))
    table.loc[table["participant_id"] == "sub-02", "age"] = "abc"
    table.to_csv(settings.bids_dir / "participants.tsv", sep="\t", index=False)
    stray = settings.output_dir / "sub-99" / "func"
    stray.mkdir(parents=True)
    for path in (settings.output_dir / "sub-01" / "func").glob("*_boldmap.nii.gz"):
        (stray / path.name.replace("sub-01", "sub-99")).write_bytes(path.read_bytes())
    for pid in table["participant_id"]:
        _sidecar(settings, pid, "conn", 2.0)
    _sidecar(settings, "sub-03", "36p", 0.8)
    other = {"DatasetLinks": {"raw": "file:///elsewhere/bids"}, "Name": "x", "BIDSVersion": "1.9"}
    (settings.output_dir / "dataset_description.json").write_text(json.dumps(other))
    code, out, err = run_group_cli(
        capsys, settings, "--covariates", "age", "sex", "--inference", "rft", "permutation",
        "--n-permutations", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "sub-02 left out of the group analysis: covariate age 'abc' is not a number" in err
    assert "sub-99 left out of the group analysis: not in" in err and "another dataset" in err
    assert "differ in denoising strategy: conn (8:" in err and "36p (1: sub-03)" in err
    assert "differ in repetition time (s): 2.0 (8:" in err
    assert "file:///elsewhere/bids" in err
    assert "--n-permutations 1: no p(FWE) can fall below --cluster-p 0.05" in err
    assert "Model groups: 4 R and 5 NR participants." in out
    assert "Model groupsAge: 4 R and 5 NR participants; covariates age, sex." in out
    assert "Covariate sex is categorical: levels F, M, reference F" in out
    assert "DegenerateDataWarning" not in out + err and "Traceback" not in err
    assert err.count("Group ICA skipped") == 1
    _check_design(settings, table)


def _check_design(settings, table: pd.DataFrame) -> None:
    """The design codes sex as a centred indicator and its effect is taken out of R vs NR."""
    seed = settings.output_dir / "group" / "seed-mPFC"
    pattern = "*_model-{}_contrast-RgtNR_stat-effect_boldmap.nii.gz"
    sidecar = json.loads(
        next(seed.glob(pattern.format("groupsAge")))
        .with_suffix("")
        .with_suffix(".json")
        .read_text()
    )
    design = sidecar["Design"]
    assert design["Columns"] == ["R", "NR", "age", "sex[M]"]
    assert design["Covariates"]["sex"] == {
        "Type": "categorical",
        "Levels": ["F", "M"],
        "Reference": "F",
        "Columns": ["sex[M]"],
        "Coding": "indicator of each level but the reference, mean-centred",
    }
    rows = table.set_index("participant_id").loc[design["Rows"]]
    male = (rows["sex"] == "M").to_numpy(float)
    np.testing.assert_allclose(np.array(design["DesignMatrix"])[:, 3], male - male.mean())
    groups = np.asarray(nb.load(next(seed.glob(pattern.format("groups")))).dataobj)
    adjusted = np.asarray(nb.load(next(seed.glob(pattern.format("groupsAge")))).dataobj)
    r_male = male[np.array(design["DesignMatrix"])[:, 0] == 1].mean()
    nr_male = male[np.array(design["DesignMatrix"])[:, 1] == 1].mean()
    # without sex, R - NR carries 0.5 x the difference in the share of men; with sex, not
    assert np.nanmean(groups) == pytest.approx(0.5 * (r_male - nr_male), abs=0.1)
    assert abs(np.nanmean(adjusted)) < 0.1 < abs(np.nanmean(groups))


def test_python_warnings_reach_the_log_not_the_console(tmp_path, capsys):
    """scipy's DegenerateDataWarning (a BCa bootstrap of a degenerate sample) is for the log."""
    from scipy.stats import DegenerateDataWarning

    from bids_ketamine_fc.cli.logs import Logs

    with warnings.catch_warnings():  # undo pytest's recording, as outside pytest
        warnings.simplefilter("always")
        logs = Logs(verbosity=1)
        try:
            logs.open_file(tmp_path / "group.log")
            message = "The BCa confidence interval cannot be calculated."
            warnings.warn(message, DegenerateDataWarning, stacklevel=1)
        finally:
            logs.close()
    captured = capsys.readouterr()
    assert "DegenerateDataWarning" not in captured.out + captured.err
    assert "DegenerateDataWarning: The BCa" in (tmp_path / "group.log").read_text()


def test_leave_one_out_folds_code_text_covariates_as_the_full_model():
    from bids_ketamine_fc.group.behaviour.folds import nuisance_matrix

    rows = pd.DataFrame({"age": [30.0, 40.0, 50.0, 60.0], "sex": ["F", "M", "M", "F"]})
    z = nuisance_matrix(rows, "groupsAge", ("age", "sex"))
    np.testing.assert_allclose(z, [[1, -15, -0.5], [1, -5, 0.5], [1, 5, 0.5], [1, 15, -0.5]])
