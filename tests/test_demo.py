"""Tests of the demo generator: layout, fMRIPrep-style confounds, TemplateFlow home, known answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_ketamine_fc.demo import generate_demo, write_templateflow_home
from bids_ketamine_fc.demo.anatomy import Grid, bold_grid, hospa_labels, tissue_fractions

SPACE = "MNI152NLin2009cAsym"
N_DUMMY = 2


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return generate_demo(out, n_subjects=4, n_volumes=60, n_jobs=1, templateflow=False)


def _func(result, label):
    return result["fmriprep_dir"] / label / "func" / f"{label}_task-rest"


def _load_run(result, label):
    stem = _func(result, label)
    bold = nb.load(f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz")
    mask = np.asarray(nb.load(f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz").dataobj) > 0
    table = pd.read_csv(f"{stem}_desc-confounds_timeseries.tsv", sep="\t")
    metadata = json.loads(open(f"{stem}_desc-confounds_timeseries.json").read())
    return bold, mask, table, metadata


def test_files_exist_with_bids_names(small):
    bids, fmriprep = small["bids_dir"], small["fmriprep_dir"]
    for name in (
        "dataset_description.json",
        "README",
        "participants.tsv",
        "participants.json",
        "phenotype/pain.tsv",
        "phenotype/pain.json",
        "task-rest_bold.json",
    ):
        assert (bids / name).is_file(), name
    assert (small["ground_truth_tsv"]).parent == bids.parent  # truth stays outside the dataset
    description = json.loads((fmriprep / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert "bids_ketamine_fc.demo" in description["GeneratedBy"][0]["Name"]
    labels = pd.read_csv(bids / "participants.tsv", sep="\t")["participant_id"]
    assert list(labels) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    for label in labels:
        assert (bids / label / "anat" / f"{label}_T1w.nii.gz").is_file()
        assert (bids / label / "func" / f"{label}_task-rest_bold.nii.gz").is_file()
        stem = _func(small, label)
        for suffix in (
            f"_space-{SPACE}_desc-preproc_bold.nii.gz",
            f"_space-{SPACE}_desc-preproc_bold.json",
            f"_space-{SPACE}_desc-brain_mask.nii.gz",
            "_desc-confounds_timeseries.tsv",
            "_desc-confounds_timeseries.json",
        ):
            assert os.path.isfile(f"{stem}{suffix}"), suffix
    sidecar = json.loads(
        open(f"{_func(small, 'sub-01')}_space-{SPACE}_desc-preproc_bold.json").read()
    )
    assert sidecar["RepetitionTime"] == 2.0 and sidecar["SkullStripped"] is False


def test_bold_grid_header_and_dummies(small):
    bold, mask, _, _ = _load_run(small, "sub-02")
    assert bold.shape == (49, 58, 49, 60) and bold.get_data_dtype() == np.float32
    expected = np.diag([4.0, 4.0, 4.0, 1.0])
    expected[:3, 3] = (-96, -132, -78)
    np.testing.assert_allclose(bold.affine, expected)
    assert bold.header.get_zooms()[3] == pytest.approx(2.0)
    data = np.asarray(bold.dataobj)[mask]
    mean = data.mean(axis=0)
    assert mean[0] > 1.4 * np.median(mean) and mean[1] > 1.1 * np.median(mean)


def test_confounds_tsv_and_json_agree(small):
    _, _, table, metadata = _load_run(small, "sub-01")
    assert set(metadata) <= set(table.columns)
    for column in ("global_signal", "csf", "white_matter", "trans_x", "rot_z"):
        for suffix in ("", "_derivative1", "_power2", "_derivative1_power2"):
            assert f"{column}{suffix}" in table.columns
        assert np.isnan(table[f"{column}_derivative1"].iloc[0])
    np.testing.assert_allclose(table["trans_y_power2"], table["trans_y"] ** 2)
    for column in ("framewise_displacement", "dvars", "std_dvars"):
        assert np.isnan(table[column].iloc[0]) and table[column].iloc[1:].notna().all()
    for prefix, mask in (("c_comp_cor", "CSF"), ("w_comp_cor", "WM"), ("a_comp_cor", "combined")):
        names = sorted(c for c in table.columns if c.startswith(prefix))
        assert len(names) >= 5 and names[0] == f"{prefix}_00"
        entries = [metadata[n] for n in names]
        assert {e["Mask"] for e in entries} == {mask}
        assert all(e["Method"] == "aCompCor" and e["Retained"] is True for e in entries)
        explained = np.array([e["VarianceExplained"] for e in entries])
        assert np.all(np.diff(explained) <= 0)
        np.testing.assert_allclose(
            np.cumsum(explained), [e["CumulativeVarianceExplained"] for e in entries]
        )
        assert (table[names].iloc[:N_DUMMY] == 0).all().all()
    for k in range(N_DUMMY):
        assert table[f"non_steady_state_outlier{k:02d}"].tolist() == [
            float(i == k) for i in range(60)
        ]
    spikes = [c for c in table.columns if c.startswith("motion_outlier")]
    flagged = sorted(int(np.argmax(table[c])) for c in spikes)
    expected = np.flatnonzero(
        (table["framewise_displacement"].fillna(0) > 0.5) | (table["std_dvars"].fillna(0) > 1.5)
    )
    assert flagged == list(expected)
    assert metadata["global_signal"] == {"Method": "Mean"}


def _dct_basis(n: int, tr: float, period: float = 128.0) -> np.ndarray:
    """Discrete cosine (DCT-II) high-pass basis, written from its definition."""
    order = max(int(np.floor(2 * n * tr / period)), 1)
    time = np.arange(n)[:, None]
    return np.sqrt(2.0 / n) * np.cos(np.pi / n * (time + 0.5) * np.arange(1, order))


def test_compcor_components_are_pca_of_masked_data(small):
    bold, brain, table, metadata = _load_run(small, "sub-03")
    # fMRIPrep's CompCor masks are on the BOLD grid (the probseg files are on the 2 mm anat grid)
    tissue = tissue_fractions(Grid(bold.shape[:3], bold.affine))
    masks = {
        "c_comp_cor": (tissue["CSF"] >= 0.99) & brain,
        "w_comp_cor": (tissue["WM"] >= 0.99) & brain,
        "a_comp_cor": (tissue["CSF"] + tissue["WM"] >= 0.99) & brain,
    }
    data = np.asarray(bold.dataobj)
    basis = _dct_basis(60 - N_DUMMY, 2.0)
    cosines = sorted(c for c in table.columns if c.startswith("cosine"))
    assert len(cosines) == basis.shape[1]  # 58 volumes of 2 s hold no period of >= 128 s ...
    np.testing.assert_allclose(table[cosines].iloc[N_DUMMY:].to_numpy(), basis, atol=1e-8)
    design = np.column_stack([basis, np.ones(len(basis))])
    for prefix, mask in masks.items():
        series = data[mask][:, N_DUMMY:].T.astype(np.float64)
        residual = series - design @ np.linalg.lstsq(design, series, rcond=None)[0]
        residual /= residual.std(axis=0)
        u, s, _ = np.linalg.svd(residual, full_matrices=False)
        names = sorted(c for c in table.columns if c.startswith(prefix))
        written = table[names].iloc[N_DUMMY:].to_numpy()
        for k in range(5):
            assert abs(np.corrcoef(u[:, k], written[:, k])[0, 1]) > 0.999, (prefix, k)
            assert metadata[names[k]]["SingularValue"] == pytest.approx(s[k], rel=1e-3)
            assert metadata[names[k]]["VarianceExplained"] == pytest.approx(
                s[k] ** 2 / np.sum(s**2), rel=1e-3
            )


def test_framewise_displacement_matches_nipype_power(small, tmp_path):
    from nipype.algorithms.confounds import FramewiseDisplacement

    _, _, table, _ = _load_run(small, "sub-04")
    params = table[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    np.savetxt(tmp_path / "rp.txt", params)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = FramewiseDisplacement(
            in_file=str(tmp_path / "rp.txt"), parameter_source="SPM"
        ).run()
    finally:
        os.chdir(cwd)
    expected = np.loadtxt(result.outputs.out_file, skiprows=1)
    np.testing.assert_allclose(table["framewise_displacement"].iloc[1:], expected, rtol=1e-6)
    assert 0.02 < np.nanmean(table["framewise_displacement"]) < 1.0


def test_dvars_is_rms_of_temporal_difference(small):
    bold, brain, table, _ = _load_run(small, "sub-01")
    data = np.asarray(bold.dataobj)[brain].astype(np.float64)
    data *= 1000.0 / np.median(data)
    expected = np.sqrt((np.diff(data, axis=1) ** 2).mean(axis=0))
    np.testing.assert_allclose(table["dvars"].iloc[1:], expected, rtol=1e-5)


def test_phenotype_gives_the_groups(small):
    bids = small["bids_dir"]
    pain = pd.read_csv(bids / "phenotype" / "pain.tsv", sep="\t")
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    assert "group" not in pain.columns and "group" not in participants.columns
    for table, sidecar in ((pain, "phenotype/pain.json"), (participants, "participants.json")):
        assert set(json.loads((bids / sidecar).read_text())) == set(table.columns)
    improvement = (pain["nrs_pre"] - pain["nrs_post"]) / pain["nrs_pre"]
    truth = pd.read_csv(small["ground_truth_tsv"], sep="\t")
    assert list(np.where(improvement >= 0.5, "R", "NR")) == list(truth["group"])
    assert (truth["group"] == "R").sum() == 2
    assert pain[["nrs_pre", "nrs_post"]].isin(range(11)).all().all()
    assert participants["age"].between(27, 81).all() and set(participants["sex"]) <= {"F", "M"}
    np.testing.assert_allclose(truth["improvement"], improvement)


def test_templateflow_home_is_readable_by_templateflow(tmp_path):
    home = write_templateflow_home(tmp_path / "tf")
    script = """
