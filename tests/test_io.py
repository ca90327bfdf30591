"""Atomic writing and fast NIfTI compression."""

import gzip

import nibabel as nb
import numpy as np

from bids_ketamine_fc.utils.io import atomic_save_img, save_img


def test_compressed_nifti_reads_back_as_nibabel_writes_it(tmp_path):
    rng = np.random.default_rng(0)
    img = nb.Nifti1Image(rng.standard_normal((6, 7, 5, 4)).astype(np.float32), np.eye(4) * 2)
    img.header.set_xyzt_units("mm", "sec")
    ours = atomic_save_img(img, tmp_path / "ours.nii.gz")
    nb.save(img, tmp_path / "nibabel.nii.gz")
    # an ordinary gzip stream holding the very bytes nibabel writes
    with gzip.open(ours) as a, gzip.open(tmp_path / "nibabel.nii.gz") as b:
        assert a.read() == b.read()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_uncompressed_nifti(tmp_path):
    img = nb.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    save_img(img, tmp_path / "plain.nii")
    assert np.array_equal(np.asanyarray(nb.load(tmp_path / "plain.nii").dataobj), img.dataobj)
