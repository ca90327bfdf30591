"""The group level end to end on generated subject-level maps, and its refusals of bad input."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_ketamine_fc.cli.group import run_group
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import MissingInputError, UserInputError
from bids_ketamine_fc.group import maps
from bids_ketamine_fc.group.inference import clusters

SHAPE = (30, 36, 30)
PLANTED = np.array([-11.0, -18.0, 7.0])  # Left Thalamus in the generated HOSPA of conftest
RADIUS_MM = 6.0
SPACE = "MNI152NLin2009cAsym"


def _affine(orientation: str) -> np.ndarray:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-29.0, -35.0, -29.0]
    if orientation == "LAS":
        affine[0, 0], affine[0, 3] = -2.0, 29.0
    return affine


def _world(affine: np.ndarray, shape=SHAPE) -> np.ndarray:
    return nb.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)


def make_dataset(
    root: Path,
    n_per_group: int = 8,
    seeds=("mPFC", "PCC"),
    space: str = SPACE,
    orientation: str = "RAS",
    effect: float = 0.6,
    rng_seed: int = 0,
) -> Settings:
    """Write a BIDS dataset with phenotype and subject-level maps (NR > R planted in mPFC)."""
    rng = np.random.default_rng(rng_seed)
    bids, out = root / "bids", root / "out"
    (bids / "derivatives" / "fmriprep").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9"}))
    affine = _affine(orientation)
    xyz = _world(affine)
    brain = ((xyz / [27.0, 33.0, 27.0]) ** 2).sum(-1) <= 1
    distance = np.linalg.norm(xyz - PLANTED, axis=-1)
    planted = np.where(distance <= RADIUS_MM, np.exp(-(distance**2) / 18.0), 0.0)  # peaks at centre
    rows = []
    for k in range(2 * n_per_group):
        label, responder = f"{k + 1:02d}", k < n_per_group
        rows.append(
            {
                "participant_id": f"sub-{label}",
                "nrs_pre": 8,
                "nrs_post": 3 if responder else 7,
                "age": int(rng.integers(27, 82)),
            }
        )
        func = out / f"sub-{label}" / "func"
        func.mkdir(parents=True)
        for seed in seeds:
            noise = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.2) * 4.0  # FWHM ~5.6 mm
            volume = (
                0.3 + 0.1 * noise + (effect * planted if seed == "mPFC" and not responder else 0)
            )
            volume = np.where(brain, volume, np.nan).astype(np.float32)
            name = (
                f"sub-{label}_task-rest_space-{space}_res-2_seed-{seed}_stat-fisherz_boldmap.nii.gz"
            )
            nb.save(nb.Nifti1Image(volume, affine), func / name)
        qc = pd.DataFrame([{"mean_fd": 0.1 + 0.01 * k, "included": True}])
        qc.to_csv(func / f"sub-{label}_task-rest_desc-denoising_qc.tsv", sep="\t", index=False)
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    return Settings(
        bids_dir=bids,
        output_dir=out,
        analysis_level="group",
        fmriprep_dir=bids / "derivatives" / "fmriprep",
        work_dir=root / "work",
        space=space,
        inference=("rft",),
    )


def _with(settings: Settings, **changes) -> Settings:
    return Settings(**{**settings.__dict__, **changes})


def _expected_files(settings: Settings, seeds=("mPFC", "PCC")) -> list[Path]:
    group = settings.output_dir / "group"
    files = [group / n for n in ("subjects.tsv", "subjects.json", "clusters.tsv", "group.html")]
    files.append(settings.output_dir / "dataset_description.json")
    index = maps.MapIndex(settings.space, "2", {}, SHAPE, np.eye(4))
    for seed in seeds:
        files.append(
            maps.group_path(settings.output_dir, index, seed, "mask.nii.gz", desc="analysis")
        )
        for model in ("groups", "groupsAge"):
            for contrast in ("RgtNR", "NRgtR"):
                for stat in ("t", "z", "p", "effect", "g"):
                    path = maps.group_path(
                        settings.output_dir,
                        index,
                        seed,
                        "boldmap.nii.gz",
                        model=model,
                        contrast=contrast,
                        stat=stat,
                    )
                    files += [path, path.with_name(path.name.replace(".nii.gz", ".json"))]
    return files


@pytest.mark.parametrize(("space", "orientation"), [(SPACE, "RAS"), ("MNI152NLin6Asym", "LAS")])
def test_run_group_finds_the_planted_cluster(tmp_path, tf_home, space, orientation):
    settings = make_dataset(tmp_path, space=space, orientation=orientation)
    assert run_group(settings) == 0

    missing = [str(p) for p in _expected_files(settings) if not p.is_file()]
    assert not missing
    report = (settings.output_dir / "group" / "group.html").read_text()
    expected = ("Group sizes per model", "Responders vs non-responders: motion", "scrubbed volumes (%)",
                "Design matrices", "Seed mPFC", "R mean", "peak label", "Left Thalamus",
                "no cluster survives p(FWE) &lt; 0.05</span>; the unthresholded z map is shown")  # fmt: skip
    for text in expected:
        assert text in report, text
    comparison = pd.read_csv(settings.output_dir / "group" / "group_comparison.tsv", sep="\t")
    assert list(comparison["variable"]) == ["age", "mean_fd", "scrubbed_percent", "pain_pre",
                                            "pain_post"]  # fmt: skip
    table = pd.read_csv(settings.output_dir / "group" / "clusters.tsv", sep="\t")
    assert list(table.columns) == list(clusters.COLUMNS)
    significant = table[table["p_fwe"] < 0.05]
    # the planted difference, in both models, and nothing else
    assert set(significant[["seed", "contrast"]].itertuples(index=False, name=None)) == {
        ("mPFC", "NRgtR")
    }
    assert sorted(significant["model"]) == ["groups", "groupsAge"]
    for _, row in significant.iterrows():
        peak = row[["peak_x", "peak_y", "peak_z"]].to_numpy(dtype=float)
        assert np.linalg.norm(peak - PLANTED) <= 4.0
        assert row["peak_label"] == "Left Thalamus"
        assert row["size_mm3"] == row["size_vox"] * 8
        assert row["p_fdr"] <= 0.05 and row["p_unc"] <= row["p_fwe"]

    index = maps.MapIndex(space, "2", {}, SHAPE, np.eye(4))
    mask_path = maps.group_path(
        settings.output_dir,
        index,
        "mPFC",
        "mask.nii.gz",
        model="groups",
        contrast="NRgtR",
        inference="rft",
        cluster=1,
    )
    cluster_img = nb.load(mask_path)
    cluster = np.asarray(cluster_img.dataobj) > 0
    planted = np.linalg.norm(_world(cluster_img.affine) - PLANTED, axis=-1) <= RADIUS_MM
    assert 2 * (cluster & planted).sum() / (cluster.sum() + planted.sum()) > 0.6

    subjects = pd.read_csv(settings.output_dir / "group" / "subjects.tsv", sep="\t")
    assert len(subjects) == 16 and subjects["included"].all()
    assert (subjects["group"] == "R").sum() == 8
    t_json = json.loads(
        mask_path.parent.joinpath(
            mask_path.name.replace("inference-rft_cluster-1_mask.nii.gz", "stat-t_boldmap.json")
        ).read_text()
    )
    assert t_json["DegreesOfFreedom"] == 14 and t_json["NPerGroup"] == {"R": 8, "NR": 8}
    assert 4.0 < np.mean(t_json["Smoothness"]["fwhm_mm"]) < 8.0
    report = (settings.output_dir / "group" / "group.html").read_text()
    assert "Seed mPFC" in report and "data:image/png;base64," in report


def test_permutation_and_tfce_find_the_planted_cluster(tmp_path, tf_home):
    settings = make_dataset(tmp_path, seeds=("mPFC",))
    settings = _with(
        settings,
        inference=("rft", "permutation", "tfce"),
        n_permutations=100,
        random_seed=3,
        covariates=(),
    )
    assert run_group(settings) == 0
    table = pd.read_csv(settings.output_dir / "group" / "clusters.tsv", sep="\t")
    table = table.set_index(["contrast", "inference", "cluster"])
    rft_row, perm_row = table.loc[("NRgtR", "rft", 1)], table.loc[("NRgtR", "permutation", 1)]
    # the same cluster (18-connected, same height threshold) under both inferences
    for column in ("size_vox", "peak_x", "peak_y", "peak_z", "peak_stat"):
        assert rft_row[column] == perm_row[column]
    # no permutation of the labels makes a cluster as large: p is the smallest possible, 1/100
    assert perm_row["p_fwe"] == pytest.approx(0.01)
    assert np.isnan(perm_row["p_unc"]) and np.isnan(perm_row["p_fdr"])
    tfce_row = table.loc[("NRgtR", "tfce", 1)]
    assert tfce_row["p_fwe"] < 0.05 and tfce_row["peak_label"] == "Left Thalamus"
    assert (
        table.xs("RgtNR", level="contrast").query("inference == 'permutation'")["p_fwe"].min()
        > 0.05
    )
    masks = sorted(p.name for p in (settings.output_dir / "group").rglob("*cluster-*_mask.nii.gz"))
    assert [m.split("_inference-")[1] for m in masks] == [
        "permutation_cluster-1_mask.nii.gz",
        "rft_cluster-1_mask.nii.gz",
        "tfce_cluster-1_mask.nii.gz",
    ]


def _fake_atlases(tmp_path: Path, monkeypatch, available=("HOSPA", "HOCPA")) -> None:
    """Serve generated Harvard-Oxford atlases (LAS, 2 mm) instead of TemplateFlow files."""
    from bids_ketamine_fc import templates

    affine = _affine("LAS")
    xyz = _world(affine)
    hospa = np.zeros(SHAPE, np.uint8)
    hospa[np.linalg.norm(xyz - [-23, -5, -18], axis=-1) <= 5] = 10  # Left Amygdala
    hospa[np.linalg.norm(xyz - [6, -28, 20], axis=-1) <= 8] = 13  # Right Cerebral Cortex
    hocpa = np.zeros(SHAPE, np.uint8)
    hocpa[np.linalg.norm(xyz - [6, -28, 20], axis=-1) <= 8] = 31
    hocpa[np.linalg.norm(xyz - [-6, -28, 20], axis=-1) <= 8] = 31
    files = {}
    for atlas, data, names in (
        ("HOSPA", hospa, {10: "Left Amygdala", 13: "Right Cerebral Cortex"}),
        ("HOCPA", hocpa, {31: "Precuneous Cortex"}),
    ):
        files[atlas, ".nii.gz"] = tmp_path / f"{atlas}.nii.gz"
        nb.save(nb.Nifti1Image(data, affine), files[atlas, ".nii.gz"])
        files[atlas, ".tsv"] = tmp_path / f"{atlas}.tsv"
        rows = pd.DataFrame({"index": list(names), "name": list(names.values())})
        rows.to_csv(files[atlas, ".tsv"], sep="\t", index=False)

    def fake(space, resolution, atlas, suffix, extension=".nii.gz", desc=None):
        assert suffix == "dseg" and (desc == "th25" or extension == ".tsv")
        if atlas not in available:
            raise UserInputError(f"TemplateFlow file of {atlas} is missing")
        return files[atlas, extension]

    monkeypatch.setattr(templates, "get_template_file", fake)


def test_peak_labels_prefer_subcortical_then_cortical_with_side(tmp_path, monkeypatch, caplog):
    _fake_atlases(tmp_path, monkeypatch)
    label = clusters.PeakLabeller("MNI152NLin6Asym", 2)
    assert label([-23, -5, -18]) == "Left Amygdala"
    assert label([7, -29, 21]) == "Right Precuneous Cortex"  # HOSPA says only "cortex"
    assert label([-5, -27, 19]) == "Left Precuneous Cortex"  # HOCPA alone
    assert label([25, 20, 20]) == clusters.UNLABELLED
    assert label([500, 0, 0]) == clusters.UNLABELLED  # outside the atlas grid
    _fake_atlases(tmp_path, monkeypatch, available=("HOSPA",))
    assert clusters.PeakLabeller("MNI152NLin6Asym", 2)([-5, -27, 19]) == clusters.UNLABELLED
    _fake_atlases(tmp_path, monkeypatch, available=())
    caplog.clear()
    with caplog.at_level("WARNING"):
        none = clusters.PeakLabeller("MNI152NLin6Asym", 2)
    assert none([-23, -5, -18]) == clusters.ATLAS_UNAVAILABLE
    assert sum("Peak labels without" in r.message for r in caplog.records) == 2


def test_cluster_table_uses_world_coordinates(tmp_path, monkeypatch):
    _fake_atlases(tmp_path, monkeypatch)
    affine = _affine("LAS")
    mask = np.ones(SHAPE, bool)
    stat = np.zeros(SHAPE, np.float32)
    peak = np.rint(nb.affines.apply_affine(np.linalg.inv(affine), [-23, -5, -18])).astype(int)
    stat[tuple(peak)] = 5.0
    stat[peak[0], peak[1], peak[2] + 1] = 4.0
    labels, sizes = clusters.rft.label_clusters(stat, mask, 3.0)
    found = clusters.ClusterSet("rft", labels, np.array([0.01]), np.array([0.02]), np.array([0.03]))
    labeller = clusters.PeakLabeller("MNI152NLin6Asym", 2)
    table = clusters.cluster_table(
        found, stat, affine, labeller, seed="s", model="groups", contrast="RgtNR"
    )
    row = table.iloc[0]
    assert list(table.columns) == list(clusters.COLUMNS)
    assert (row["peak_x"], row["peak_y"], row["peak_z"]) == (-23.0, -5.0, -17.0)
    assert row["size_vox"] == 2 and row["size_mm3"] == 16 and row["peak_stat"] == 5.0
    assert row["peak_label"] == "Left Amygdala" and found.significant(0.05) == [1]


def test_clusters_tsv_has_headers_when_empty(tmp_path, tf_home):
    settings = make_dataset(tmp_path, n_per_group=4, seeds=("PCC",))
    stale = settings.output_dir / "group" / "seed-PCC" / "space-X_seed-PCC_cluster-1_mask.nii.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    assert run_group(_with(settings, covariates=())) == 0
    assert not stale.exists()  # cluster masks of an earlier run do not linger
    text = (settings.output_dir / "group" / "clusters.tsv").read_text()
    assert text.splitlines()[0].split("\t") == list(clusters.COLUMNS)
    assert not list((settings.output_dir / "group").rglob("*model-groupsAge*"))


def test_empty_map_excludes_the_participant(tmp_path, tf_home):
    settings = make_dataset(tmp_path, n_per_group=4, seeds=("PCC",))
    path = next((settings.output_dir / "sub-02" / "func").glob("*_boldmap.nii.gz"))
    img = nb.load(path)
    nb.save(nb.Nifti1Image(np.full(SHAPE, np.nan, np.float32), img.affine), path)
    assert run_group(settings) == 0
    subjects = pd.read_csv(settings.output_dir / "group" / "subjects.tsv", sep="\t")
    row = subjects.set_index("participant_id").loc["sub-02"]
    assert not row["included"] and row["exclusion_reason"].startswith("no usable subject-level")


def test_no_participant_outputs(tmp_path):
    settings = make_dataset(tmp_path, seeds=())
    with pytest.raises(MissingInputError, match="run the participant level first"):
        run_group(settings)


def test_maps_named_stat_z_by_version_0_1_0_are_read_with_a_warning(tmp_path, caplog):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    func = settings.output_dir / "sub-02" / "func"
    current = next(func.glob("*_stat-fisherz_boldmap.nii.gz"))
    legacy = current.with_name(current.name.replace("stat-fisherz", "stat-z"))
    current.rename(legacy)
    with caplog.at_level("WARNING"):
        index = maps.find_subject_maps(settings)
    assert index.files["PCC"]["sub-02"] == legacy
    assert "1 subject-level maps are named stat-z" in caplog.text and legacy.name in caplog.text
    # a current map beside a 0.1.0 one wins, without a warning
    shutil.copyfile(legacy, current)
    caplog.clear()
    with caplog.at_level("WARNING"):
        index = maps.find_subject_maps(settings)
    assert index.files["PCC"]["sub-02"] == current and "stat-z" not in caplog.text
    assert len(index.participants) == 6


def test_maps_on_different_grids_name_two_files(tmp_path):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    odd = next((settings.output_dir / "sub-05" / "func").glob("*_boldmap.nii.gz"))
    nb.save(nb.Nifti1Image(np.ones((30, 36, 29), np.float32), _affine("RAS")), odd)
    with pytest.raises(UserInputError, match="different grids") as error:
        run_group(settings)
    assert odd.name in str(error.value) and "sub-01_task-rest" in str(error.value)


def test_maps_in_different_spaces_name_two_files(tmp_path):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    odd = next((settings.output_dir / "sub-06" / "func").glob("*_boldmap.nii.gz"))
    odd.rename(odd.with_name(odd.name.replace(SPACE, "MNI152NLin6Asym")))
    with pytest.raises(UserInputError, match="different spaces") as error:
        run_group(settings)
    assert "sub-06_task-rest_space-MNI152NLin6Asym" in str(error.value)
    assert "sub-01_task-rest_space-MNI152NLin2009cAsym" in str(error.value)
    with pytest.raises(UserInputError, match="--space MNI152NLin2009cAsym"):
        run_group(_with(settings, space="MNI152NLin6Asym", participant_label=("01",)))


def test_small_group_is_refused_after_writing_subjects(tmp_path):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    with pytest.raises(UserInputError, match="group R has 2 included"):
        run_group(_with(settings, participant_label=("01", "02", "04", "05", "06")))
    assert (settings.output_dir / "group" / "subjects.tsv").is_file()


def test_constant_covariate_is_refused_before_the_analysis(tmp_path):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    table = pd.read_csv(settings.bids_dir / "participants.tsv", sep="\t").assign(age=40)
    table.to_csv(settings.bids_dir / "participants.tsv", sep="\t", index=False)
    with pytest.raises(UserInputError, match="--covariates age: constant"):
        run_group(settings)
    assert not (settings.output_dir / "group" / "seed-PCC").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inference": ("bayes",)}, "--inference bayes"),
        ({"voxel_p": 1.5}, "--voxel-p 1.5"),
        ({"covariates": ("age", "age")}, "--covariates age age"),
    ],
)
def test_bad_group_options(tmp_path, changes, message):
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    with pytest.raises(UserInputError, match=message):
        run_group(_with(settings, **changes))


def test_command_line_reports_a_user_error_in_one_line(tmp_path, capsys):
    from bids_ketamine_fc.cli.run import main

    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    argv = [str(settings.bids_dir), str(settings.output_dir), "group", "--pain-pre", "vas"]
    assert main(argv) == 64  # usage: --pain-pre names no column
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pain-pre vas: no such column" in err[0]


def test_small_samples_enumerate_relabellings_and_warn_about_rft(tmp_path, tf_home, caplog):
    """3 + 3 participants: 20 relabellings (not 5000 draws), and RFT with 4 dof is flagged."""
    settings = make_dataset(tmp_path, n_per_group=3, seeds=("PCC",))
    settings = _with(settings, inference=("rft", "permutation"), n_permutations=5000)
    with caplog.at_level(logging.WARNING):
        assert run_group(settings) == 0
    assert "only 20 distinct relabellings exist" in caplog.text
    assert "smallest attainable p(FWE) is 0.05" in caplog.text
    assert "random-field cluster inference with 4 degrees of freedom" in caplog.text
    group = settings.output_dir / "group" / "seed-PCC"
    groups = json.loads(
        next(group.glob("*_model-groups_contrast-NRgtR_stat-t_boldmap.json")).read_text()
    )
    assert groups["Permutations"]["Count"] == 20 and groups["Permutations"]["Exhaustive"]
    assert groups["Permutations"]["SmallestP"] == 0.05 and groups["RFTWarning"]
    age = json.loads(
        next(group.glob("*_model-groupsAge_contrast-NRgtR_stat-t_boldmap.json")).read_text()
    )
    assert age["Permutations"]["Count"] == 720 and age["Permutations"]["Exhaustive"]
    table = pd.read_csv(settings.output_dir / "group" / "clusters.tsv", sep="\t")
    assert (table.query("inference == 'permutation'")["p_fwe"] >= 0.05).all()
