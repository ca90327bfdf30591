"""Group ICA: decomposition, dual regression, network matching and the R vs NR test of the DMN."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from conftest import _SCHAEFER_BLOBS
from datasets import AFFINE, SHAPE, brain_mask
from scipy import ndimage, stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group.ica import compare as ica_compare
from bids_ketamine_fc.group.ica import data as ica_data
from bids_ketamine_fc.group.ica import decompose as ica
from bids_ketamine_fc.group.ica import match as ica_match
from bids_ketamine_fc.group.ica import run as ica_run
from bids_ketamine_fc.group.inference import clusters

SPACE = "MNI152NLin2009cAsym"
N_PER_GROUP = 10
K = 40  # reduced volumes per participant
N_COMPONENTS = 4
SOURCES = {  # name -> blob centres (MNI mm); Gaussian blobs of SIGMA_MM
    "dmn": [(1.0, 55.0, -3.0), (1.0, -61.0, 38.0)],
    "vis": [(0.0, -88.0, 4.0)],
    "motor": [(-38.0, -22.0, 56.0), (38.0, -22.0, 56.0)],
}
SIGMA_MM = 12.0
AMPLITUDE = 2.0
DMN_AMPLITUDE = {"R": 0.8, "NR": 2.0}  # responders' DMN is weaker (planted R < NR)
NOISE = 1.0


def _world() -> np.ndarray:
    return nb.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T).reshape(*SHAPE, 3)


def _sources(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Return each source's map in ``mask`` (F order, as the package's masked arrays)."""
    xyz = _world()
    out = {}
    for name, centres in SOURCES.items():
        volume = sum(np.exp(-np.sum((xyz - c) ** 2, axis=-1) / (2 * SIGMA_MM**2)) for c in centres)
        out[name] = volume.ravel(order="F")[mask.ravel(order="F")]
    return out


def _subject_data(rng, mask, sources, group) -> np.ndarray:
    """Return ``(K, n_voxels)`` reduced data: sources with random time courses, smooth noise."""
    amplitude = {"dmn": DMN_AMPLITUDE[group], "vis": AMPLITUDE, "motor": AMPLITUDE}
    data = sum(
        np.outer(rng.standard_normal(K), amplitude[n] * (1 + 0.1 * rng.standard_normal()) * s)
        for n, s in sources.items()
    )
    noise = ndimage.gaussian_filter(rng.standard_normal((K, *SHAPE)), (0, 1, 1, 1))
    noise = noise.reshape(K, -1, order="F")[:, mask.ravel(order="F")]
    return data + NOISE * noise / noise.std()


def _write_reduced(out, pid, data, mask, affine=AFFINE, outside=0.0, int16=True) -> None:
    """Write reduced data as the participant level does: 0 outside, scaled int16 by default."""
    volume = np.full((*SHAPE, len(data)), outside, dtype=np.float32, order="F")
    flat = volume.reshape(-1, len(data), order="F")  # a view: volume is F-contiguous
    flat[mask.ravel(order="F")] = data.T
    func = out / pid / "func"
    func.mkdir(parents=True, exist_ok=True)
    img = nb.Nifti1Image(volume, affine)
    if int16:
        img.set_data_dtype(np.int16)
    nb.save(img, func / f"{pid}_task-rest_space-{SPACE}_desc-reduced_bold.nii.gz")
    sidecar = {"Dimensions": len(data), "VolumesKept": 150}  # as the participant level writes
    (func / f"{pid}_task-rest_space-{SPACE}_desc-reduced_bold.json").write_text(json.dumps(sidecar))


def _settings(root, out, seed=7) -> Settings:
    return Settings(
        bids_dir=root,
        output_dir=out,
        analysis_level="group",
        fmriprep_dir=root,
        work_dir=root / "work",
        ica_components=N_COMPONENTS,
        random_seed=seed,
    )


