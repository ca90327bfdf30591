"""The reports: numbers for reading, the run's QC data, the participant report, the methods text."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from scipy import stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.participant.denoising import build_operator
from bids_ketamine_fc.participant.qc import carpet_positions, dvars_percent, write_report_data
from bids_ketamine_fc.reports import citation, references
from bids_ketamine_fc.reports.participant import write_participant_report
from bids_ketamine_fc.reports.seed_maps import display_threshold
from bids_ketamine_fc.reports.style import fmt, fmt_p, table

SHAPE = (20, 24, 20)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


AFFINE = np.array([[4.0, 0, 0, -40], [0, 4, 0, -70], [0, 0, 4, -30], [0, 0, 0, 1]])


@pytest.mark.parametrize(
    ("value", "text"),
    [(6780.0, "6,780"), (0.142345, "0.142"), (57.31, "57.3"), (3, "3"), (-0.0004567, "-0.000457"),
     (1.5e-9, "1.5e-09"), (float("nan"), "n/a"), (None, "n/a"), ("R", "R")],
)  # fmt: skip
def test_numbers_are_formatted_for_reading(value, text):
    assert fmt(value) == text


def test_p_values_and_tables_for_reading():
    assert [fmt_p(p) for p in (0.0004, 0.0012, 0.0234, 0.5, None)] == [
        "< 0.001", "0.0012", "0.023", "0.500", "n/a",
    ]  # fmt: skip
    html = table([{"size_mm3": 6780.0, "p": 0.0001, "label": "Left <Thalamus>"}], {"p": "p"})
    assert "6,780" in html and "&lt; 0.001" in html and "&lt;Thalamus&gt;" in html
    assert "e+03" not in html and html.startswith("<div class='tablewrap'>")


def test_display_threshold_is_two_sided_p_001_at_the_dof():
    # SE of Fisher z is 1 / sqrt(dof - 3): |z| > 3.29 / 8 at 67 degrees of freedom
    assert display_threshold(67) == pytest.approx(stats.norm.isf(0.0005) / 8)


def _run(rng, n_volumes=80, n_voxels=400):
    series = 1000 + rng.standard_normal((n_volumes, n_voxels)).astype(np.float32) * 10
    series += np.linspace(0, 30, n_volumes, dtype=np.float32)[:, None]  # a drift denoising removes
    confounds = rng.standard_normal((n_volumes, 3))
    outliers = np.zeros(n_volumes, bool)
    outliers[[10, 40]] = True
    operator = build_operator(confounds, outliers, 2.0, 1, None)
    return series, operator, outliers


def test_report_data_dvars_and_carpet_are_those_of_the_series(tmp_path, rng):
    series, operator, outliers = _run(rng)
    mask = np.zeros(SHAPE, bool)
    mask.ravel(order="F")[np.arange(400) * 7] = True
    path = write_report_data(
        tmp_path / "r.npz", np.full(80, 0.1), outliers, 2, 2.0, series=series,
        operator=operator, rows=np.arange(80), tsnr=series.mean(0) / series.std(0),
        seeds=[np.arange(5)], seed_names=["s"], mask=mask, affine=AFFINE,
    )  # fmt: skip
    data = np.load(path)
    positions = carpet_positions(series.mean(axis=0))
    np.testing.assert_array_equal(data["carpet_before"], series[:, positions])
    scale = float(series.mean())
    direct = 100 * np.sqrt(np.mean(np.diff(series[:, positions], axis=0) ** 2, axis=1)) / scale
    np.testing.assert_allclose(data["dvars_before"][1:], direct, rtol=1e-6)
    cleaned = operator.basis @ (
        operator.coef.T @ (series[:, positions] - series[:, positions].mean(0))
    )
    np.testing.assert_allclose(data["carpet_after"], cleaned, rtol=1e-3, atol=1e-3)
    assert data["dvars_after"][1:].mean() < data["dvars_before"][1:].mean()
    assert np.all(np.diff(series.mean(axis=0)[positions]) >= 0)  # darkest first
    assert dvars_percent(np.ones((3, 2)), 0.0).tolist() == [0.0, 0.0, 0.0]


def _svg_images(html: str) -> list[list[str]]:
    """The ``<image>`` elements of every inline SVG figure."""
    found = []
    for data in re.findall(r"src='data:image/svg\+xml;base64,([^']+)'", html):
        svg = base64.b64decode(data).decode()
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
        found.append(re.findall(r"<image [^>]*>", svg))
    return found


def test_participant_report_tells_the_denoising_story(tmp_path, rng):
    series, operator, outliers = _run(rng)
    mask = np.zeros(SHAPE, bool)
    mask[4:16, 4:20, 4:16] = True
    n_brain = int(mask.sum())
    series = np.tile(series, (1, -(-n_brain // series.shape[1])))[:, :n_brain]
    included = write_report_data(
        tmp_path / "a.npz", np.abs(rng.standard_normal(80)) * 0.2, outliers, 2, 2.0,
        series=series, operator=operator, rows=np.arange(80), tsnr=series.mean(0) / series.std(0),
        seeds=[np.arange(30, 60)], seed_names=["mPFC"], mask=mask, affine=AFFINE,
    )  # fmt: skip
    excluded = write_report_data(tmp_path / "b.npz", np.full(80, 2.0), ~outliers, 2, 2.0)
    volume = np.where(mask, rng.standard_normal(SHAPE) * 0.2, np.nan).astype(np.float32)
    seed_map = (
        tmp_path / "sub-01_task-rest_space-MNI152NLin2009cAsym_seed-mPFC_stat-fisherz_boldmap"
    )
    nb.save(nb.Nifti1Image(volume, AFFINE), f"{seed_map}.nii.gz")
    definition = {"Type": "sphere", "CenterMNI": [1, 55, -3], "RadiusMM": 10, "NumberOfVoxels": 30,
                  "Coverage": 1.0}  # fmt: skip
    seed_map.with_suffix(".json").write_text(
        json.dumps({"Seed": definition, "DegreesOfFreedom": 60})
    )
    qc = {"n_volumes": 82, "n_dummy": 2, "n_scrubbed": 2, "n_kept": 78, "mean_fd": 0.15,
          "tsnr_median": 55.1, "n_confounds": 3, "n_regressors": 7, "dof": 60, "included": True}  # fmt: skip
    bad = dict(qc, included=False, exclusion_reason="12 volumes left after scrubbing")
    settings = Settings(tmp_path / "bids", tmp_path / "out", "participant", tmp_path / "fp",
                        tmp_path / "work", seeds=str(tmp_path / "my_seeds.json"))  # fmt: skip
    runs = [{"run": "sub-01_task-rest_run-1", "qc": qc, "report": included},
            {"run": "sub-01_task-rest_run-2", "qc": bad, "report": excluded}]  # fmt: skip
    out = write_participant_report(
        "01",
        runs,
        {"mPFC": f"{seed_map}.nii.gz"},
        tmp_path / "sub-01.html",
        settings.to_json(),
        "<p>methods</p>",
    )
    html = out.read_text()
    expected = ("Denoising", "DVARS", "carpet plot", "tSNR", "Seeds", "Seed-to-voxel",
                "Fisher z", "excluded: 12 volumes left after scrubbing", "Settings",
                "my_seeds.json", "methods")  # fmt: skip
    for text in expected:
        assert text in html, text
    assert str(tmp_path) not in html  # no machine path
    svgs = _svg_images(html)
    assert len(svgs) == 5  # denoising x 2 (one excluded: FD only), tSNR, seeds, one seed map
    assert [bool(images) for images in svgs] == [True, True, False, True, True]
    # images (slices, carpets) are written unsampled, drawn pixelated: sharp at any zoom
    assert all("pixelated" in image for images in svgs for image in images)


def test_methods_boilerplate_from_the_settings(tmp_path):
    participant = json.loads(
        Settings(
            tmp_path,
            tmp_path / "out",
            "participant",
            tmp_path,
            tmp_path,
            fd_threshold=0.5,
            smoothing_fwhm=6.0,
        ).to_json()  # fmt: skip
    )
    group = json.loads(
        Settings(
            tmp_path,
            tmp_path / "out",
            "group",
            tmp_path,
            tmp_path,
            inference=("rft", "permutation", "tfce"),
            n_permutations=5000,
        ).to_json()  # fmt: skip
    )
    html = citation.write_citation(tmp_path / "out", participant, group)
    markdown = (tmp_path / "out/logs/CITATION.md").read_text()
    expected = ("ART's composite motion above 0.5 mm", "0.008-0.09 Hz band-pass", "6 mm FWHM within",
                "mPFC", "AmygdalaR", "p < 0.001", "p(FWE) < 0.05", "5,000 Freedman-Lane",
                "threshold-free cluster enhancement", "into 20 spatial components",
                "central differences", "Effect of rest", "percent signal change",
                "tissue probability maps", "'hrf' weighting", "mPFC:groups:NRgtR",
                "1,000 permutations of the outcomes", "as FSL")  # fmt: skip
    for text in expected:
        assert text in markdown, text
    keys = citation.cited(markdown)
    assert {
        "esteban2019fmriprep",
        "whitfield2012conn",
        "smith2009tfce",
        "nickerson2017dualreg",
    } <= set(keys)
    bib = (tmp_path / "out/logs/CITATION.bib").read_text()
    assert all(f"{{{key}," in bib for key in keys) and bib.count("@") == len(keys)
    assert all(key in references.REFERENCES for key in keys)
    assert (
        "<h3>References</h3>" in html and "Whitfield-Gabrieli &amp; Nieto-Castanon 2012</a>" in html
    )
    assert str(tmp_path) not in markdown and "conn method" not in markdown
    # another preset says what it does instead
    participant["denoise_strategy"] = "conn-fmriprep"
    other = citation.participant_markdown(participant)
    assert "framewise displacement above 0.5 mm" in other and "Effect of rest" not in other
    assert "fMRIPrep's aCompCor" in other and "Pearson correlation" in other
    # without TFCE, no TFCE sentence
    group["inference"] = ["rft"]
    assert "threshold-free" not in citation.group_markdown(group)


def test_seed_maps_are_cut_at_the_strongest_connection_away_from_the_seed():
    from bids_ketamine_fc.reports.seed_maps import cut_coordinates

    data = np.zeros(SHAPE, np.float32)
    data[5, 5, 5] = 3.0  # the seed itself: largest, but excluded
    data[14:17, 18:21, 12:15] = 0.8  # a connected region
    data[2, 20, 3] = 2.0  # one noisy voxel: smaller once averaged over its neighbours
    centre = nb.affines.apply_affine(AFFINE, (5, 5, 5))
    cut = cut_coordinates(nb.Nifti1Image(data, AFFINE), centre)
    assert cut == tuple(nb.affines.apply_affine(AFFINE, (15, 19, 13)))


def test_seed_maps_share_one_figure_with_a_labelled_colour_bar(tmp_path, rng):
    from bids_ketamine_fc.reports.figures import background
    from bids_ketamine_fc.reports.seed_maps import seed_maps_figure

    seeds = []
    for name, i in (("A", 4), ("B", 14)):
        path = tmp_path / f"{name}.nii.gz"
        nb.save(nb.Nifti1Image(rng.standard_normal(SHAPE).astype(np.float32), AFFINE), path)
        voxels = np.zeros(SHAPE, np.float32)
        voxels[i : i + 2, 10:12, 8:10] = 1
        seeds.append((name, str(path), nb.Nifti1Image(voxels, AFFINE)))
    fig, caption = seed_maps_figure(seeds, background(), 60)
    threshold = display_threshold(60)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert {"A", "B", "L", "R"} <= set(texts)  # a row per seed, with L/R
    assert sum(t.startswith(("x=", "y=", "z=")) for t in texts) == 6  # cut coordinates
    bars = [ax for ax in fig.axes if ax.get_title() == "Fisher z"]
    assert len(bars) == 1  # one colour bar for every seed, with its unit
    np.testing.assert_allclose(bars[0].get_yticks(), [-1, -threshold, 0, threshold, 1])
    from matplotlib.collections import QuadMesh

    (solids,) = [c for c in bars[0].collections if isinstance(c, QuadMesh)]
    cmap = solids.get_cmap()
    assert cmap(0.5)[:3] == (0.5, 0.5, 0.5)  # below the display threshold: grey
    assert cmap(1.0)[0] > 0.3 > cmap(1.0)[2] and cmap(0.0)[2] > 0.3 > cmap(0.0)[0]  # red / blue
    assert f"{threshold:.2f}" in caption and "60 temporal degrees of freedom" in caption
    fig.clf()


def test_seeds_figure_labels_each_seed_under_its_own_slices():
    from bids_ketamine_fc.reports.figures import background
    from bids_ketamine_fc.reports.qc_figures import seeds_figure

    mask = np.zeros(SHAPE, bool)
    mask[2:18, 2:22, 2:18] = True
    index = np.flatnonzero(mask.ravel(order="F"))
    i, j, k = np.unravel_index(index, SHAPE, order="F")
    core = (i >= 8) & (i < 10) & (k >= 8) & (k < 10)
    front = np.flatnonzero(core & (j >= 17) & (j < 19))  # y = 0 mm
    back = np.flatnonzero(core & (j >= 4) & (j < 6))  # y = -52 mm
    data = {"mask_index": index, "shape": np.array(SHAPE), "affine": AFFINE,
            "seed_names": np.array(["front", "back"]), "seed_counts": np.array([8, 8]),
            "seed_voxels": np.concatenate([front, back])}  # fmt: skip
    # the table's order (alphabetical) differs from the run's order of the seeds
    fig = seeds_figure(data, background(), {"back": "back: 8 vox", "front": "front: 8 vox"})
    where = {t.get_text(): t.get_position()[0] for t in fig.axes[0].texts}
    for label, own, other in (
        ("front: 8 vox", "y = 0", "y = -52"),
        ("back: 8 vox", "y = -52", "y = 0"),
    ):
        assert abs(where[label] - where[own]) < abs(where[label] - where[other])
    fig.clf()


def test_background_is_nilearns_mni152_template_found_without_importing_its_datasets():
    from nilearn.datasets import MNI152_FILE_PATH

    from bids_ketamine_fc.reports.figures import _nilearn_template

    assert Path(_nilearn_template()).samefile(MNI152_FILE_PATH)


def test_scrubbed_volumes_are_shaded_as_runs_of_consecutive_volumes():
    from bids_ketamine_fc.reports.qc_figures import _spans

    assert _spans(np.array([3, 4, 5, 9, 12, 13])) == [(2.5, 3.0), (8.5, 1.0), (11.5, 2.0)]
    assert _spans(np.array([7])) == [(6.5, 1.0)] and _spans(np.array([], int)) == []
