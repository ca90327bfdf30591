"""Seeds placed once per grid by the preflight and read back by each run."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from bids_ketamine_fc.participant.seed_grid import load_placed, save_placed
from bids_ketamine_fc.participant.seeds import load_seed_set, place_seeds, resolve_seeds

SPACE = "MNI152NLin2009cAsym"


def _mask(affine, shape=(32, 38, 25), centre=(0, -8, 10), axes=(60, 70, 46)):
    xyz = nb.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)
    inside = (((xyz - centre) / axes) ** 2).sum(axis=1) <= 1
    return nb.Nifti1Image(inside.reshape(shape).astype(np.uint8), affine)


AFFINE = np.array([[4.0, 0, 0, -62.3], [0, 4.0, 0, -78.1], [0, 0, 4.0, -38.6], [0, 0, 0, 1]])


def test_saved_seeds_resolve_as_placing_them_again(tf_home, tmp_path):
    seeds = load_seed_set("study")
    grid = _mask(AFFINE)
    path = save_placed(place_seeds(seeds, grid, SPACE), SPACE, AFFINE, tmp_path)
    # another run on the same grid, with a brain mask of its own
    run_mask = _mask(AFFINE, axes=(62, 68, 47))
    placed = load_placed(path, seeds, SPACE, run_mask.affine, run_mask.shape)
    from_file = resolve_seeds(seeds, run_mask, SPACE, placed=placed)
    direct = resolve_seeds(seeds, run_mask, SPACE)
    for a, b in zip(from_file, direct, strict=True):
        assert np.array_equal(a.voxels, b.voxels), a.name
        assert (a.n_voxels, a.coverage, a.definition) == (b.n_voxels, b.coverage, b.definition)
    assert direct[5].definition["TemplateFlowFile"]  # the atlas seeds went through the file too


def test_file_name_follows_the_content(tf_home, tmp_path):
    seeds = load_seed_set("study")
    grid = _mask(AFFINE)
    first = save_placed(place_seeds(seeds, grid, SPACE), SPACE, AFFINE, tmp_path)
    again = save_placed(place_seeds(seeds, grid, SPACE), SPACE, AFFINE, tmp_path)
    assert again == first and len(list(tmp_path.iterdir())) == 1
    fewer = save_placed(place_seeds(seeds[:4], grid, SPACE), SPACE, AFFINE, tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    moved = save_placed(place_seeds(seeds, _mask(shifted), SPACE), SPACE, shifted, tmp_path)
    assert len({first, fewer, moved}) == 3


def test_other_seeds_or_grid_are_refused(tf_home, tmp_path):
    seeds = load_seed_set("study")
    path = save_placed(place_seeds(seeds, _mask(AFFINE), SPACE), SPACE, AFFINE, tmp_path)
    with pytest.raises(ValueError, match="other seeds"):
        load_placed(path, seeds[:3], SPACE, AFFINE, (32, 38, 25))
    with pytest.raises(ValueError, match="another grid"):
        load_placed(path, seeds, SPACE, AFFINE, (32, 38, 26))
    with pytest.raises(ValueError, match="another space"):
        load_placed(path, seeds, "MNI152NLin6Asym", AFFINE, (32, 38, 25))
