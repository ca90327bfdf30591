"""The ``conn`` presets against CONN's own code (numbers in ``data/conn/conn_reference.json``).

The reference numbers were computed by CONN 20.a (github alfnie/conn, commit 1f26d3e) with SPM12
(github spm/spm12, commit 03ac947) under GNU Octave 7.3 on the fixture in ``data/conn`` (see its
README for the CONN lines and functions that produced each number).
"""

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_ketamine_fc.config import RunOptions
from bids_ketamine_fc.participant.art import ArtGlobalSignal, SpmGlobal, composite_motion
from bids_ketamine_fc.participant.bold import brain_voxel_index
from bids_ketamine_fc.participant.compcor import TissueSeries, conn_components, tissue_mask
from bids_ketamine_fc.participant.confounds import art_outliers
from bids_ketamine_fc.participant.hrf import central_difference, effect_of_rest, spm_hrf
from bids_ketamine_fc.participant.outputs import write_subject_maps
from bids_ketamine_fc.participant.run import process_run
from bids_ketamine_fc.participant.strategy import load_strategy

DATA = Path(__file__).parent / "data" / "conn"
REF = json.loads((DATA / "conn_reference.json").read_text())
SPACE = "space-MNI152NLin2009cAsym"
RUNS = {1: (150, 2.5), 2: (151, 3.0)}
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def run_dict(run: int, probseg: bool = True) -> dict:
    stem = f"sub-01_task-rest_run-{run}"
    maps = {
        label: str(DATA / f"sub-01_{SPACE}_res-1_label-{label}_probseg.nii.gz")
        for label in ("GM", "WM", "CSF")
    }
    return {
        "bold": str(DATA / f"{stem}_{SPACE}_desc-preproc_bold.nii.gz"),
        "mask": str(DATA / f"{stem}_{SPACE}_desc-brain_mask.nii.gz"),
        "confounds": str(DATA / f"{stem}_desc-confounds_timeseries.tsv"),
        "tr": RUNS[run][1],
        "prefix": stem,
        "space_prefix": f"{stem}_{SPACE}",
        "space": "MNI152NLin2009cAsym",
        "probseg": maps if probseg else {},
    }


OPTIONS = RunOptions(
    seeds=str(DATA / "seeds.json"), smoothing_fwhm=0.0, min_volumes=10, reduced_dims=0
)


def bold_frames(run: int) -> tuple[np.ndarray, np.ndarray, nb.Nifti1Image]:
    """Return all voxels' series (T, n_grid) in Fortran order, the brain index and the image."""
    img = nb.load(run_dict(run)["bold"])
    flat = img.get_fdata(dtype=np.float32).reshape(-1, img.shape[3], order="F").T
    mask = np.asarray(nb.load(run_dict(run)["mask"]).dataobj) > 0
    return flat, brain_voxel_index(mask), img


def motion(run: int) -> np.ndarray:
    return pd.read_csv(run_dict(run)["confounds"], sep="\t")[MOTION].to_numpy()


def test_spm_hrf_and_effect_of_rest_equal_conn():
    assert np.abs(spm_hrf(0.25) - REF["spm_hrf_0.25"]).max() < 1e-14
    assert np.abs(spm_hrf(0.3) - REF["spm_hrf_0.3"]).max() < 1e-14
    for run, (n, tr) in RUNS.items():
        rest = effect_of_rest(n, tr)
        assert np.abs(rest - REF["effect_of_rest"][run - 1]).max() < 1e-13
    # the values the issue quotes at TR 2.5 s: not a constant
    assert np.round(effect_of_rest(150, 2.5)[:5], 2).tolist() == [0.01, 0.23, 0.7, 1.03, 1.14]


def test_central_difference_repeats_the_ends():
    x = np.array([0.0, 1.0, 4.0, 9.0])
    assert central_difference(x).tolist() == [1.0, 4.0, 8.0, 5.0]