def _make_study(root):
    rng = np.random.default_rng(0)
    mask = brain_mask()
    sources = _sources(mask)
    rows = []
    for k in range(2 * N_PER_GROUP):
        pid, group = f"sub-{k + 1:02d}", "R" if k < N_PER_GROUP else "NR"
        _write_reduced(root / "out", pid, _subject_data(rng, mask, sources, group), mask)
        rows.append({"participant_id": pid, "group": group, "age": int(rng.integers(27, 82))})
    return pd.DataFrame(rows), mask, sources


@pytest.fixture(scope="module")
def study(tmp_path_factory, tf_home):
    root = tmp_path_factory.mktemp("ica")
    subjects, mask, sources = _make_study(root)
    settings = _settings(root, root / "out")
    labeller = clusters.PeakLabeller(SPACE, 2)
    found = ica_run.run_group_ica(settings, subjects, labeller)
    return {
        "root": root,
        "settings": settings,
        "subjects": subjects,
        "mask": mask,
        "sources": sources,
        "clusters": found,
        "labeller": labeller,
    }


def _ica_dir(study):
    return study["settings"].output_dir / "group" / "ica"


def _components(study) -> np.ndarray:
    img = nb.load(_ica_dir(study) / f"space-{SPACE}_desc-ica_components.nii.gz")
    data = np.asarray(img.dataobj)
    return data.reshape(-1, data.shape[-1], order="F")[study["mask"].ravel(order="F")].T


def test_sources_are_recovered(study):
    maps = _components(study)
    assert maps.shape[0] == N_COMPONENTS
    assert np.allclose(maps.mean(axis=1), 0, atol=1e-4) and np.allclose(
        maps.std(axis=1), 1, atol=1e-3
    )
    for name, source in study["sources"].items():
        r = [abs(np.corrcoef(m, source)[0, 1]) for m in maps]
        assert max(r) > 0.8, (name, r)
        best = maps[int(np.argmax(r))]
        assert np.corrcoef(best, source)[0, 1] > 0.8  # signed: the peak is positive
        assert best[np.argmax(np.abs(best))] > 0


def test_dmn_component_is_matched_and_selected(study):
    table = pd.read_csv(_ica_dir(study) / "components.tsv", sep="\t")
    assert list(table.columns[:6]) == [
        "component",
        "explained",
        "network",
        "r",
        "best_for",
        "selected",
    ]
    selected = table[table["selected"]]
    assert len(selected) == 1 and selected["network"].item() == "Default"
    assert "Default" in selected["best_for"].item().split(",")
    maps = _components(study)
    dmn = maps[selected["component"].item() - 1]
    assert np.corrcoef(dmn, study["sources"]["dmn"])[0, 1] > 0.8
    # Independent computation of the spatial correlation with the generated Default parcels.
    xyz = _world().reshape(-1, 3, order="F")[study["mask"].ravel(order="F")]
    default = np.zeros(len(xyz), bool)
    for name, centre, radius in _SCHAEFER_BLOBS.values():
        if "_Default_" in name:
            default |= np.linalg.norm(xyz - centre, axis=1) <= radius
    expected = np.corrcoef(dmn, default)[0, 1]
    assert selected["r_Default"].item() == pytest.approx(expected, abs=1e-5)
    assert selected["r"].item() == pytest.approx(expected, abs=1e-5)
    assert np.all(np.diff(table["explained"]) <= 0) and table["explained"].sum() < 1.0


