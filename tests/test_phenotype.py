"""Phenotype join, responder rule, exclusion reasons and mean FD of subjects.tsv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import phenotype


def _settings(root: Path, **kwargs) -> Settings:
    return Settings(
        bids_dir=root / "bids",
        output_dir=root / "out",
        analysis_level="group",
        fmriprep_dir=root / "bids",
        work_dir=root / "work",
        **kwargs,
    )


def _tsv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")


@pytest.fixture
def dataset(tmp_path) -> Path:
    bids = tmp_path / "bids"
    (bids / "phenotype").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9"}))
    _tsv(
        bids / "participants.tsv",
        [
            {"participant_id": "sub-01", "age": 30, "sex": "F"},
            {"participant_id": "sub-02", "age": 45, "sex": "M"},
            {"participant_id": "sub-03", "age": 50, "sex": "F"},
            {"participant_id": "sub-04", "age": 60, "sex": "M"},
            {"participant_id": "sub-05", "age": None, "sex": "M"},
            {"participant_id": "sub-06", "age": 70, "sex": "F"},
            {"participant_id": "sub-07", "age": 71, "sex": "F"},
        ],
    )
    # labels without the sub- prefix are accepted in phenotype files
    _tsv(
        bids / "phenotype" / "pain.tsv",
        [
            {"participant_id": "01", "nrs_pre": 6, "nrs_post": 3},  # exactly 50 %: R
            {"participant_id": "02", "nrs_pre": 10, "nrs_post": 6},  # 40 %: NR
            {"participant_id": "03", "nrs_pre": 0, "nrs_post": 0},  # pre = 0
            {"participant_id": "04", "nrs_pre": "seven", "nrs_post": 2},  # non-numeric
            {"participant_id": "05", "nrs_pre": 8, "nrs_post": 1},  # missing covariate
            {"participant_id": "06", "nrs_pre": 5, "nrs_post": None},  # missing post
            {"participant_id": "07", "nrs_pre": 4, "nrs_post": 6},  # worse: NR
        ],
    )
    _tsv(bids / "phenotype" / "hads.tsv", [{"participant_id": "sub-01", "hads_a": 7}])
    return tmp_path


def _table(root: Path, with_maps=None, **kwargs) -> pd.DataFrame:
    settings = _settings(root, **kwargs)
    table, files = phenotype.read_phenotype(settings)
    maps = with_maps if with_maps is not None else [f"sub-{i:02d}" for i in range(1, 9)]
    return phenotype.build_subjects_table(settings, table, maps).set_index("participant_id")


def test_join_groups_and_exclusion_reasons(dataset):
    table = _table(dataset, with_maps=["sub-01", "sub-02", "sub-03", "sub-04", "sub-05", "sub-06"])
    assert list(table.reset_index().columns) == [
        "participant_id",
        "group",
        "pain_pre",
        "pain_post",
        "improvement",
        "age",
        "included",
        "exclusion_reason",
        "mean_fd",
        "scrubbed_percent",
    ]
    assert table.loc["sub-01", "group"] == "R" and table.loc["sub-01", "improvement"] == 0.5
    assert table.loc["sub-02", "group"] == "NR" and table.loc["sub-02", "improvement"] == 0.4
    assert table.loc["sub-07", "improvement"] == pytest.approx(-0.5)
    assert table.loc["sub-07", "group"] == "NR"
    assert table.loc[["sub-01", "sub-02"], "included"].all()
    reasons = table["exclusion_reason"]
    assert reasons["sub-03"] == "nrs_pre is 0 (improvement undefined)"
    assert "nrs_pre non-numeric ('seven')" in reasons["sub-04"]
    assert reasons["sub-05"] == "missing covariate age"
    assert reasons["sub-06"] == "pain score nrs_post missing"
    assert reasons["sub-07"].startswith("no usable subject-level map")
    assert not table.loc[["sub-03", "sub-04", "sub-05", "sub-06", "sub-07"], "included"].any()
    assert pd.isna(table.loc["sub-03", "group"])


def test_participant_with_maps_but_no_phenotype_row_is_listed(dataset):
    table = _table(dataset)
    assert table.loc["sub-08", "exclusion_reason"].startswith("not in")
    assert not table.loc["sub-08", "included"]


def test_responder_threshold_and_participant_label(dataset):
    table = _table(dataset, responder_threshold=0.4, participant_label=("01", "sub-02"))
    assert list(table.index) == ["sub-01", "sub-02"]
    assert (table["group"] == "R").all()


def test_covariate_from_a_phenotype_file(dataset):
    table = _table(dataset, covariates=("age", "hads_a"))
    assert table.loc["sub-01", "hads_a"] == 7
    assert table.loc["sub-02", "exclusion_reason"] == "missing covariate hads_a"


def test_text_covariates_are_categorical_and_text_in_a_numeric_one_is_named(dataset):
    participants = dataset / "bids" / "participants.tsv"
    table = pd.read_csv(participants, sep="\t", dtype=str)
    table.loc[table["participant_id"] == "sub-02", "age"] = "abc"
    table.to_csv(participants, sep="\t", index=False)
    subjects = _table(dataset, covariates=("age", "sex"))
    assert subjects.loc["sub-01", "sex"] == "F" and subjects.loc["sub-02", "sex"] == "M"
    assert subjects.loc["sub-01", "included"]
    assert subjects.loc["sub-02", "exclusion_reason"] == "covariate age 'abc' is not a number"


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "the file is empty"), ("participant_id\tage\n", "a header and no participant")],
)
def test_empty_or_header_only_participants_table(dataset, content, message):
    (dataset / "bids" / "participants.tsv").write_text(content)
    with pytest.raises(UserInputError, match=message):
        _table(dataset)


def test_phenotype_option_reads_one_file(dataset):
    path = dataset / "scores.csv"
    pd.DataFrame(
        {"participant_id": ["sub-01", "sub-02"], "pre": [4, 4], "post": [1, 3], "age": [1, 2]}
    ).to_csv(path, index=False)
    table = _table(dataset, phenotype=path, pain_pre="pre", pain_post="post")
    assert table.loc["sub-01", "group"] == "R" and table.loc["sub-02", "group"] == "NR"


def test_mean_fd_and_scrubbed_percent_over_included_runs(dataset):
    out = dataset / "out"
    func = out / "sub-01" / "ses-1" / "func"
    for name, fd, scrubbed, included in (
        ("task-rest_run-1", 0.2, 4, True),
        ("task-rest_run-2", 0.4, 16, True),
        ("task-rest_run-3", 3.0, 90, False),  # excluded run
        ("task-other", 9.0, 50, True),  # another task
    ):
        qc = func / f"sub-01_ses-1_{name}_desc-denoising_qc.tsv"
        row = {"mean_fd": fd, "n_volumes": 102, "n_dummy": 2, "n_scrubbed": scrubbed}
        _tsv(qc, [row | {"included": included}])
    table = _table(dataset)
    assert table.loc["sub-01", "mean_fd"] == pytest.approx(0.3)
    assert table.loc["sub-01", "scrubbed_percent"] == pytest.approx(100 * 20 / 200)
    assert np.isnan(table.loc["sub-02", "mean_fd"])
    assert np.isnan(table.loc["sub-02", "scrubbed_percent"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pain_pre": "vas_pre"}, "--pain-pre vas_pre: no such column"),
        ({"pain_post": "vas_post"}, "--pain-post vas_post: no such column"),
        ({"covariates": ("bmi",)}, "--covariates bmi: no such column"),
        ({"phenotype": Path("/nonexistent/pheno.tsv")}, "--phenotype /nonexistent/pheno.tsv"),
    ],
)
def test_bad_options_name_the_option(dataset, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        _table(dataset, **kwargs)


def test_non_numeric_score_column_is_refused(dataset):
    _tsv(
        dataset / "bids" / "phenotype" / "pain.tsv",
        [{"participant_id": "sub-01", "nrs_pre": "high", "nrs_post": "low"}],
    )
    with pytest.raises(UserInputError, match="--pain-pre nrs_pre: column .* holds no numbers"):
        _table(dataset)


@pytest.mark.parametrize(
    ("row", "kwargs", "message"),
    [
        (
            {"nrs_pre": -1, "nrs_post": 2},
            {},
            r"sub-02 has nrs_pre = -1, outside the pain scale 0-10",
        ),
        ({"nrs_pre": 8, "nrs_post": 35}, {}, r"sub-02 has nrs_post = 35, outside the pain scale"),
        ({"nrs_pre": 80, "nrs_post": 30}, {"pain_max": 50}, r"nrs_pre = 80, .* 0-50; .*--pain-max"),
    ],
)
def test_pain_rating_outside_the_scale_names_participant_and_column(dataset, row, kwargs, message):
    rows = [{"participant_id": "sub-01", "nrs_pre": 6, "nrs_post": 3}]
    _tsv(dataset / "bids" / "phenotype" / "pain.tsv", rows + [{"participant_id": "02", **row}])
    with pytest.raises(UserInputError, match=message):
        _table(dataset, **kwargs)
    if row["nrs_pre"] >= 0:  # a wider scale accepts the rating
        assert _table(dataset, pain_max=100).loc["sub-02", "included"]


def test_duplicate_participant_is_refused(dataset):
    path = dataset / "bids" / "phenotype" / "hads.tsv"
    _tsv(path, [{"participant_id": "sub-01", "hads_a": 7}, {"participant_id": "01", "hads_a": 8}])
    with pytest.raises(UserInputError, match=r"hads.tsv: participant_id sub-01 appears more"):
        _table(dataset)


def test_conflicting_values_between_files_are_refused(dataset):
    _tsv(dataset / "bids" / "phenotype" / "age.tsv", [{"participant_id": "sub-01", "age": 30.0}])
    assert _table(dataset).loc["sub-01", "age"] == 30  # same number, written differently
    _tsv(dataset / "bids" / "phenotype" / "age.tsv", [{"participant_id": "sub-01", "age": 31}])
    with pytest.raises(UserInputError, match=r"age.tsv: column 'age' of sub-01 differs"):
        _table(dataset)


def test_missing_participant_id_and_missing_tables(dataset):
    _tsv(dataset / "bids" / "phenotype" / "hads.tsv", [{"subject": "sub-01", "hads_a": 7}])
    with pytest.raises(UserInputError, match="hads.tsv: no 'participant_id' column"):
        _table(dataset)
    empty = dataset / "empty"
    (empty / "bids").mkdir(parents=True)
    with pytest.raises(UserInputError, match="neither participants.tsv nor phenotype"):
        _table(empty)


def test_column_descriptions_cover_every_column(dataset):
    settings = _settings(dataset, covariates=("age",))
    table = _table(dataset, covariates=("age",))
    described = phenotype.column_descriptions(settings)
    assert set(described) == set(table.reset_index().columns)
