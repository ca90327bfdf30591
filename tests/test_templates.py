"""Tests of TemplateFlow look-ups (no download, ever) and nearest-neighbour label resampling."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.templates import _has_content, get_template_file, resample_labels_to

HOSPA = {"atlas": "HOSPA", "desc": "th25", "suffix": "dseg"}


@pytest.mark.parametrize(
    ("space", "resolution", "expected"),
    [
        ("MNI152NLin2009cAsym", 2, "res-02"),
        ("MNI152NLin2009cAsym", 1, "res-01"),
        ("MNI152NLin2009cAsym", 3, "res-02"),  # closest
        ("MNI152NLin2009cAsym", 4, "res-02"),
        ("MNI152NLin2009cAsym", None, "res-01"),  # finest
        ("MNI152NLin6Asym", 1, "res-02"),  # res-01 is a zero-byte placeholder
    ],
)
def test_get_template_file_closest_resolution(tf_home, space, resolution, expected):
    path = get_template_file(space, resolution, **HOSPA)
    assert path.name == f"tpl-{space}_{expected}_atlas-HOSPA_desc-th25_dseg.nii.gz"
    assert path.parent == tf_home / f"tpl-{space}"
    assert path.stat().st_size > 0


def test_get_template_file_without_resolution_entity(tf_home):
    path = get_template_file(
        "MNI152NLin2009cAsym", 2, atlas="HOSPA", suffix="dseg", extension=".tsv"
    )
    assert path.name == "tpl-MNI152NLin2009cAsym_atlas-HOSPA_dseg.tsv"
    assert "Left Accumbens" in path.read_text()


def test_placeholder_is_refused_not_downloaded(tf_home):
    # conftest makes any download attempt an AssertionError, which would escape pytest.raises.
    with pytest.raises(UserInputError) as info:
        get_template_file("MNI152NLin6Asym", 2, atlas="HOCPA", desc="th25", suffix="dseg")
    message = str(info.value)
    assert "tpl-MNI152NLin6Asym_res-02_atlas-HOCPA_desc-th25_dseg.nii.gz" in message
    assert "zero-byte placeholder" in message
    assert "set TEMPLATEFLOW_HOME to a folder holding it" in message
    assert "run bids_ketamine_fc-fetch-templateflow" in message  # a file the command fetches
    assert "\n" not in message


def test_missing_file_is_named(tf_home):
    with pytest.raises(UserInputError, match="is missing") as info:
        get_template_file("MNI152NLin2009cAsym", 2, atlas="Nope", desc="th25", suffix="dseg")
    assert "tpl-MNI152NLin2009cAsym_res-02_atlas-Nope_desc-th25_dseg.nii.gz" in str(info.value)
    # a file the fetch command does not list: the TemplateFlow call that downloads it
    assert (
        "api.get('MNI152NLin2009cAsym', resolution=2, atlas='Nope', desc='th25', suffix='dseg', "
        "extension='.nii.gz')" in str(info.value)
    )
    with pytest.raises(UserInputError, match="is missing"):
        get_template_file("NoSuchTemplate", 2, **HOSPA)


def test_ambiguous_query_asks_for_desc(tf_home):
    with pytest.raises(UserInputError, match=r"several files .*desc-th25.*desc-th50"):
        get_template_file("MNI152NLin2009cAsym", 2, atlas="HOSPA", suffix="dseg")


def test_saved_s3_error_counts_as_placeholder(tmp_path):
    error = tmp_path / "error.nii.gz"
    error.write_bytes(b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>')
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    real = tmp_path / "real.nii.gz"
    nb.save(nb.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.eye(4)), real)
    assert not _has_content(error)
    assert not _has_content(empty)
    assert not _has_content(tmp_path / "absent.nii.gz")
    assert _has_content(real)


def test_resample_labels_to_las_grid_matches_world_lookup():
    rng = np.random.default_rng(0)
    source_affine = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, -12], [0, 0, 1.0, -8], [0, 0, 0, 1]])
    labels = rng.integers(0, 5, size=(20, 24, 16)).astype(np.int16)
    source = nb.Nifti1Image(labels, source_affine)
    # LAS target grid, 2 mm, voxel centres offset by 0.3 mm from the source's to avoid ties.
    target_affine = np.array(
        [[-2.0, 0, 0, 9.3], [0, 2.0, 0, -11.3], [0, 0, 2.0, -7.3], [0, 0, 0, 1]]
    )
    target = nb.Nifti1Image(np.zeros((10, 12, 8), np.uint8), target_affine)
    result = np.asanyarray(resample_labels_to(source, target).dataobj)
    # Independent computation: each target voxel takes the label of the source voxel whose
    # centre is nearest in world space; beyond the outermost source voxel centres it is 0.
    ijk = np.indices(target.shape).reshape(3, -1).T
    world = nb.affines.apply_affine(target_affine, ijk)
    src_float = nb.affines.apply_affine(np.linalg.inv(source_affine), world)
    inside = np.all((src_float >= 0) & (src_float <= np.array(labels.shape) - 1), axis=1)
    src = np.rint(src_float).astype(int)
    expected = np.zeros(len(ijk), labels.dtype)
    expected[inside] = labels[tuple(src[inside].T)]
    assert np.array_equal(result, expected.reshape(target.shape))
    assert inside.mean() > 0.5


@pytest.mark.parametrize(
    "target_affine",
    [
        # oblique 2.5 mm grid (a full affine_transform)
        np.array([[2.4, 0.3, 0, -8.7], [-0.3, 2.4, 0.2, -9.1], [0, -0.2, 2.5, -6.2], [0, 0, 0, 1]]),
        # LAS, 2 mm, voxel centres on the source's lattice: every nearest-neighbour tie
        np.array([[-2.0, 0, 0, 9.0], [0, 2.0, 0, -12.0], [0, 0, 2.0, -8.0], [0, 0, 0, 1]]),
        # axis-aligned, shifted by half a voxel (scipy's diagonal path, ties again)
        np.array([[1.0, 0, 0, -9.5], [0, 1.0, 0, -11.5], [0, 0, 1.0, -7.5], [0, 0, 0, 1]]),
    ],
)
def test_resample_labels_to_equals_nilearn(target_affine):
    from nilearn.image import resample_to_img

    rng = np.random.default_rng(1)
    source_affine = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, -12], [0, 0, 1.0, -8], [0, 0, 0, 1]])
    source = nb.Nifti1Image(rng.integers(0, 30, (20, 24, 16)).astype(np.int16), source_affine)
    target = nb.Nifti1Image(np.zeros((11, 13, 9), np.uint8), target_affine)
    ours = np.asanyarray(resample_labels_to(source, target).dataobj)
    theirs = resample_to_img(
        source, target, interpolation="nearest", force_resample=True, copy_header=True
    )
    assert ours.dtype == np.int16
    assert np.array_equal(ours, np.asanyarray(theirs.dataobj))


def test_resample_labels_to_same_grid_keeps_the_labels():
    labels = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    img = nb.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    target = nb.Nifti1Image(np.zeros((3, 4, 5, 7), np.float32), img.affine)  # a 4D run
    assert np.array_equal(np.asanyarray(resample_labels_to(img, target).dataobj), labels)