def test_planted_group_difference_in_dmn_loading(study):
    found = study["clusters"]
    on_disk = pd.read_csv(_ica_dir(study) / "clusters.tsv", sep="\t")
    assert list(on_disk.columns) == list(clusters.COLUMNS) and len(on_disk) == len(found)
    assert set(found["inference"]) == {"rft"} and set(found["model"]) == {"groups", "groupsAge"}
    table = pd.read_csv(_ica_dir(study) / "components.tsv", sep="\t")
    label = ica_compare.component_label(
        int(table.loc[table["selected"], "component"].item()), N_COMPONENTS
    )
    significant = found[(found["p_fwe"] < 0.05) & (found["model"] == "groups")]
    assert set(significant["contrast"]) == {"NRgtR"}
    assert set(significant["seed"]) == {f"component-{label}"}
    peaks = significant[["peak_x", "peak_y", "peak_z"]].to_numpy()
    distance = np.min([np.linalg.norm(peaks - c, axis=1) for c in SOURCES["dmn"]], axis=0)
    assert distance.min() <= 15.0
    # The t map equals an independent two-sample t test of the written subject maps.
    t_path = (
        _ica_dir(study)
        / f"space-{SPACE}_component-{label}_model-groups_contrast-NRgtR_stat-t_boldmap.nii.gz"
    )
    t_map = np.asarray(nb.load(t_path).dataobj)
    ijk = tuple(np.rint(nb.affines.apply_affine(np.linalg.inv(AFFINE), peaks[0])).astype(int))
    values = {"R": [], "NR": []}
    for _, row in study["subjects"].iterrows():
        path = (
            _ica_dir(study)
            / f"{row['participant_id']}_space-{SPACE}_desc-dualreg_components.nii.gz"
        )
        values[row["group"]].append(nb.load(path).dataobj[(*ijk, int(label) - 1)])
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["TimePoints"] == 150 and sidecar["Method"].startswith("FSL dual_regression")
    expected = stats.ttest_ind(values["NR"], values["R"]).statistic
    assert t_map[ijk] == pytest.approx(expected, rel=1e-4)
    masks = sorted(
        _ica_dir(study).glob(
            f"*_component-{label}_model-groups_contrast-NRgtR_inference-rft_cluster-*_mask.nii.gz"
        )
    )
    assert len(masks) == len(significant)