def test_art_measures_and_outliers_equal_art():
    moved = np.concatenate([composite_motion(motion(run)) for run in RUNS])
    assert np.abs(moved - REF["art_composite_motion"]).max() < 1e-10
    flagged = []
    for run in RUNS:
        flat, brain, _ = bold_frames(run)
        art = ArtGlobalSignal(brain)
        art.update(flat[:60])  # two blocks, as the reader hands them
        art.update(flat[60:])
        signal = art.signal(flat[:, brain], flat[:, brain].mean(axis=1, dtype=np.float64))
        expected = np.array(REF["art_global_signal"][run - 1])
        assert np.abs(signal - expected).max() < 1e-8 * np.abs(expected).max() + 1e-7
        flagged.append(art_outliers(composite_motion(motion(run)), signal, 0.9, 5.0))
    assert (np.flatnonzero(np.concatenate(flagged)) + 1).tolist() == REF["art_outliers"]


def test_art_global_signal_mask_and_spm_global_fallback():
    rng = np.random.default_rng(5)
    volumes = rng.uniform(0, 5, (12, 2000)).astype(np.float32)
    volumes[:, :300] += 1000  # a "head" of 300 voxels, the first 100 the brain mask
    volumes[3, :3] = 1  # three brain voxels and ...
    volumes[7, 200:202] = 1  # ... two other head voxels dip below 1/8 of the mean once
    art = ArtGlobalSignal(np.arange(100))
    art.update(volumes[:5])  # blocks, as the reader hands them
    art.update(volumes[5:])
    brain = volumes[:, :100]
    signal = art.signal(brain, brain.mean(axis=1, dtype=np.float64))
    keep = np.r_[3:200, 202:300]  # voxels above the threshold in every volume
    assert np.allclose(signal, volumes[:, keep].mean(axis=1, dtype=np.float64), rtol=1e-12)
    small = volumes[:, 150:]  # a head of 150 of 1850 voxels: under a tenth, ART uses spm_global
    art = ArtGlobalSignal(np.arange(100, 150))
    art.update(small)
    assert art.signal(small[:, 100:150], small[:, 100:150].mean(axis=1)) is None
    spm = SpmGlobal()
    spm.update(small)
    expected = [v[v > v.mean() / 8].mean() for v in small.astype(float)]
    assert np.allclose(np.concatenate(spm.values), expected, rtol=1e-12)


def test_compcor_from_tissue_maps_spans_conns_components():
    for run, (n, tr) in RUNS.items():
        flat, brain, img = bold_frames(run)
        outliers = np.zeros(n, bool)
        start = 0 if run == 1 else RUNS[1][0]
        listed = np.array(REF["art_outliers"]) - 1 - start
        outliers[listed[(listed >= 0) & (listed < n)]] = True
        covariates = np.column_stack(
            [np.linspace(-1, 1, n), motion(run), np.eye(n)[:, outliers], effect_of_rest(n, tr)]
        )
        for label, key, n_map, n_bold in (("WM", "wm", 64, 24), ("CSF", "csf", 110, 25)):
            path = run_dict(run)["probseg"][label]
            mask = tissue_mask(path, label, img.affine, img.shape)
            assert (mask.weight.sum(), mask.index.size) == (n_map, n_bold)
            tissue = TissueSeries([mask])
            tissue.update(flat)
            ours = conn_components(tissue.series(mask), mask.weight, covariates, 5)
            theirs = np.column_stack([np.ones(n), REF[f"{key}_components"][run - 1]])
            fitted = theirs @ np.linalg.lstsq(theirs, ours, rcond=None)[0]
            relative = np.linalg.norm(ours - fitted, axis=0) / np.linalg.norm(ours, axis=0)
            assert relative.max() < 1e-4, (run, label, relative)


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """Both runs through process_run with the conn and conn-simult presets (no smoothing)."""
    results = {}
    for preset in ("conn", "conn-simult"):
        strategy = load_strategy(preset)
        for run in RUNS:
            out = tmp_path_factory.mktemp(f"{preset}{run}")
            results[preset, run] = process_run(run_dict(run), strategy, OPTIONS, out)
    return results


