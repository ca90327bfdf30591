"""Tests of bids_ketamine_fc.participant.confounds on real fMRIPrep confounds tables and known answers."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant.confounds import (
    art_outliers,
    global_signal_z,
    load_confounds_table,
    non_steady_state_count,
    scrub_outliers,
    select_confounds,
    spike_regressors,
)
from bids_ketamine_fc.participant.strategy import (
    CompCor,
    Scrub,
    Strategy,
    list_presets,
    load_strategy,
)

DATA = Path(__file__).parents[1].parent / "shared" / "data"
V21 = DATA / "confounds" / "nilearn_test-v21_desc-confounds_timeseries.tsv"
OLD = DATA / "confounds" / "nilearn_test_desc-confounds_regressors.tsv"
DS31 = DATA / "fmriprep_ds000031" / "sub-01_ses-002_task-rest_run-001_desc-confounds_timeseries.tsv"
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared test data absent: {path}")
    return path


def _as_nilearn_expects(tsv: Path, tmp_path: Path, drop: tuple[str, ...] = ()) -> str:
    """Copy a table (and its sidecar) under BIDS names beside an empty BOLD file name."""
    suffix = "regressors" if tsv.name.endswith("_regressors.tsv") else "timeseries"
    stem = "sub-01_task-rest"
    target = tmp_path / f"{stem}_desc-confounds_{suffix}.tsv"
    if drop:  # columns nilearn refuses (it takes camel case for fMRIPrep < 1.2)
        table = pd.read_csv(tsv, sep="\t").drop(columns=list(drop))
        table.to_csv(target, sep="\t", index=False, na_rep="n/a")
    else:
        shutil.copy(tsv, target)
    sidecar = tsv.with_suffix(".json")
    if sidecar.is_file():
        shutil.copy(sidecar, tmp_path / f"{stem}_desc-confounds_{suffix}.json")
    img = tmp_path / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    img.touch()
    return str(img)


def _nilearn(img: str, **kwargs) -> pd.DataFrame:
    from nilearn.interfaces.fmriprep import load_confounds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, _ = load_confounds(img, demean=False, **kwargs)
    return confounds


# --- strategies -----------------------------------------------------------------------------


def test_presets_are_packaged_and_documented():
    assert list_presets() == ["36p", "acompcor", "conn", "conn-fmriprep", "conn-simult"]
    folder = resources.files("bids_ketamine_fc").joinpath("data", "denoise")
    for name in list_presets():
        text = folder.joinpath(f"{name}.yml").read_text()
        assert text.startswith("#") and text.count("\n#") >= 5, name


@pytest.mark.parametrize(
    "name", ["conn", "conn-simult", "conn-fmriprep", "acompcor", "36p", "36P", "CONN"]
)
def test_every_preset_loads_and_round_trips(name, tmp_path):
    strategy = load_strategy(name)
    assert strategy.name == name.lower()
    assert strategy.source == f"preset:{name.lower()}"
    assert strategy.description
    copy = tmp_path / "copy.yml"
    copy.write_text(yaml.safe_dump(strategy.to_dict()))
    assert dataclasses.replace(load_strategy(copy), source=strategy.source) == strategy


def test_conn_preset_is_conns_defaults():
    conn = load_strategy("conn")
    assert (conn.motion, conn.wm_csf, conn.global_signal) == ("derivatives", "none", "none")
    assert (conn.derivatives, conn.effect_of_rest) == ("conn", True)
    assert conn.compcor == CompCor(wm=5, csf=5, method="conn") and not conn.cosine
    assert conn.scrub == Scrub("art", 0.9, 5.0, "regress")
    assert (conn.filter.type, conn.filter.low, conn.filter.high) == ("fft", 0.008, 0.09)
    assert (conn.detrend, conn.filter_order, conn.drop_non_steady_state) == (1, "regbp", False)
    assert (conn.scaling, conn.weighting) == ("psc", "hrf")
    simult = load_strategy("conn-simult")
    assert simult.filter_order == "simult"
    same = dataclasses.replace(simult, name="conn", description=conn.description, source="")
    assert same == dataclasses.replace(conn, filter_order="simult", source="")


def test_conn_fmriprep_preset_keeps_the_fmriprep_mapping():
    old = load_strategy("conn-fmriprep")
    assert old.compcor == CompCor(wm=5, csf=5, method="fmriprep")
    assert old.scrub == Scrub("art-fd", 0.9, 5.0, "regress")
    assert (old.derivatives, old.effect_of_rest, old.drop_non_steady_state) == (
        "fmriprep",
        False,
        True,
    )
    assert (old.scaling, old.weighting) == ("none", "none")
    conn = load_strategy("conn")
    assert (old.filter, old.filter_order, old.detrend) == (conn.filter, "regbp", 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nweighting: hrf\n", "needs 'confounds.effect_of_rest: true'"),
        ("name: x\nconfounds: {compcor: {combined: 5, method: conn}}\n", "no combined mask"),
        ("name: x\nconfounds: {derivatives: central}\n", "one of fmriprep, conn"),
    ],
)
def test_conn_keys_are_checked(tmp_path, content, message):
    path = tmp_path / "s.yml"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message):
        load_strategy(path)


@pytest.mark.parametrize("name", ["acompcor", "36p"])
def test_xcpd_presets(name):
    strategy = load_strategy(name)
    assert strategy.scrub == Scrub("fd", 0.3, None, "censor")
    assert dataclasses.astuple(strategy.filter) == ("butterworth", 0.01, 0.08, 2)
    assert strategy.filter_order == "simult"
    if name == "36p":
        assert (strategy.motion, strategy.wm_csf, strategy.global_signal) == ("full",) * 3
        assert strategy.compcor == CompCor() and not strategy.cosine
    else:
        assert strategy.compcor == CompCor(wm=5, csf=5) and strategy.cosine


def test_fd_threshold_override():
    assert load_strategy("conn", fd_threshold=0.5).scrub == Scrub("art", 0.5, 5.0, "regress")
    assert load_strategy("conn", fd_threshold=0).scrub == Scrub("art", None, 5.0, "regress")
    assert load_strategy("36p", fd_threshold=0.2).scrub.fd_threshold == 0.2
    assert load_strategy("36p", fd_threshold=0).scrub is None


def test_user_yaml_and_json(tmp_path):
    user = tmp_path / "mine.yml"
    user.write_text(
        "# my strategy\nconfounds:\n  motion: basic\n  compcor: {combined: 6}\n"
        "filter:\n  type: butterworth\n  high: 0.1\n  order: 3\n"
    )
    strategy = load_strategy(str(user))
    assert strategy == Strategy(
        name="mine",
        motion="basic",
        compcor=CompCor(combined=6),
        filter=strategy.filter,
        source=str(user),
    )
    assert dataclasses.astuple(strategy.filter) == ("butterworth", None, 0.1, 3)
    as_json = tmp_path / "same.json"
    as_json.write_text(json.dumps(load_strategy("conn").to_dict()))
    assert dataclasses.replace(load_strategy(as_json), source="") == dataclasses.replace(
        load_strategy("conn"), source=""
    )
    with pytest.raises(UserInputError, match="does no scrubbing"):
        load_strategy(user, fd_threshold=0.5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("confounds: [motion\n", "cannot be parsed"),
        ("- a\n- b\n", "must hold a mapping"),
        ("confound:\n  motion: basic\n", r"unknown key\(s\) confound .* valid keys: name, "),
        ("confounds:\n  motion: basic\n  gsr: true\n", r"gsr in 'confounds'.*cosine"),
        ("confounds:\n  motion: six\n", "'confounds.motion' must be one of none, basic"),
        ("confounds:\n  compcor: {wm: -1}\n", "'confounds.compcor.wm' must be an integer"),
        ("confounds:\n  compcor: {wm: 5, combined: 5}\n", "wm/csf or combined"),
        ("scrub:\n  detector: fd\n  method: censor\n", "needs fd_threshold"),
        ("scrub: {detector: fd, fd_threshold: 0.5, gs_z_threshold: 3}\n", "detector: art"),
        ("filter: {type: fft, low: 0.1, high: 0.01}\n", "must be below"),
        ("filter: {type: butterworth, low: 0.01}\n", "filter.order"),
        ("filter: {type: fft, low: 0.01, order: 2}\n", "filter.order"),
        ("filter: lowpass\n", "'filter' must be a mapping"),
        ("detrend: 7\n", "'detrend' must be 0, 1, 2 or 3"),
        ("drop_non_steady_state: yes please\n", "must be true or false"),
    ],
)
def test_malformed_strategy_file(tmp_path, content, message):
    bad = tmp_path / "bad.yml"
    bad.write_text(content)
    with pytest.raises(UserInputError, match=message) as err:
        load_strategy(bad)
    assert "\n" not in str(err.value)
    if "cannot be parsed" not in message and "must hold" not in message:
        assert str(bad) in str(err.value)


def test_unknown_strategy_lists_presets():
    with pytest.raises(UserInputError, match="36p, acompcor, conn, conn-fmriprep, conn-simult"):
        load_strategy("no-such-strategy")


# --- confounds tables -----------------------------------------------------------------------


def test_load_confounds_table(tmp_path):
    table, metadata = load_confounds_table(_need(V21))
    assert table.shape == (30, 84) and all(dt == np.float64 for dt in table.dtypes)
    assert np.isnan(table["trans_x_derivative1"].iloc[0])
    assert metadata["w_comp_cor_00"]["Mask"] == "WM"
    table, metadata = load_confounds_table(_need(DS31))
    assert table.shape == (40, 31) and metadata == {}
    with pytest.raises(UserInputError, match="nothere_desc-confounds_timeseries.tsv not found"):
        load_confounds_table(tmp_path / "nothere_desc-confounds_timeseries.tsv")
    broken = tmp_path / "x_desc-confounds_timeseries.tsv"
    broken.write_text("trans_x\trot_x\n0.1\tabc\n")
    with pytest.raises(UserInputError, match=r"non-numeric values in column\(s\) \['rot_x'\]"):
        load_confounds_table(broken)


@pytest.mark.parametrize("tsv", [V21, OLD])
@pytest.mark.parametrize("preset", ["conn", "acompcor", "36p"])
def test_selection_matches_nilearn(tsv, preset, tmp_path):
    table, metadata = load_confounds_table(_need(tsv))
    strategy = load_strategy(preset)
    ours = select_confounds(table, metadata, strategy, tsv.name)
    img = _as_nilearn_expects(tsv, tmp_path)
    if preset == "36p":
        kwargs = {"motion": "full", "wm_csf": "full", "global_signal": "full"}
        theirs = _nilearn(img, strategy=("motion", "wm_csf", "global_signal"), **kwargs)
    else:
        theirs = _nilearn(
            img,
            strategy=("motion", "high_pass", "compcor"),
            motion="derivatives",
            compcor="anat_separated",
            n_compcor=5,
        )
        if not strategy.cosine:
            theirs = theirs.drop(columns=[c for c in theirs if c.startswith("cosine")])
    assert sorted(ours.columns) == sorted(theirs.columns)
    np.testing.assert_allclose(ours.to_numpy(), theirs[ours.columns].to_numpy(), rtol=1e-12)
    assert not ours.isna().any().any()


def test_selection_matches_nilearn_ds000031(tmp_path):
    table, metadata = load_confounds_table(_need(DS31))
    strategy = Strategy(name="basic", motion="basic", global_signal="basic")
    ours = select_confounds(table, metadata, strategy, DS31.name)
    img = _as_nilearn_expects(DS31, tmp_path, drop=("vx-wisestdDVARS",))
    theirs = _nilearn(img, strategy=("motion", "global_signal"), motion="basic")
    assert list(ours.columns) == [*MOTION, "global_signal"]
    np.testing.assert_array_equal(ours.to_numpy(), theirs[ours.columns].to_numpy())


def test_old_layout_splits_wm_csf_by_json_mask():
    table, metadata = load_confounds_table(_need(OLD))
    conn = load_strategy("conn")
    selected = select_confounds(table, metadata, conn, OLD.name)
    wm = [f"a_comp_cor_{i}" for i in range(70, 75)]
    csf = [f"a_comp_cor_{i}" for i in range(57, 62)]
    motion = [f"{m}{s}" for m in MOTION for s in ("", "_derivative1")]
    assert list(selected.columns) == motion + wm + csf
    assert all(metadata[c]["Mask"] == "WM" for c in wm)
    # derivatives' undefined first row takes the second row's value
    assert selected["rot_z_derivative1"].iloc[0] == table["rot_z_derivative1"].iloc[1]
    combined = dataclasses.replace(conn, compcor=CompCor(combined=3))
    chosen = select_confounds(table, metadata, combined, OLD.name).columns[-3:]
    assert list(chosen) == ["a_comp_cor_00", "a_comp_cor_01", "a_comp_cor_02"]
    with pytest.raises(UserInputError, match="JSON sidecar"):
        select_confounds(table, {}, conn, OLD.name)


def test_v21_layout_without_json_uses_prefixes(caplog):
    table, metadata = load_confounds_table(_need(V21))
    conn = load_strategy("conn")
    with_json = select_confounds(table, metadata, conn, V21.name)
    without = select_confounds(table, {}, conn, V21.name)
    pd.testing.assert_frame_equal(with_json, without)
    compcor = [c for c in without.columns if "comp_cor" in c]
    assert compcor == [f"w_comp_cor_0{i}" for i in range(4)] + [
        f"c_comp_cor_0{i}" for i in range(3)
    ]
    assert "fewer than the 5 asked for" in caplog.text
    combined = dataclasses.replace(conn, compcor=CompCor(combined=2))
    assert list(select_confounds(table, {}, combined, V21.name).columns[-2:]) == [
        "a_comp_cor_00",
        "a_comp_cor_01",
    ]


def test_missing_columns_are_named():
    table, metadata = load_confounds_table(_need(DS31))
    with pytest.raises(UserInputError) as err:
        select_confounds(table, metadata, load_strategy("36p"), DS31.name)
    message = str(err.value)
    assert message.startswith(DS31.name)
    for name in ("trans_x_derivative1", "rot_z_power2", "csf", "csf_derivative1_power2"):
        assert name in message
    assert "white_matter," not in message  # present in this table
    no_compcor = table.drop(columns=[c for c in table if "comp_cor" in c])
    with pytest.raises(UserInputError, match=r"w_comp_cor_\* \(white-matter aCompCor\)"):
        strategy = Strategy(name="x", compcor=CompCor(wm=5))
        select_confounds(no_compcor, {}, strategy, DS31.name)


def test_non_steady_state_count():
    assert non_steady_state_count(load_confounds_table(_need(V21))[0], None) == 3
    assert non_steady_state_count(load_confounds_table(_need(OLD))[0], None) == 1
    table = load_confounds_table(_need(DS31))[0]
    assert non_steady_state_count(table, None) == 0
    assert non_steady_state_count(table, 4) == 4
    with pytest.raises(UserInputError, match="--dummy-scans 40"):
        non_steady_state_count(table, 40)
    gap = pd.DataFrame({"non_steady_state_outlier00": [1, 0, 0, 0, 0]})
    gap["non_steady_state_outlier01"] = [0, 1, 0, 0, 0]
    gap["non_steady_state_outlier02"] = [0, 0, 0, 1, 0]  # not at the start: kept
    assert non_steady_state_count(gap, None) == 2


# --- outliers -------------------------------------------------------------------------------


def test_global_signal_z_known_values():
    # d = [0, 1, 2, 3, 4]: median 2; MATLAB prctile quartiles 0.75 and 3.25 (IQR 2.5)
    z = global_signal_z(np.array([0.0, 1.0, 3.0, 6.0, 10.0]))
    sigma = 0.7413 * 2.5
    np.testing.assert_allclose(z, [0.0, -1 / sigma, 0.0, 1 / sigma, 2 / sigma])
    assert np.all(global_signal_z(np.full(6, 7.0)) == 0)  # IQR 0 -> 1, no division by 0


def test_art_outliers_on_constructed_series():
    rng = np.random.default_rng(0)
    n = 60
    gs = 1000 + np.sin(np.arange(n) / 5.0) + rng.normal(0, 0.2, n)
    gs[20:] += 10.0  # step: one large change at 20
    gs[40] += 10.0  # spike: large changes at 40 and 41
    fd = np.abs(rng.normal(0.1, 0.05, n))
    fd[0] = np.nan
    fd[30] = 1.5
    expected = np.zeros(n, dtype=bool)
    expected[[19, 20, 29, 30, 39, 40, 41]] = True
    np.testing.assert_array_equal(art_outliers(fd, gs, 0.9, 5.0), expected)
    only_gs = art_outliers(fd, gs, None, 5.0)
    assert np.flatnonzero(only_gs).tolist() == [19, 20, 39, 40, 41]
    assert np.flatnonzero(art_outliers(fd, None, 0.9, None)).tolist() == [29, 30]
    assert not art_outliers(fd, gs, 2.0, 50.0).any()


def test_scrub_outliers_per_detector():
    table = load_confounds_table(_need(V21))[0].iloc[3:]
    fd = table["framewise_displacement"].to_numpy()
    gs = table["global_signal"].to_numpy()
    flagged = scrub_outliers(load_strategy("36p", fd_threshold=1.0), fd, gs)
    np.testing.assert_array_equal(flagged, fd > 1.0)  # XCP-D: the volume itself only
    assert 0 < flagged.sum() < art_outliers(fd, gs, 1.0, None).sum() < fd.size
    conn = load_strategy("conn")
    np.testing.assert_array_equal(scrub_outliers(conn, fd, gs), art_outliers(fd, gs, 0.9, 5.0))
    assert not scrub_outliers(Strategy(name="none"), fd).any()
    with pytest.raises(ValueError, match="global signal"):
        scrub_outliers(conn, fd)


def test_spike_regressors():
    outliers = np.zeros(8, dtype=bool)
    outliers[[2, 5]] = True
    spikes = spike_regressors(outliers)
    assert spikes.shape == (8, 2)
    np.testing.assert_array_equal(spikes.sum(axis=0), [1, 1])
    assert spikes[2, 0] == 1 and spikes[5, 1] == 1
    assert spike_regressors(np.zeros(4, dtype=bool)).shape == (4, 0)