def test_rerun_with_the_same_seed_is_identical(study, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for pid in study["subjects"]["participant_id"]:
        os.symlink(study["settings"].output_dir / pid, out / pid)
    settings = _settings(study["root"], out)
    found = ica_run.run_group_ica(settings, study["subjects"], study["labeller"])
    pd.testing.assert_frame_equal(found, study["clusters"])
    for name in (
        f"space-{SPACE}_desc-ica_components.nii.gz",
        f"sub-05_space-{SPACE}_desc-dualreg_components.nii.gz",
    ):
        again = np.asarray(nb.load(out / "group" / "ica" / name).dataobj)
        first = np.asarray(nb.load(_ica_dir(study) / name).dataobj)
        assert np.array_equal(again, first, equal_nan=True)
    for name in ("components.tsv", "clusters.tsv"):
        assert (out / "group" / "ica" / name).read_text() == (_ica_dir(study) / name).read_text()


def _fsl_dual_regression(series: np.ndarray, group_maps: np.ndarray) -> tuple:
    """FSL's dual_regression on time points: fsl_glm --demean, stage 2 with --des_norm."""
    design = group_maps.T.astype(float) - group_maps.T.mean(axis=0)
    centred = series - series.mean(axis=1, keepdims=True)
    stage1 = np.linalg.lstsq(design, centred.T, rcond=None)[0].T
    tc = stage1 - stage1.mean(axis=0)
    tc /= tc.std(axis=0, ddof=1)
    return stage1, np.linalg.lstsq(tc, series - series.mean(axis=0), rcond=None)[0]


def test_dual_regression_equals_fsl_on_time_points():
    rng = np.random.default_rng(3)
    n_time, k, n_vox, n_comp = 60, 15, 400, 4
    basis = rng.standard_normal((n_time, k))
    q = np.linalg.qr(basis - basis.mean(axis=0))[0]  # orthonormal, zero-mean columns
    coefficients = rng.standard_normal((k, n_vox)) * rng.uniform(0.5, 3, n_vox)
    series = q @ coefficients  # zero-mean voxel series of unequal variance
    group_maps = ica.standardise_maps(rng.standard_normal((n_comp, n_vox)))
    # fsl (default): the raw data, time courses of unit variance over the T time points
    timecourses, subject_maps = ica.dual_regression(coefficients, group_maps, n_time)
    stage1, stage2 = _fsl_dual_regression(series, group_maps)
    assert np.allclose(subject_maps, stage2, rtol=1e-4, atol=1e-5)
    assert np.allclose(q @ timecourses, stage1, rtol=1e-6, atol=1e-8)
    # normalised: FSL run on variance-normalised series
    normalised = ica.dual_regression(ica_data.normalise_voxels(coefficients), group_maps, n_time)
    y = series / series.std(axis=0, ddof=1)
    expected = _fsl_dual_regression(y, group_maps)[1] / np.sqrt(n_time - 1)
    assert np.allclose(normalised[1], expected, rtol=1e-4, atol=1e-5)
    # without T the time courses have unit norm: the maps carry sqrt(T - 1)
    unscaled = ica.dual_regression(coefficients, group_maps)[1]
    assert np.allclose(unscaled, stage2 * np.sqrt(n_time - 1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="more volumes"):
        ica.dual_regression(coefficients[:n_comp], group_maps)


def test_dual_regression_keeps_a_planted_amplitude_difference():
    """Amplitude doubled in half the participants: FSL-style stage 2 sees it, normalised not."""
    rng = np.random.default_rng(8)
    mask = brain_mask()
    sources = _sources(mask)
    group_maps = ica.standardise_maps(np.stack(list(sources.values())))
    peak = sources["dmn"] > 0.5 * sources["dmn"].max()
    ratios = {}
    for method, normalise in (("fsl", False), ("normalised", True)):
        means = {1.0: [], 2.0: []}
        for k in range(12):
            gain = 2.0 if k % 2 else 1.0
            data = sum(
                np.outer(rng.standard_normal(K), (gain if n == "dmn" else 1.0) * s)
                for n, s in sources.items()
            )
            data = data + 0.3 * rng.standard_normal(data.shape)
            data = ica_data.normalise_voxels(data) if normalise else data
            maps_ = ica.dual_regression(data.astype(np.float32), group_maps, K)[1]
            means[gain].append(maps_[0, peak].mean())
        ratios[method] = np.mean(means[2.0]) / np.mean(means[1.0])
    assert 1.8 < ratios["fsl"] < 2.2, ratios
    assert ratios["normalised"] < 1.3, ratios


def test_migp_is_exact_while_the_stack_spans_the_data():
    rng = np.random.default_rng(4)
    shared = rng.standard_normal((5, 300))  # rank-5 group data
    blocks = [rng.standard_normal((8, 5)) @ shared for _ in range(6)]
    full = np.vstack(blocks)
    exact = np.linalg.svd(full, full_matrices=False)[2][:5]
    for keep in (100, 10):  # no truncation; truncation of null directions only
        top = ica.top_components(ica.migp(iter(blocks), keep), 5).astype(float)
        top /= np.linalg.norm(top, axis=1, keepdims=True)
        assert np.allclose(top.T @ top, exact.T @ exact, atol=1e-5)
    single = ica.top_components(full, 3)
    u, s, vt = np.linalg.svd(full, full_matrices=False)
    assert np.allclose(np.abs(single), np.abs(s[:3, None] * vt[:3]), rtol=1e-4, atol=1e-4)


def test_group_ica_is_seeded_and_refuses_too_many_components():
    rng = np.random.default_rng(5)
    mask = brain_mask()
    sources = _sources(mask)
    data = [ica_data.normalise_voxels(_subject_data(rng, mask, sources, "NR")) for _ in range(4)]
    first = ica.group_ica(iter(data), 3, random_state=1)
    assert np.array_equal(first.maps, ica.group_ica(iter(data), 3, random_state=1).maps)
    assert first.converged
    with pytest.raises(UserInputError, match="--ica-components"):
        ica.group_ica(iter([d[:3] for d in data[:2]]), 10, random_state=1)


def test_network_masks_use_world_coordinates(tf_home):
    ras = ica_match.network_masks(SPACE, 2, SHAPE, AFFINE)
    las_affine = AFFINE.copy()
    las_affine[0, 0], las_affine[0, 3] = -AFFINE[0, 0], -AFFINE[0, 3]
    las = ica_match.network_masks("MNI152NLin6Asym", 2, SHAPE, las_affine)
    assert list(ras) == list(ica_match.NETWORKS) == list(las)
    for network in ras:
        assert ras[network].any() and np.array_equal(ras[network][::-1], las[network])
    assert ica_match.network_of("7Networks_RH_Default_pCunPCC_3") == "Default"
    assert ica_match.network_of("Background") is None


def test_match_components_picks_the_best_per_network():
    r = np.array([[0.1, 0.6], [0.5, 0.7], [0.2, np.nan], [np.nan, np.nan]])
    table = ica_match.match_components(r, ["Vis", "Default"])
    assert list(table["network"]) == ["Default", "Default", "Vis", "n/a"]
    assert list(table["best_for"]) == ["n/a", "Vis,Default", "n/a", "n/a"]
    assert list(table["selected"]) == [False, True, False, False]
    assert np.isnan(table["r"].iloc[3])
    maps = np.random.default_rng(0).standard_normal((3, 50))
    templates = maps[[1, 0]] > 0.5
    expected = [[np.corrcoef(m, t)[0, 1] for t in templates] for m in maps]
    assert np.allclose(ica_match.spatial_correlation(maps, templates), expected)


def test_no_reduced_data_skips_with_a_warning(tmp_path, caplog):
    subjects = pd.DataFrame({"participant_id": ["sub-01"], "group": ["R"]})
    with caplog.at_level(logging.WARNING):
        found = ica_run.run_group_ica(
            _settings(tmp_path, tmp_path / "out"), subjects, labeller=None
        )
    assert found.empty and list(found.columns) == list(clusters.COLUMNS)
    assert "Group ICA skipped" in caplog.text
    assert not (tmp_path / "out" / "group").exists()


def test_reduced_data_on_different_grids_are_refused(tmp_path):
    mask = brain_mask()
    data = np.ones((K, int(mask.sum())), np.float32)
    _write_reduced(tmp_path / "out", "sub-01", data, mask)
    shifted = AFFINE.copy()
    shifted[0, 3] += 3.0
    _write_reduced(tmp_path / "out", "sub-02", data, mask, affine=shifted)
    settings = _settings(tmp_path, tmp_path / "out")
    with pytest.raises(UserInputError, match="different grids"):
        ica_data.find_reduced_files(settings, ["sub-01", "sub-02"])


def test_analysis_mask_is_the_intersection_of_valid_voxels(tmp_path):
    mask = brain_mask()
    smaller = mask & (_world()[..., 2] < 40.0)
    data = np.random.default_rng(0).standard_normal((K, int(mask.sum()))).astype(np.float32)
    data[0, ::7] = 0.0  # a zero in the first volume (e.g. rounded in int16) is not outside
    _write_reduced(tmp_path / "out", "sub-01", data, mask, outside=np.nan, int16=False)
    inside = smaller.ravel(order="F")[mask.ravel(order="F")]
    _write_reduced(tmp_path / "out", "sub-02", data * inside, mask)  # 0 above z = 40 and outside
    settings = _settings(tmp_path, tmp_path / "out")
    index = ica_data.find_reduced_files(settings, ["sub-01", "sub-02", "sub-03"])
    assert list(index.files) == ["sub-01", "sub-02"] and index.resolution is None
    assert np.array_equal(ica_data.analysis_mask(index), smaller)
    loaded = ica_data.load_subject(index.files["sub-01"], smaller)
    assert loaded.shape == (K, smaller.sum())
    assert np.allclose(np.linalg.norm(loaded, axis=0), 1)
    assert np.allclose(loaded, ica_data.normalise_voxels(data[:, inside]), rtol=1e-6, atol=1e-7)


REAL_SCHAEFER = Path(__file__).parents[1].parent / "shared" / "data" / "atlases" / "schaefer"


def test_real_schaefer_atlas_gives_the_yeo_networks():
    atlas = (
        REAL_SCHAEFER
        / f"tpl-{SPACE}_res-01_atlas-Schaefer2018_desc-200Parcels7Networks_dseg.nii.gz"
    )
    if not atlas.exists():
        pytest.skip("real Schaefer atlas not available")
    names = clusters.read_label_names(
        atlas.with_name(f"tpl-{SPACE}_atlas-Schaefer2018_desc-200Parcels7Networks_dseg.tsv")
    )
    counts = pd.Series([ica_match.network_of(n) for n in names.values()]).value_counts()
    assert counts.sum() == 200 and set(counts.index) == set(ica_match.NETWORKS)
    assert counts["Default"] == 46 and counts["Vis"] == 29  # Schaefer 2018, 200 parcels, 7 networks
    affine = np.array(
        [[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]]
    )  # fMRIPrep res-2
    masks = ica_match.network_masks_from(atlas, names, (97, 115, 97), affine)
    inverse = np.linalg.inv(affine)

    for xyz, network in [
        ((-4, 54, -2), "Default"),  # mPFC
        ((-6, -60, 36), "Default"),  # precuneus
        ((-10, -90, 0), "Vis"),
        ((-38, -22, 56), "SomMot"),
    ]:
        ijk = tuple(np.rint(nb.affines.apply_affine(inverse, xyz)).astype(int))
        assert [net for net, mask in masks.items() if mask[ijk]] == [network], xyz


def test_dual_regression_option_picks_the_data_and_scaling(tmp_path, caplog):
    mask = brain_mask()
    rng = np.random.default_rng(9)
    data = (rng.standard_normal((K, int(mask.sum()))) * 5).astype(np.float32)
    _write_reduced(tmp_path / "out", "sub-01", data, mask, int16=False)
    path = (
        tmp_path / "out" / "sub-01" / "func" / f"sub-01_task-rest_space-{SPACE}_desc-reduced_bold"
    )
    group_maps = ica.standardise_maps(rng.standard_normal((3, int(mask.sum()))))
    settings = _settings(tmp_path, tmp_path / "out")
    fsl, meta = ica_run._dual_regress_one(settings, Path(f"{path}.nii.gz"), mask, group_maps)
    assert np.allclose(fsl, ica.dual_regression(data, group_maps, 150)[1], rtol=1e-5, atol=1e-6)
    assert meta["TimePoints"] == 150
    settings = dataclasses.replace(settings, dual_regression="normalised")
    shape, meta = ica_run._dual_regress_one(settings, Path(f"{path}.nii.gz"), mask, group_maps)
    expected = ica.dual_regression(ica_data.normalise_voxels(data), group_maps)[1]
    assert np.allclose(shape, expected, rtol=1e-4, atol=1e-6) and meta["TimePoints"] is None
    Path(f"{path}.json").unlink()  # older participant outputs: no VolumesKept
    settings = dataclasses.replace(settings, dual_regression="fsl")
    with caplog.at_level(logging.WARNING):
        unscaled, _ = ica_run._dual_regress_one(settings, Path(f"{path}.nii.gz"), mask, group_maps)
    assert (
        np.allclose(unscaled, fsl * np.sqrt(149), rtol=1e-4, atol=1e-4)
        and "VolumesKept" in caplog.text
    )