import json
from templateflow import api
found = {}
for space in ("MNI152NLin2009cAsym", "MNI152NLin6Asym"):
    for atlas, desc in (("HOSPA", "th25"), ("HOCPA", "th25"), ("Schaefer2018", "200Parcels7Networks")):
        found[f"{space}-{atlas}"] = str(api.get(space, resolution=2, atlas=atlas, desc=desc,
                                                suffix="dseg", extension=".nii.gz"))
        found[f"{space}-{atlas}-tsv"] = str(api.get(space, atlas=atlas, suffix="dseg", extension=".tsv"))
    found[f"{space}-mask"] = str(api.get(space, resolution=2, desc="brain", suffix="mask",
                                         extension=".nii.gz"))
print(json.dumps(found))
"""
    unreachable = "http://127.0.0.1:9"  # any download attempt fails at once
    env = dict(
        os.environ,
        TEMPLATEFLOW_HOME=str(home),
        TEMPLATEFLOW_AUTOUPDATE="0",
        HTTP_PROXY=unreachable,
        HTTPS_PROXY=unreachable,
        NO_PROXY="",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(found) == 14
    for path in found.values():
        assert path.startswith(str(home)) and os.path.getsize(path) > 0
    assert "not the real atlas" in (home / "README.md").read_text()
    sidecar = home / "tpl-MNI152NLin6Asym" / "tpl-MNI152NLin6Asym_atlas-HOSPA_desc-th25_dseg.json"
    assert "not the real atlas" in sidecar.read_text()


def _label_at(image: nb.Nifti1Image, xyz) -> int:
    ijk = np.rint(np.linalg.inv(image.affine) @ [*xyz, 1.0])[:3].astype(int)
    return int(np.asarray(image.dataobj)[tuple(ijk)])


def test_atlas_labels_sit_at_their_mni_positions(tmp_path):
    home = write_templateflow_home(tmp_path / "tf")
    for space in ("MNI152NLin2009cAsym", "MNI152NLin6Asym"):
        folder = home / f"tpl-{space}"
        hospa = nb.load(folder / f"tpl-{space}_res-02_atlas-HOSPA_desc-th25_dseg.nii.gz")
        assert hospa.shape == ((97, 115, 97) if space == SPACE else (91, 109, 91))
        for label, xyz in (
            (10, (-23, -5, -18)),
            (11, (-10, 12, -8)),
            (20, (23, -5, -18)),
            (21, (10, 12, -8)),
        ):
            assert _label_at(hospa, xyz) == label, (space, label)
        hocpa = nb.load(folder / f"tpl-{space}_res-02_atlas-HOCPA_desc-th25_dseg.nii.gz")
        names = pd.read_csv(folder / f"tpl-{space}_atlas-HOCPA_dseg.tsv", sep="\t").set_index(
            "index"
        )["name"]
        assert names[_label_at(hocpa, (6, -62, 42))] == "Precuneous Cortex"
        assert names[_label_at(hocpa, (44, 8, 2))] == "Insular Cortex"
        schaefer = nb.load(
            folder / f"tpl-{space}_res-02_atlas-Schaefer2018_desc-200Parcels7Networks_dseg.nii.gz"
        )
        table = pd.read_csv(
            folder / f"tpl-{space}_atlas-Schaefer2018_desc-200Parcels7Networks_dseg.tsv", sep="\t"
        )
        assert list(table["index"]) == list(range(1, 201))
        assert set(np.unique(np.asarray(schaefer.dataobj))) == set(range(201))
        parcel_names = table.set_index("index")["name"]
        assert "_Default_PFC_" in parcel_names[_label_at(schaefer, (1, 55, -3))]
        assert "_Default_PCC_" in parcel_names[_label_at(schaefer, (1, -61, 38))]
        assert parcel_names[_label_at(schaefer, (-30, -80, -10))].startswith("7Networks_LH_Vis")


def test_cli_writes_the_fsl_las_grid_and_rejects_bad_options(tmp_path):
    out = tmp_path / "demo6"
    command = [
        sys.executable,
        "-m",
        "bids_ketamine_fc.demo",
        str(out),
        "--n-subjects",
        "2",
        "--n-volumes",
        "40",
        "--voxel-size",
        "6",
        "--space",
        "MNI152NLin6Asym",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"bids_dir: {out / 'bids'}" in done.stdout
    grid = bold_grid("MNI152NLin6Asym", 6.0)
    stem = out / "bids" / "derivatives" / "fmriprep" / "sub-01"
    bold = nb.load(
        stem / "func" / "sub-01_task-rest_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    )
    assert bold.shape == (*grid.shape, 40) and bold.affine[0, 0] == -6.0  # LAS
    # left is left: the written grey-matter map agrees with the anatomy at world coordinates
    gm = nb.load(stem / "anat" / "sub-01_space-MNI152NLin6Asym_res-2_label-GM_probseg.nii.gz")
    assert gm.shape == bold_grid("MNI152NLin6Asym", 2.0).shape  # fMRIPrep's 2 mm anat grid
    for xyz, inside in (((-23, -5, -18), True), ((23, -5, -18), True), ((-30, -20, 20), False)):
        label = hospa_labels(np.array([xyz], dtype=float))[0]
        assert (label in (10, 20)) is inside
        assert (_label_at_float(gm, xyz) > 0.5) is inside
    bad = subprocess.run(
        command[:4] + ["--n-subjects", "1"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 64 and "--n-subjects" in bad.stderr and "Traceback" not in bad.stderr


def _label_at_float(image, xyz) -> float:
    ijk = np.rint(np.linalg.inv(image.affine) @ [*xyz, 1.0])[:3].astype(int)
    return float(np.asarray(image.dataobj)[tuple(ijk)])


def test_same_seed_same_data_in_one_or_two_processes(tmp_path):
    kwargs = {"n_subjects": 2, "n_volumes": 40, "voxel_size": 8.0, "templateflow": False}
    one = generate_demo(tmp_path / "one", n_jobs=1, **kwargs)
    two = generate_demo(tmp_path / "two", n_jobs=2, **kwargs)
    pd.testing.assert_frame_equal(one["ground_truth"], two["ground_truth"])
    for result in (one, two):
        result["table"] = pd.read_csv(
            f"{_func(result, 'sub-02')}_desc-confounds_timeseries.tsv", sep="\t"
        )
    pd.testing.assert_frame_equal(one["table"], two["table"])


def _sphere_mean(data, affine, centre, radius):
    ijk = np.argwhere(np.ones(data.shape[:3], dtype=bool))
    inside = np.linalg.norm(nb.affines.apply_affine(affine, ijk) - centre, axis=1) <= radius
    return data[tuple(ijk[inside].T)].mean(axis=0)


def _region_correlations(result, label) -> dict:
    """Raw and denoised correlations of mPFC with precuneus and with visual cortex."""
    from nilearn.signal import clean

    bold, _, table, _ = _load_run(result, label)
    data = np.asarray(bold.dataobj)
    series = np.column_stack(
        [
            _sphere_mean(data, bold.affine, (1, 55, -3), 8),
            _sphere_mean(data, bold.affine, (1, -63, 41), 10),
            _sphere_mean(data, bold.affine, (-10, -90, 2), 8)
            + _sphere_mean(data, bold.affine, (10, -90, 2), 8),
        ]
    )
    motion = [
        f"{m}{d}"
        for m in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
        for d in ("", "_derivative1")
    ]
    spikes = list(table.filter(regex="^(motion_outlier|non_steady_state)").columns)
    names = [f"{p}_{k:02d}" for p in ("w_comp_cor", "c_comp_cor") for k in range(5)]
    # CONN-style: scrubbing as spike regressors, regressed with the band-pass (no interpolation)
    cleaned = clean(
        series,
        confounds=table[names + motion + spikes].fillna(0).to_numpy(),
        detrend=True,
        standardize="zscore_sample",
        high_pass=0.008,
        low_pass=0.09,
        t_r=2.0,
        filter="butterworth",
    )
    keep = table[spikes].sum(axis=1).to_numpy() == 0
    raw = np.corrcoef(series[N_DUMMY:].T)
    denoised = np.corrcoef(cleaned[keep].T)
    return {
        "raw_mpfc_visual": raw[0, 2],
        "mpfc_visual": denoised[0, 2],
        "raw_mpfc_precuneus": raw[0, 1],
        "mpfc_precuneus": denoised[0, 1],
    }


def test_known_answer_denoising_reveals_lower_coupling_in_responders(tmp_path):
    result = generate_demo(
        tmp_path / "ka",
        n_subjects=8,
        n_volumes=150,
        voxel_size=6.0,
        seed=3,
        n_jobs=1,
        templateflow=False,
    )
    truth = result["ground_truth"]
    rows = [_region_correlations(result, label) for label in truth["participant_id"]]
    measured = pd.DataFrame(rows)
    responders = (truth["group"] == "R").to_numpy()
    # without denoising, shared noise makes unrelated regions correlate strongly and hides the effect
    assert measured["raw_mpfc_visual"].mean() > 0.6
    raw = measured["raw_mpfc_precuneus"]
    assert abs(raw[responders].mean() - raw[~responders].mean()) < 0.15
    # denoising removes it and reveals the planted coupling (margins from seeds 0-9 at this size)
    assert abs(measured["mpfc_visual"].mean()) < 0.25
    coupling = measured["mpfc_precuneus"]
    assert coupling[responders].mean() < coupling[~responders].mean() - 0.15
    assert np.corrcoef(coupling, truth["planted_coupling"])[0, 1] > 0.5
    assert np.corrcoef(coupling, truth["improvement"])[0, 1] < -0.4
