"""Tests of seed files, seed placement on RAS and LAS grids, coverage, and seed means vs nilearn."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
import yaml
from datasets import STUDY_SEEDS
from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant.seeds import Seed, load_seed_set, resolve_seeds, seed_index
from bids_ketamine_fc.templates import sphere_voxels

DATA = Path(__file__).parents[1].parent / "shared" / "data"
SPACES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")
pytestmark = pytest.mark.filterwarnings("ignore:boolean values for 'standardize':FutureWarning")


def _grid(orientation: str, voxel: float = 4.0, shape=(32, 38, 25)):
    """A coarse MNI grid; the LAS one has the same voxel centres as the RAS one, x flipped."""
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = (-62.3, -78.1, -38.6)  # off the integer mm lattice: no distance ties
    if orientation == "LAS":
        affine[0, 0], affine[0, 3] = -voxel, -62.3 + voxel * (shape[0] - 1)
    return affine, shape


def _ellipsoid_mask(affine, shape, centre=(0, -8, 10), axes=(60, 70, 46)) -> nb.Nifti1Image:
    xyz = nb.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)
    inside = (((xyz - centre) / axes) ** 2).sum(axis=1) <= 1
    return nb.Nifti1Image(inside.reshape(shape).astype(np.uint8), affine)


def _random_bold(mask_img, n_volumes=12, seed=0) -> nb.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(mask_img.shape + (n_volumes,)).astype(np.float32)
    return nb.Nifti1Image(data, mask_img.affine)


def _lead_means(bold_img, mask_img, resolved) -> np.ndarray:
    """Seed means the way the workflow extracts them (brain voxels in Fortran order)."""
    mask = np.asanyarray(mask_img.dataobj)
    data = np.asanyarray(bold_img.dataobj)
    brain = data.reshape(-1, data.shape[-1], order="F")[np.flatnonzero(mask.ravel(order="F"))]
    return np.stack([brain[idx].mean(axis=0) for idx in seed_index(resolved, mask)], axis=1)


def _nilearn_label_means(labels_img, mask_img, bold_img, labels) -> np.ndarray:
    masker = NiftiLabelsMasker(labels_img=labels_img, mask_img=mask_img, resampling_target="data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = masker.fit_transform(bold_img)
    column = {int(v): i for i, v in masker.region_ids_.items() if i != "background"}
    return signals[:, [column[label] for label in labels]]


def _write(path: Path, content) -> Path:
    if path.suffix == ".json":
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_study_seed_set():
    seeds = load_seed_set("study")
    assert [s.name for s in seeds] == STUDY_SEEDS
    by_name = {s.name: s for s in seeds}
    assert by_name["mPFC"].centre == (1.0, 55.0, -3.0)
    assert by_name["PCC"].centre == (1.0, -61.0, 38.0)
    assert by_name["ACC"].centre == (0.0, 22.0, 35.0)
    assert by_name["AInsulaL"].centre == (-44.0, 13.0, 1.0)
    assert by_name["AInsulaR"].centre == (47.0, 14.0, 0.0)
    assert {s.radius for s in seeds[:5]} == {10.0}
    labels = {s.name: (s.atlas, s.desc, s.label) for s in seeds[5:]}
    assert labels == {
        "NAccL": ("HOSPA", "th25", 11),
        "NAccR": ("HOSPA", "th25", 21),
        "AmygdalaL": ("HOSPA", "th25", 10),
        "AmygdalaR": ("HOSPA", "th25", 20),
    }
    assert by_name["mPFC"].definition["Type"] == "sphere"
    assert "DefaultMode.MPFC" in by_name["mPFC"].definition["Source"]


@pytest.mark.parametrize("orientation", ["RAS", "LAS"])
@pytest.mark.parametrize("space", SPACES)
def test_study_seed_means_equal_nilearn(tf_home, space, orientation):
    affine, shape = _grid(orientation)
    mask_img = _ellipsoid_mask(affine, shape)
    bold = _random_bold(mask_img)
    seeds = load_seed_set("study")
    resolved = resolve_seeds(seeds, mask_img, space)
    ours = _lead_means(bold, mask_img, resolved)

    spheres = NiftiSpheresMasker([s.centre for s in seeds[:5]], radius=10.0, mask_img=mask_img)
    expected_spheres = spheres.fit_transform(bold)
    atlas = tf_home / f"tpl-{space}" / f"tpl-{space}_res-02_atlas-HOSPA_desc-th25_dseg.nii.gz"
    expected_atlas = _nilearn_label_means(atlas, mask_img, bold, [11, 21, 10, 20])
    expected = np.hstack([expected_spheres, expected_atlas])
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)

    coverage = {r.name: r.coverage for r in resolved}
    assert coverage["mPFC"] < 0.9  # the brain mask cuts it: the intersection matters
    assert all(
        r.definition["TemplateFlowFile"].endswith("res-02_atlas-HOSPA_desc-th25_dseg.nii.gz")
        for r in resolved[5:]
    )
    assert resolved[0].definition["NumberOfVoxels"] == resolved[0].n_voxels


def test_las_and_ras_grids_give_the_same_world_voxels(tf_home):
    ras_affine, shape = _grid("RAS")
    las_affine, _ = _grid("LAS")
    ras = resolve_seeds(load_seed_set("study"), _ellipsoid_mask(ras_affine, shape), SPACES[0])
    las = resolve_seeds(load_seed_set("study"), _ellipsoid_mask(las_affine, shape), SPACES[0])
    for a, b in zip(ras, las, strict=True):
        assert a.n_voxels > 0
        assert np.array_equal(a.voxels, b.voxels[::-1]), a.name
        assert a.coverage == b.coverage


def _brute_force_sphere(centre, radius, affine, lattice_range):
    """Count lattice voxels within the radius over a large index range (no bounding box)."""
    ijk = np.indices([hi - lo for lo, hi in lattice_range]).reshape(3, -1).T
    ijk += np.array([lo for lo, _ in lattice_range])
    inside = np.linalg.norm(nb.affines.apply_affine(affine, ijk) - centre, axis=1) <= radius
    return ijk[inside]


def test_sphere_coverage_counts_voxels_beyond_brain_and_field_of_view():
    affine = np.array([[-2.0, 0, 0, 10.3], [0, 2.0, 0, -20.2], [0, 0, 2.0, -20.1], [0, 0, 0, 1]])
    shape = (12, 20, 20)  # x from 10.3 down to -11.7: the sphere at x=8 leaves the field of view
    centre, radius = np.array([8.0, 0.0, 0.0]), 7.0
    voxels, total = sphere_voxels(centre, radius, affine, shape)
    lattice = _brute_force_sphere(centre, radius, affine, [(-20, 40)] * 3)
    assert total == len(lattice)
    in_grid = lattice[np.all((lattice >= 0) & (lattice < shape), axis=1)]
    assert voxels.sum() == len(in_grid) < total
    assert voxels[tuple(in_grid.T)].all()

    brain = np.zeros(shape, np.uint8)
    brain[:, :, :10] = 1  # z below -0.1 mm
    seed = Seed("probe", "sphere", centre=tuple(centre), radius=radius)
    resolved = resolve_seeds([seed], nb.Nifti1Image(brain, affine), "MNI152NLin2009cAsym", 0.0)[0]
    expected = (brain[tuple(in_grid.T)] > 0).sum()
    assert resolved.n_voxels == expected
    assert resolved.coverage == pytest.approx(expected / len(lattice))
    assert resolved.definition["Coverage"] == round(expected / len(lattice), 4)


def test_low_coverage_and_empty_seeds_are_refused():
    affine, shape = _grid("LAS", voxel=2.0, shape=(60, 60, 40))
    xyz = nb.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)
    brain = (xyz[:, 0] < 0).reshape(shape).astype(np.uint8)  # left hemisphere only
    mask_img = nb.Nifti1Image(brain, affine)
    half = Seed("Half", "sphere", centre=(2.0, 0.0, 0.0), radius=8.0)
    with pytest.raises(UserInputError) as info:
        resolve_seeds([half], mask_img, "MNI152NLin2009cAsym")
    message = str(info.value)
    assert "Seed 'Half'" in message and "--seeds" in message and "radius" in message
    lattice = _brute_force_sphere(np.array(half.centre), 8.0, affine, [(-10, 70)] * 3)
    fraction = (nb.affines.apply_affine(affine, lattice)[:, 0] < 0).mean()
    assert f"has {fraction:.0%} of its {len(lattice)} voxels" in message
    assert fraction < 0.5

    resolved = resolve_seeds([half], mask_img, "MNI152NLin2009cAsym", min_coverage=0.3)[0]
    assert resolved.coverage == pytest.approx(fraction)
    right = Seed("Right", "sphere", centre=(40.0, 0.0, 0.0), radius=8.0)
    with pytest.raises(UserInputError, match=r"Seed 'Right' has 0% of its"):
        resolve_seeds([right], mask_img, "MNI152NLin2009cAsym", min_coverage=0.0)


def test_tiny_radius_takes_the_nearest_voxel_like_nilearn():
    affine, shape = _grid("LAS")
    mask_img = _ellipsoid_mask(affine, shape)
    bold = _random_bold(mask_img, seed=3)
    centre = tuple(nb.affines.apply_affine(affine, [10, 20, 12]) + [0.9, -0.7, 1.1])
    resolved = resolve_seeds(
        [Seed("Dot", "sphere", centre=centre, radius=0.5)], mask_img, "MNI152NLin2009cAsym"
    )
    assert resolved[0].n_voxels == 1 and resolved[0].voxels[10, 20, 12]
    expected = NiftiSpheresMasker([centre], radius=0.5, mask_img=mask_img).fit_transform(bold)
    np.testing.assert_allclose(_lead_means(bold, mask_img, resolved), expected, rtol=1e-6)


def test_seed_index_rejects_voxels_outside_the_brain(tf_home):
    affine, shape = _grid("RAS")
    mask_img = _ellipsoid_mask(affine, shape)
    resolved = resolve_seeds(load_seed_set("study")[:2], mask_img, SPACES[0])
    mask = np.asanyarray(mask_img.dataobj)
    brain_flat = np.flatnonzero(mask.ravel(order="F"))
    for item, idx in zip(resolved, seed_index(resolved, mask), strict=True):
        assert np.array_equal(brain_flat[idx], np.flatnonzero(item.voxels.ravel(order="F")))
    smaller = mask.copy()
    smaller[tuple(np.argwhere(resolved[0].voxels)[0])] = 0
    with pytest.raises(ValueError, match="outside the brain mask"):
        seed_index(resolved, smaller)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_user_seed_files(tmp_path, suffix):
    masks = tmp_path / "masks"
    masks.mkdir()
    roi = np.zeros((30, 30, 30), np.uint8)
    roi[10:14, 12:16, 8:12] = 1
    nb.save(nb.Nifti1Image(roi, np.diag([1.5, 1.5, 1.5, 1.0])), masks / "roi.nii.gz")
    entries = [
        {"name": "Sphere1", "centre": [10, -20, 30.5], "radius": 6, "description": "mine"},
        {"name": "Label1", "atlas": "HOSPA", "label": 11},
        {"name": "Roi", "mask": "masks/roi.nii.gz"},
        {"name": "RoiLabel", "mask": "masks/roi.nii.gz", "label": 1},
    ]
    content = {"seeds": entries, "Description": "test"} if suffix == ".yaml" else entries
    seeds = load_seed_set(str(_write(tmp_path / f"seeds{suffix}", content)))
    assert [s.kind for s in seeds] == ["sphere", "atlas", "mask", "mask"]
    assert seeds[0].centre == (10.0, -20.0, 30.5) and seeds[0].radius == 6.0
    assert seeds[0].definition["Description"] == "mine"
    assert (seeds[1].atlas, seeds[1].desc, seeds[1].label) == ("HOSPA", None, 11)
    assert seeds[2].path == (masks / "roi.nii.gz").resolve() and seeds[2].label is None
    assert seeds[3].label == 1


def test_mask_file_seed_mean_equals_nilearn_on_las_grid(tmp_path):
    roi = np.zeros((40, 40, 40), np.uint8)
    roi[14:24, 18:26, 10:20] = 1  # 1 mm RAS grid, 10x8x10 mm box
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-20.0, -20.0, -20.0)
    nb.save(nb.Nifti1Image(roi, affine), tmp_path / "roi.nii.gz")
    seeds = load_seed_set(str(_write(tmp_path / "s.json", [{"name": "Box", "mask": "roi.nii.gz"}])))
    grid_affine, shape = _grid("LAS")
    mask_img = _ellipsoid_mask(grid_affine, shape)
    bold = _random_bold(mask_img, seed=5)
    resolved = resolve_seeds(seeds, mask_img, "MNI152NLin6Asym")
    assert resolved[0].n_voxels > 4
    expected = _nilearn_label_means(tmp_path / "roi.nii.gz", mask_img, bold, [1])
    np.testing.assert_allclose(_lead_means(bold, mask_img, resolved), expected, rtol=1e-5)


def test_atlas_label_absent_or_out_of_view(tf_home):
    affine, shape = _grid("RAS")
    mask_img = _ellipsoid_mask(affine, shape)
    absent = Seed("Nope", "atlas", atlas="HOSPA", desc="th25", label=99)
    with pytest.raises(UserInputError, match=r"Seed 'Nope': label 99 .* does not exist"):
        resolve_seeds([absent], mask_img, SPACES[0])
    small = nb.Nifti1Image(np.ones((5, 5, 5), np.uint8), affine)  # x, y, z < -42 mm only
    amygdala = Seed("AmygdalaL", "atlas", atlas="HOSPA", desc="th25", label=10)
    with pytest.raises(UserInputError, match="outside the data's field of view"):
        resolve_seeds([amygdala], small, SPACES[0])
    missing = Seed("Cortex", "atlas", atlas="HOCPA", desc="th25", label=1)
    with pytest.raises(UserInputError, match="zero-byte placeholder"):
        resolve_seeds([missing], mask_img, SPACES[1])


def test_atlas_typo_is_named_with_the_atlases_there(tf_home):
    affine, shape = _grid("RAS")
    mask_img = _ellipsoid_mask(affine, shape)
    typo = Seed("NAccL", "atlas", atlas="HOSPAA", desc="th25", label=11)
    with pytest.raises(UserInputError) as info:
        resolve_seeds([typo], mask_img, SPACES[0])
    message = str(info.value)
    assert "no atlas 'HOSPAA'" in message and "did you mean 'HOSPA'?" in message
    assert "Schaefer2018" in message and "TemplateFlow file" not in message  # not a missing file
    desc = Seed("NAccL", "atlas", atlas="HOSPA", desc="th2", label=11)
    with pytest.raises(UserInputError, match=r"has no desc 'th2' \(did you mean 'th25'\?\)"):
        resolve_seeds([desc], mask_img, SPACES[0])


def test_all_seeds_outside_the_mask_are_named_in_one_line():
    affine, shape = _grid("RAS")
    mask_img = _ellipsoid_mask(affine, shape)
    far = [
        Seed(n, "sphere", centre=(0.0, 0.0, z), radius=6.0) for n, z in (("Up", 300), ("Dn", -300))
    ]
    inside = Seed("In", "sphere", centre=(0.0, 0.0, 0.0), radius=6.0)
    with pytest.raises(UserInputError) as info:
        resolve_seeds([far[0], inside, far[1]], mask_img, SPACES[0])
    message = str(info.value)
    assert "Seeds 'Up' has 0% of its" in message and "'Dn' has 0% of its" in message
    assert "'In'" not in message and "\n" not in message


def _malformed_cases():
    ok = {"name": "ok", "center": [0, 0, 0], "radius": 5}
    return [
        (
            [ok, dict(ok, name="b"), {"name": "foo", "center": [1, 2], "radius": 5}],
            "Seed #3 'foo' in {path}: 'center' has 2 values instead of 3.",
        ),
        ([{"name": "foo bar", "center": [1, 2, 3], "radius": 5}], "'name' must be letters"),
        ([{"center": [1, 2, 3], "radius": 5}], "'name' must be letters"),
        ([{"name": "a", "center": [1, 2, 3]}], "needs a 'radius'"),
        ([{"name": "a", "center": [1, 2, 3], "radius": -1}], "'radius' must be positive"),
        ([{"name": "a", "center": [1, 2, 3], "radius": "10"}], "'radius' must hold finite"),
        ([{"name": "a", "center": [1, "x", 3], "radius": 4}], "'center' must hold finite"),
        ([{"name": "a", "center": 3, "radius": 4}], "'center' must be a list"),
        (
            [{"name": "a", "center": [1, 2, 3], "radious": 4}],
            "unknown key 'radious' (did you mean 'radius'?)",
        ),
        (  # a typo of the key that tells the kind is named as such, not as a missing kind
            [{"name": "a", "centr": [1, 2, 3], "radius": 4}],
            "unknown key 'centr' (did you mean 'center'?)",
        ),
        ([{"name": "a", "mask": "m.nii.gz", "radius": 4}], "unknown keys ['radius'] for a mask"),
        ([{"name": "a", "center": [1, 2, 3], "atlas": "HOSPA"}], "give exactly one of"),
        ([{"name": "a"}], "give exactly one of"),
        ([{"name": "a", "atlas": "HOSPA"}], "needs the 'label'"),
        ([{"name": "a", "atlas": "HOSPA", "label": 1.5}], "'label' must be an integer"),
        ([{"name": "a", "atlas": "HO SPA", "label": 1}], "'atlas' must be a TemplateFlow"),
        ([{"name": "a", "mask": "absent.nii.gz"}], "absent.nii.gz does not exist"),
        ([ok, ok], "names several seeds ok"),
        ([], "non-empty list"),
        ({"seed": [ok]}, "non-empty list"),
        (["ok"], "Seed #1 in {path} is a str, not a mapping"),
    ]


@pytest.mark.parametrize(("content", "expected"), _malformed_cases())
@pytest.mark.parametrize("suffix", [".json", ".yml"])
def test_malformed_seed_files(tmp_path, content, expected, suffix):
    path = _write(tmp_path / f"seeds{suffix}", content)
    with pytest.raises(UserInputError) as info:
        load_seed_set(str(path))
    message = str(info.value)
    assert expected.format(path=path) in message
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.json", '[{"name": "a",', "cannot be parsed"),
        ("bad.yaml", "- name: [a\n", "cannot be parsed"),
        ("seeds.txt", "[]", "must end in .json, .yml or .yaml"),
    ],
)
def test_unreadable_seed_files(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserInputError, match=expected) as info:
        load_seed_set(str(path))
    assert "\n" not in str(info.value)
    with pytest.raises(UserInputError, match="neither 'study' nor"):
        load_seed_set(str(tmp_path / "absent.json"))


def _real_mask(space: str) -> nb.Nifti1Image:
    path = DATA / "templates" / f"tpl-{space}_res-02_desc-brain_mask.nii.gz"
    if not path.is_file():
        pytest.skip(f"real data not available: {path}")
    return nb.load(path)


def _flip_to_las(img) -> nb.Nifti1Image:
    """The same voxels on a grid whose x axis runs right to left (the FSL MNI 2 mm layout)."""
    assert nb.aff2axcodes(img.affine) == ("R", "A", "S")
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = img.shape[0] - 1
    return nb.Nifti1Image(np.asanyarray(img.dataobj)[::-1], img.affine @ flip)


@pytest.mark.parametrize("space", SPACES)
def test_study_seeds_on_real_template_masks(tf_home, space):
    mask = _real_mask(space)
    seeds = load_seed_set("study")
    ras = resolve_seeds(seeds, mask, space)  # default min_coverage 0.5
    las = resolve_seeds(seeds, _flip_to_las(mask), space)
    for a, b in zip(ras, las, strict=True):
        assert np.array_equal(a.voxels, b.voxels[::-1]), a.name
    # A whole 10 mm sphere on a 2 mm lattice holds about 4/3*pi*10^3/8 = 524 voxels; the exact
    # count depends on where the centre falls between voxel centres.
    assert all(490 <= round(r.n_voxels / r.coverage) <= 560 for r in ras[:5])
    assert all(r.coverage > 0.95 for r in ras[:5])
    bold = _random_bold(mask, n_volumes=2, seed=11)
    spheres = NiftiSpheresMasker([s.centre for s in seeds[:5]], radius=10.0, mask_img=mask)
    expected = spheres.fit_transform(bold)
    np.testing.assert_allclose(_lead_means(bold, mask, ras[:5]), expected, rtol=1e-5, atol=1e-6)


def test_real_tian_atlas_as_mask_file_seeds(tmp_path):
    tian = DATA / "atlases" / "tian" / "Tian_Subcortex_S1_3T_2009cAsym.nii.gz"
    if not tian.is_file():
        pytest.skip(f"real data not available: {tian}")
    mask = _real_mask("MNI152NLin2009cAsym")
    relative = os.path.relpath(tian, tmp_path)
    entries = [
        {"name": "NAccL", "mask": relative, "label": 13},  # label = line of NAc-lh in _label.txt
        {"name": "AmygdalaR", "mask": relative, "label": 2},  # AMY-rh
    ]
    seeds = load_seed_set(str(_write(tmp_path / "tian.yaml", {"seeds": entries})))
    resolved = resolve_seeds(seeds, mask, "MNI152NLin2009cAsym")
    for item, (low, high) in zip(
        resolved, [((-16, 4, -14), (-4, 20, 0)), ((16, -12, -26), (30, 4, -10))], strict=True
    ):
        centroid = nb.affines.apply_affine(mask.affine, np.argwhere(item.voxels).mean(axis=0))
        assert np.all(centroid > low) and np.all(centroid < high), (item.name, centroid)
        assert item.coverage > 0.9
    bold = _random_bold(mask, n_volumes=3, seed=7)
    expected = _nilearn_label_means(tian, mask, bold, [13, 2])
    np.testing.assert_allclose(_lead_means(bold, mask, resolved), expected, rtol=1e-5, atol=1e-6)
    las = resolve_seeds(seeds, _flip_to_las(mask), "MNI152NLin2009cAsym")
    assert all(np.array_equal(a.voxels, b.voxels[::-1]) for a, b in zip(resolved, las, strict=True))
