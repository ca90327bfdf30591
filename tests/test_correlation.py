"""Brain-behaviour correlation: statistics against scipy and formulas, ROI checks, and the step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from bids_ketamine_fc.cli.group import run_group
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import maps
from bids_ketamine_fc.group.behaviour import correlation, regions, tables
from bids_ketamine_fc.group.behaviour import run as behaviour
from bids_ketamine_fc.reports import behaviour as report

SHAPE = (30, 36, 30)
PLANTED = np.array([-11.0, -18.0, 7.0])
SPACE = "MNI152NLin2009cAsym"


def _xy(n=30, rho=0.6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)


# --- statistics -------------------------------------------------------------------------------


def test_pearson_matches_scipy_and_the_fisher_interval():
    x, y = _xy()
    row = correlation.pearson(x, y)
    expected = stats.pearsonr(x, y)
    assert row["r"] == pytest.approx(expected.statistic)
    assert row["p"] == pytest.approx(expected.pvalue)
    half = stats.norm.ppf(0.975) / np.sqrt(len(x) - 3)
    assert row["ci_low"] == pytest.approx(np.tanh(np.arctanh(row["r"]) - half))
    assert row["ci_high"] == pytest.approx(np.tanh(np.arctanh(row["r"]) + half))


def test_partial_correlation_matches_the_precision_matrix_and_the_regression_t_test():
    rng = np.random.default_rng(1)
    n = 40
    covariates = rng.normal(size=(n, 2))
    x = covariates @ [1.0, -0.5] + rng.normal(size=n)
    y = 0.4 * x + covariates @ [0.3, 0.8] + rng.normal(size=n)
    r, p = correlation.partial_correlation(x, y, covariates)
    precision = np.linalg.inv(np.corrcoef(np.column_stack([x, y, covariates]).T))
    assert r == pytest.approx(-precision[0, 1] / np.sqrt(precision[0, 0] * precision[1, 1]))
    design = np.column_stack([np.ones(n), x, covariates])
    beta, rss = np.linalg.lstsq(design, y, rcond=None)[:2]
    dof = n - design.shape[1]
    se = np.sqrt(rss[0] / dof * np.linalg.inv(design.T @ design)[1, 1])
    assert p == pytest.approx(2 * stats.t.sf(abs(beta[1] / se), dof))
    assert all(np.isnan(correlation.partial_correlation(x, y, np.zeros((n, 0)))))


def test_bootstrap_interval_is_seeded_and_agrees_with_a_plain_bootstrap():
    x, y = _xy(n=60, seed=2)
    ci = correlation.bootstrap_ci(x, y, np.random.default_rng(7), method="percentile")
    assert ci == correlation.bootstrap_ci(x, y, np.random.default_rng(7), method="percentile")
    rng = np.random.default_rng(8)
    draws = rng.integers(0, len(x), size=(20_000, len(x)))
    plain = [stats.pearsonr(x[d], y[d]).statistic for d in draws[:4000]]
    np.testing.assert_allclose(ci, np.percentile(plain, [2.5, 97.5]), atol=0.03)
    bca = correlation.bootstrap_ci(x, y, np.random.default_rng(7))
    r = stats.pearsonr(x, y).statistic
    assert bca[0] < r < bca[1] and bca != ci
    fisher = correlation.pearson(x, y)
    assert abs(bca[0] - fisher["ci_low"]) < 0.08 and abs(bca[1] - fisher["ci_high"]) < 0.08
    with pytest.raises(ValueError, match="bootstrap method"):
        correlation.bootstrap_ci(x, y, rng, method="basic")


def test_correlate_reports_spearman_and_within_group_r():
    x, y = _xy(n=24, seed=3)
    groups = np.where(np.arange(24) < 12, "R", "NR")
    age = np.random.default_rng(4).uniform(27, 81, (24, 1))
    row = correlation.correlate(x, y, groups, age, np.random.default_rng(0), n_resamples=2000)
    spearman = stats.spearmanr(x, y)
    assert row["n"] == 24 and row["spearman_rho"] == pytest.approx(spearman.statistic)
    assert row["spearman_p"] == pytest.approx(spearman.pvalue)
    for group in ("R", "NR"):
        chosen = groups == group
        expected = stats.pearsonr(x[chosen], y[chosen])
        assert row[f"r_{group}"] == pytest.approx(expected.statistic)
        assert row[f"p_{group}"] == pytest.approx(expected.pvalue)
        assert row[f"n_{group}"] == 12
    assert row["partial_r"] == pytest.approx(correlation.partial_correlation(x, y, age)[0])


def test_correlate_needs_five_participants_with_values():
    x, y = _xy(n=8)
    x[:4] = np.nan
    with pytest.raises(UserInputError, match="seed mPFC, cluster 1: only 4 participant"):
        correlation.correlate(
            x, y, np.array(["R", "NR"] * 4), np.zeros((8, 0)), np.random.default_rng(0),
            "seed mPFC, cluster 1",
        )  # fmt: skip


# --- the step on generated subject-level maps ------------------------------------------------


def _affine() -> np.ndarray:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-29.0, -35.0, -29.0]
    return affine


def _world() -> np.ndarray:
    ijk = np.indices(SHAPE).reshape(3, -1).T
    return nb.affines.apply_affine(_affine(), ijk).reshape(*SHAPE, 3)


def make_dataset(root: Path, coupling: float = 1.2, n_per_group: int = 8, seed: int = 0):
    """Subject-level maps whose mPFC map carries ``coupling * (0.5 - improvement)`` in a blob."""
    rng = np.random.default_rng(seed)
    bids, out = root / "bids", root / "out"
    (bids / "derivatives" / "fmriprep").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9"}))
    xyz = _world()
    brain = ((xyz / [27.0, 33.0, 27.0]) ** 2).sum(-1) <= 1
    blob = np.exp(-(np.linalg.norm(xyz - PLANTED, axis=-1) ** 2) / 18.0)
    post = np.r_[rng.integers(0, 5, n_per_group), rng.integers(5, 9, n_per_group)]
    rows = []
    for k, nrs_post in enumerate(post):
        label = f"{k + 1:02d}"
        rows.append({"participant_id": f"sub-{label}", "nrs_pre": 8, "nrs_post": int(nrs_post)})
        rows[-1]["age"] = int(rng.integers(27, 82))
        func = out / f"sub-{label}" / "func"
        func.mkdir(parents=True)
        for seed_name in ("mPFC", "PCC"):
            noise = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.2) * 4.0
            effect = coupling * (0.5 - (8 - nrs_post) / 8) * blob if seed_name == "mPFC" else 0
            volume = np.where(brain, 0.3 + 0.1 * noise + effect, np.nan).astype(np.float32)
            name = f"sub-{label}_task-rest_space-{SPACE}_res-2_seed-{seed_name}_stat-fisherz_boldmap.nii.gz"
            nb.save(nb.Nifti1Image(volume, _affine()), func / name)
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    return Settings(
        bids_dir=bids, output_dir=out, analysis_level="group", work_dir=root / "work",
        fmriprep_dir=bids / "derivatives" / "fmriprep", inference=("rft",), random_seed=42,
        n_permutations=1000, nprocs=2,
    )  # fmt: skip


def _with(settings: Settings, **changes) -> Settings:
    return Settings(**{**settings.__dict__, **changes})


def _brain_behaviour(settings: Settings) -> dict:
    """Run the group level, then the brain-behaviour step on what it wrote."""
    assert run_group(settings) == 0
    group = settings.output_dir / "group"
    subjects = pd.read_csv(group / "subjects.tsv", sep="\t")
    table = pd.read_csv(group / "clusters.tsv", sep="\t")
    index = maps.find_subject_maps(settings)
    written = behaviour.run_brain_behaviour(settings, index, subjects, table)
    return written | {"figures": report.write_figures(settings.output_dir, index, written)}


def _read(settings: Settings, name: str) -> pd.DataFrame:
    return pd.read_csv(settings.output_dir / "group" / name, sep="\t")


def test_planted_coupling_end_to_end(tmp_path, tf_home, caplog):
    settings = make_dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        written = _brain_behaviour(settings)
    assert "Circular analysis" in caplog.text
    table = _read(settings, "correlation.tsv")
    assert list(table.columns[:9]) == ["seed", "model", "contrast", "cluster", "n", "r", "p",
                                       "ci_low", "ci_high"]  # fmt: skip
    assert list(table.columns) == list(tables.CORRELATION_COLUMNS)
    row = table.iloc[0]
    assert len(table) == 1 and (row["seed"], row["contrast"], row["model"]) == (
        "mPFC", "NRgtR", "groups"
    )  # fmt: skip
    assert row["r"] < -0.7 and row["circular"]
    assert np.isnan(row["partial_r"])  # the model 'groups' has no covariate to partial out
    for column in correlation.CIRCULAR_NA:  # circular: r described, no p, no interval
        assert np.isnan(row[column]), column
    assert np.isfinite(row["p_R"]) and np.isfinite(row["p_NR"])
    assert row["n"] == 16 and row["n_R"] + row["n_NR"] == 16

    values = _read(settings, "cluster_values.tsv")
    index = maps.find_subject_maps(settings)
    mask_path = maps.group_path(
        settings.output_dir, index, "mPFC", "mask.nii.gz", model="groups", contrast="NRgtR",
        inference="rft", cluster=1,
    )  # fmt: skip
    cluster = np.asarray(nb.load(mask_path).dataobj) > 0
    for _, value in values.iterrows():  # independent: each map file, averaged in the mask file
        path = index.files["mPFC"][value["participant_id"]]
        expected = np.asarray(nb.load(path).dataobj, dtype=np.float64)[cluster].mean()
        assert value["value"] == pytest.approx(expected, abs=1e-5)
    assert row["r"] == pytest.approx(stats.pearsonr(values["value"], values["improvement"])[0])

    prediction = _read(settings, "prediction.tsv")
    assert list(prediction.columns) == list(tables.PREDICTION_COLUMNS) and len(prediction) == 1
    loo = prediction.iloc[0]
    assert (loo["seed"], loo["model"], loo["contrast"]) == ("mPFC", "groups", "NRgtR")
    assert loo["cv_r"] < -0.5 and loo["auc"] > 0.8 and loo["auc_p"] < 0.01
    assert loo["circular_r"] == pytest.approx(row["r"]) and loo["n_permutations"] == 1000
    assert loo["full_data_clusters"] == 1 and loo["smallest_p"] == pytest.approx(0.001)
    assert len(_read(settings, "prediction_folds.tsv")) == 16
    sidecar = json.loads((settings.output_dir / "group" / "correlation.json").read_text())
    assert sidecar["Circularity"]["NotComputed"] == list(correlation.CIRCULAR_NA)
    assert sidecar["RandomStream"]["RandomSeed"] == 42
    procedure = json.loads((settings.output_dir / "group" / "prediction.json").read_text())
    text = procedure["LeaveOneOut"]["Procedure"]
    assert "permuted" in text and ":mod:" not in text and "``" not in text
    assert len(written["figures"]) == 2
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written["figures"])

    again = behaviour.run_brain_behaviour(
        settings, index, _read(settings, "subjects.tsv"), _read(settings, "clusters.tsv")
    )
    pd.testing.assert_frame_equal(again["correlation"], written["correlation"])  # seeded


def test_roi_mode_and_no_cluster(tmp_path, tf_home, caplog):
    settings = make_dataset(tmp_path, coupling=0.0)
    roi_path = tmp_path / "thalamus_roi.nii.gz"
    roi = (np.linalg.norm(_world() - PLANTED, axis=-1) <= 6).astype(np.uint8)
    nb.save(nb.Nifti1Image(roi, _affine()), roi_path)
    settings = _with(settings, roi=roi_path, roi_seed="PCC")
    with caplog.at_level(logging.WARNING):
        written = _brain_behaviour(settings)
    assert "No cluster with p(FWE) < 0.05" in caplog.text and "Circular" not in caplog.text
    table = _read(settings, "correlation.tsv")
    assert len(table) == 1 and table["region"][0] == "thalamus_roi.nii.gz"
    assert not table["circular"][0] and table["seed"][0] == "PCC"
    assert np.isnan(table["cluster"][0]) and np.isfinite(table["p"][0])
    prediction = _read(settings, "prediction.tsv").set_index("region")
    roi_row = prediction.loc["thalamus_roi.nii.gz"]
    assert roi_row["seed"] == "PCC" and roi_row["n_folds_no_cluster"] == 0
    # the pre-specified test runs without a full-data cluster, and says so
    loo = prediction.loc["folds"]
    assert loo["seed"] == "mPFC" and loo["full_data_clusters"] == 0 and np.isnan(loo["circular_r"])
    assert 0 < loo["auc_p"] <= 1 and loo["n_permutations"] == 1000
    assert "Circularity" not in json.loads(
        (settings.output_dir / "group" / "correlation.json").read_text()
    )
    names = {Path(p).name for p in written["figures"]}
    assert {n.split("_desc-")[1] for n in names if "_desc-" in n} == {
        "roi_scatter.png", "roi_roc.png"
    }  # fmt: skip


def test_no_cluster_writes_headers_only(tmp_path, tf_home):
    settings = make_dataset(tmp_path, coupling=0.0, n_per_group=4)
    settings = _with(settings, covariates=(), prediction=("none",))
    written = _brain_behaviour(settings)
    for name, columns in (
        ("correlation.tsv", tables.CORRELATION_COLUMNS),
        ("cluster_values.tsv", tables.VALUE_COLUMNS),
        ("prediction.tsv", tables.PREDICTION_COLUMNS),
        ("prediction_folds.tsv", tables.FOLD_COLUMNS),
    ):
        lines = (settings.output_dir / "group" / name).read_text().splitlines()
        assert lines == ["\t".join(columns)]
    assert written["figures"] == [] and not written["circular"]


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (("mPFC:groups:NRgtR",), [("mPFC", "groups", "NRgtR")]),
        (("all",), [(s, m, c) for s in ("mPFC", "PCC") for m in ("groups", "groupsAge")
                    for c in ("RgtNR", "NRgtR")]),
        (("none",), []),
        (("PCC:groupsAge:RgtNR", "mPFC:groups:NRgtR"),
         [("PCC", "groupsAge", "RgtNR"), ("mPFC", "groups", "NRgtR")]),
    ],
)  # fmt: skip
def test_prediction_option_names_the_tests(prediction, expected):
    settings = _with(make_settings_only(Path(".")), prediction=prediction)
    assert behaviour.hypotheses(settings, ["mPFC", "PCC"]) == expected


@pytest.mark.parametrize(
    ("prediction", "covariates", "message"),
    [
        (("mPFC:groups",), ("age",), "expected SEED:MODEL:CONTRAST"),
        (("mPFC:groupsAge:NRgtR",), (), "MODEL one of groups and"),
        (("mPFC:groups:NRvsR",), ("age",), "CONTRAST one of RgtNR, NRgtR"),
        (("NAccL:groups:NRgtR",), ("age",), "seed NAccL has no subject-level maps"),
    ],
)
def test_bad_prediction_is_refused(prediction, covariates, message, caplog):
    settings = _with(make_settings_only(Path(".")), prediction=prediction, covariates=covariates)
    with pytest.raises(UserInputError, match=message):
        behaviour.hypotheses(settings, ["mPFC", "PCC"])
    with caplog.at_level(logging.WARNING):  # the default, with other seeds: skipped, said
        assert behaviour.hypotheses(make_settings_only(Path(".")), ["ACC"]) == []
    assert "seed mPFC has no maps" in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"roi_seed": "PCC"}, "--roi-seed needs --roi"),
        ({"roi": Path("roi.nii.gz")}, "--roi needs --roi-seed"),
        ({"roi": Path("roi.nii.gz"), "roi_seed": "NAccL"}, "--roi-seed NAccL: no subject-level"),
        ({"roi": Path("absent.nii.gz"), "roi_seed": "PCC"}, "file not found"),
        ({"roi": Path("odd.nii.gz"), "roi_seed": "PCC"}, r"differs from the subject-level maps"),
        ({"roi": Path("empty.nii.gz"), "roi_seed": "PCC"}, "no non-zero voxel"),
    ],
)
def test_bad_roi_options(tmp_path, changes, message):
    index = maps.MapIndex(SPACE, "2", {"PCC": {}, "mPFC": {}}, SHAPE, _affine())
    nb.save(nb.Nifti1Image(np.ones(SHAPE, np.uint8), _affine()), tmp_path / "roi.nii.gz")
    nb.save(nb.Nifti1Image(np.zeros(SHAPE, np.uint8), _affine()), tmp_path / "empty.nii.gz")
    las = _affine() @ np.diag([-1.0, 1, 1, 1])  # same shape, mirrored: another grid
    nb.save(nb.Nifti1Image(np.ones(SHAPE, np.uint8), las), tmp_path / "odd.nii.gz")
    if "roi" in changes:
        changes = dict(changes, roi=tmp_path / changes["roi"])
    settings = _with(make_settings_only(tmp_path), **changes)
    with pytest.raises(UserInputError, match=message):
        regions.check_roi(settings, index)


def make_settings_only(root: Path) -> Settings:
    return Settings(
        bids_dir=root, output_dir=root / "out", analysis_level="group",
        fmriprep_dir=root, work_dir=root / "work",
    )  # fmt: skip


def test_roi_outside_the_analysis_mask_is_refused(tmp_path, tf_home):
    settings = make_dataset(tmp_path, coupling=0.0, n_per_group=4)
    roi = np.zeros(SHAPE, np.uint8)
    roi[0, 0, 0] = 1  # a corner, outside the brain
    nb.save(nb.Nifti1Image(roi, _affine()), tmp_path / "corner.nii.gz")
    settings = _with(settings, roi=tmp_path / "corner.nii.gz", roi_seed="mPFC", covariates=())
    with pytest.raises(UserInputError, match="no voxel inside the analysis mask of seed mPFC"):
        _brain_behaviour(settings)


def test_clusters_of_the_permutation_inference_feed_the_correlation(tmp_path, tf_home):
    settings = make_dataset(tmp_path)
    settings = _with(
        settings, inference=("rft", "permutation"), correlation_inference="permutation",
        correlation_model="groupsAge", prediction=("mPFC:groupsAge:NRgtR",),
        prediction_permutations=200,
    )  # fmt: skip
    _brain_behaviour(settings)
    table = _read(settings, "correlation.tsv")
    assert set(zip(table["inference"], table["model"], table["contrast"], strict=True)) == {
        ("permutation", "groupsAge", "NRgtR")
    }
    prediction = _read(settings, "prediction.tsv")
    assert prediction["model"].tolist() == ["groupsAge"] and prediction["auc"][0] > 0.8
    assert prediction["inference"][0] == "permutation" and prediction["auc_p"][0] < 0.05
    assert prediction["fold_null_permutations"][0] == 200
    sidecar = json.loads((settings.output_dir / "group" / "prediction.json").read_text())
    assert sidecar["LeaveOneOut"]["FoldInference"] == "permutation"


def test_a_correlation_inference_or_model_not_run_is_said(caplog):
    table = pd.DataFrame(
        {"seed": ["mPFC"], "model": ["groups"], "contrast": ["NRgtR"], "inference": ["rft"],
         "cluster": [1], "p_fwe": [0.01]}
    )  # fmt: skip
    settings = _with(make_settings_only(Path(".")), inference=("rft",))
    assert len(behaviour._chosen_clusters(settings, table)) == 1
    for changes, said in (
        ({"correlation_inference": "tfce"}, "--correlation-inference tfce was not run"),
        ({"correlation_model": "groupsAge", "covariates": ()}, "--correlation-model groupsAge"),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert behaviour._chosen_clusters(_with(settings, **changes), table).empty
        assert said in caplog.text
    assert behaviour._chosen_clusters(_with(settings, cluster_p=0.01), table).empty