def map_values(path: str) -> np.ndarray:
    data = np.asarray(nb.load(path).dataobj).ravel(order="F")
    return data[np.asarray(REF["voxels"]) - 1]


@pytest.mark.parametrize("n_runs", [1, 2])
@pytest.mark.parametrize(("preset", "order"), [("conn", "regbp"), ("conn-simult", "simult")])
def test_fisher_z_equals_conn(processed, tmp_path, preset, order, n_runs):
    results = [processed[preset, run] for run in range(1, n_runs + 1)]
    assert all(r["qc"]["compcor_source"] == "tissue maps" for r in results)
    assert [r["qc"]["n_dummy"] for r in results] == [0] * n_runs
    if n_runs == 1:
        maps = [results[0]["files"][f"seed-{seed}"] for seed in ("A", "B")]
    else:
        prefixes = [f"sub-01_task-rest_run-{run}" for run in (1, 2)]
        maps = write_subject_maps("01", "rest", SPACE, results, prefixes, tmp_path)
    expected = np.array(REF[f"z_{order}_{n_runs}run"])
    ours = np.stack([map_values(path) for path in maps])
    # measured: max |dz| 2.6e-6 (RegBP, 1 run), 1.7e-6 (RegBP, 2), 5.3e-6 (Simult, 1), 3.1e-6 (2)
    assert np.abs(ours - expected).max() < 1e-4
    assert np.abs(ours - expected).mean() < 1e-5


@pytest.mark.parametrize(("preset", "order"), [("conn", "regbp"), ("conn-simult", "simult")])
def test_seed_series_equal_conn(processed, preset, order):
    table = pd.read_csv(processed[preset, 1]["files"]["timeseries"], sep="\t")
    expected = np.array(REF[f"seeds_denoised_{order}_1run"]).T
    scale = np.abs(expected).max()
    assert np.abs(table[["A", "B"]].to_numpy() - expected).max() < 1e-4 * scale


def test_missing_tissue_maps_fall_back_to_fmriprep_columns(tmp_path):
    result = process_run(run_dict(1, probseg=False), load_strategy("conn"), OPTIONS, tmp_path)
    qc = pd.read_csv(result["files"]["qc"], sep="\t")
    assert qc["compcor_source"][0] == "fMRIPrep confounds"
    assert "tissue probability maps" in qc["notes"][0]
    assert "w_comp_cor_00" in qc["regressors"][0] and "wm_conn_00" not in qc["regressors"][0]
    sidecar = json.loads(Path(result["files"]["seed-A-json"]).read_text())
    assert sidecar["CompCorSource"] == "fMRIPrep confounds"
    assert any("tissue probability maps" in note for note in sidecar["DenoisingNotes"])


def test_collect_runs_finds_tissue_maps_at_any_resolution(tmp_path):
    from datasets import AFFINE, SHAPE, make_dataset

    from bids_ketamine_fc.utils.bids import collect_runs

    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=20)
    fmriprep = bids / "derivatives" / "fmriprep"
    anat = fmriprep / "sub-01" / "anat"
    anat.mkdir()
    for res, zoom in (("2", 1.0), ("1", 0.5)):  # a coarse and a fine grid
        affine = AFFINE.copy()
        affine[:3, :3] *= zoom
        shape = tuple(int(n / zoom) for n in SHAPE)
        for label in ("GM", "WM", "CSF"):
            name = f"sub-01_space-MNI152NLin2009cAsym_res-{res}_label-{label}_probseg.nii.gz"
            nb.save(nb.Nifti1Image(np.zeros(shape, np.float32), affine), anat / name)
    (run,) = collect_runs(fmriprep, "rest", "MNI152NLin2009cAsym")
    assert sorted(run.probseg) == ["CSF", "GM", "WM"]
    assert all("_res-1_" in path.name for path in run.probseg.values())  # the finest
