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


def test_compressed_nifti_is_the_same_bytes_every_time(tmp_path, monkeypatch):
    """No time stamp nor (temporary) file name in the gzip header: reruns are byte-identical."""
    import time

    img = nb.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.eye(4))
    first = atomic_save_img(img, tmp_path / "first.nii.gz").read_bytes()
    monkeypatch.setattr(time, "time", lambda: 2e9)  # gzip takes the time stamp from time.time()
    assert atomic_save_img(img, tmp_path / "second.nii.gz").read_bytes() == first
    assert first[4:8] == bytes(4) and not first[3] & 0x08  # MTIME 0, no FNAME field
