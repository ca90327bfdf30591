"""Shared fixtures.

``tf_home`` is a tiny TemplateFlow home of GENERATED files (not the real atlases): blobs at roughly
the right MNI places carrying the Harvard-Oxford subcortical (HOSPA) label values, and zero-byte
placeholders like those of the ``templateflow`` wheel. Add rows to ``_TF_FILES`` when a test
needs more files.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

# Generated stand-ins for HOSPA labels: value -> (name, MNI centre in mm, radius in mm).
_HOSPA_BLOBS = {
    4: ("Left Thalamus", (-11.0, -18.0, 7.0), 7.0),
    10: ("Left Amygdala", (-23.0, -5.0, -18.0), 6.0),
    11: ("Left Accumbens", (-10.0, 12.0, -8.0), 4.5),
    15: ("Right Thalamus", (11.0, -18.0, 7.0), 7.0),
    20: ("Right Amygdala", (23.0, -4.0, -18.0), 6.0),
    21: ("Right Accumbens", (10.0, 12.0, -8.0), 4.5),
}
_FOV_MM = ((-40.0, 40.0), (-40.0, 30.0), (-40.0, 20.0))  # generated atlases' field of view


def _generated_label_image(
    voxel_mm: float, orientation: str = "RAS", blobs=None, fov=_FOV_MM
) -> nb.Nifti1Image:
    """Return a generated label image (HOSPA-like by default) on a ``voxel_mm`` grid, RAS or LAS."""
    blobs = _HOSPA_BLOBS if blobs is None else blobs
    shape = [int((hi - lo) / voxel_mm) + 1 for lo, hi in fov]
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [lo for lo, _ in fov]
    if orientation == "LAS":
        affine[0, 0], affine[0, 3] = -voxel_mm, fov[0][1]
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nb.affines.apply_affine(affine, ijk)
    labels = np.zeros(len(xyz), dtype=np.uint8)
    for value, (_, centre, radius) in blobs.items():
        labels[np.linalg.norm(xyz - centre, axis=1) <= radius] = value
    return nb.Nifti1Image(labels.reshape(shape), affine)


def _hospa_tsv() -> str:
    rows = ["index\tname"] + [f"{k}\t{name}" for k, (name, _, _) in _HOSPA_BLOBS.items()]
    return "\n".join(rows) + "\n"


# Generated stand-ins for Schaefer2018 200Parcels7Networks (Yeo-7 names), left (1-8) and right
# (101-108) halves mirrored; value -> (name, MNI centre in mm, radius in mm).
_SCHAEFER_LEFT = [
    ("Vis_1", (-14.0, -90.0, 4.0), 12.0),
    ("SomMot_1", (-38.0, -22.0, 56.0), 12.0),
    ("DorsAttn_Post_1", (-26.0, -62.0, 54.0), 8.0),
    ("SalVentAttn_Med_1", (-4.0, 22.0, 36.0), 8.0),
    ("Limbic_TempPole_1", (-30.0, 10.0, -30.0), 8.0),
    ("Cont_PFCl_1", (-44.0, 30.0, 28.0), 8.0),
    ("Default_PFC_1", (-4.0, 54.0, -2.0), 12.0),
    ("Default_pCunPCC_1", (-4.0, -60.0, 36.0), 12.0),
]
_SCHAEFER_BLOBS = {
    k + offset: (f"7Networks_{hemi}_{name}", (sign * x, y, z), radius)
    for offset, hemi, sign in ((1, "LH", 1.0), (101, "RH", -1.0))
    for k, (name, (x, y, z), radius) in enumerate(_SCHAEFER_LEFT)
}
_SCHAEFER_FOV_MM = ((-70.0, 70.0), (-106.0, 76.0), (-40.0, 70.0))
_SCHAEFER = "atlas-Schaefer2018_desc-200Parcels7Networks_dseg"
_SCHAEFER_IMG = (_SCHAEFER_BLOBS, _SCHAEFER_FOV_MM)


def _schaefer_tsv() -> str:
    rows = ["index\tname"] + [f"{k}\t{name}" for k, (name, _, _) in _SCHAEFER_BLOBS.items()]
    return "\n".join(rows) + "\n"


# (template, file name after "tpl-<template>_", content maker or None for a zero-byte placeholder)
_TF_FILES = [
    ("MNI152NLin2009cAsym", "res-01_atlas-HOSPA_desc-th25_dseg.nii.gz", (1.0, "RAS")),
    ("MNI152NLin2009cAsym", "res-02_atlas-HOSPA_desc-th25_dseg.nii.gz", (2.0, "RAS")),
    ("MNI152NLin2009cAsym", "res-02_atlas-HOSPA_desc-th50_dseg.nii.gz", None),
    ("MNI152NLin2009cAsym", "atlas-HOSPA_dseg.tsv", _hospa_tsv),
    ("MNI152NLin6Asym", "res-01_atlas-HOSPA_desc-th25_dseg.nii.gz", None),
    ("MNI152NLin6Asym", "res-02_atlas-HOSPA_desc-th25_dseg.nii.gz", (2.0, "LAS")),
    ("MNI152NLin6Asym", "atlas-HOSPA_dseg.tsv", _hospa_tsv),
    ("MNI152NLin6Asym", "res-01_atlas-HOCPA_desc-th25_dseg.nii.gz", None),
    ("MNI152NLin6Asym", "res-02_atlas-HOCPA_desc-th25_dseg.nii.gz", None),
    ("MNI152NLin2009cAsym", f"res-02_{_SCHAEFER}.nii.gz", (2.0, "RAS", *_SCHAEFER_IMG)),
    ("MNI152NLin2009cAsym", f"{_SCHAEFER}.tsv", _schaefer_tsv),
    ("MNI152NLin6Asym", f"res-02_{_SCHAEFER}.nii.gz", (2.0, "LAS", *_SCHAEFER_IMG)),
    ("MNI152NLin6Asym", f"{_SCHAEFER}.tsv", _schaefer_tsv),
]


def _write_generated_templateflow(root: Path) -> None:
    (root / "README.md").write_text("GENERATED for tests: not TemplateFlow data.\n")
    for template in sorted({template for template, _, _ in _TF_FILES}):
        description = {"Identifier": template, "Name": f"{template} (generated for tests)"}
        (root / f"tpl-{template}").mkdir()
        (root / f"tpl-{template}" / "template_description.json").write_text(json.dumps(description))
    for template, name, content in _TF_FILES:
        path = root / f"tpl-{template}" / f"tpl-{template}_{name}"
        if isinstance(content, tuple):  # (voxel size, orientation) of a generated label image
            nb.save(_generated_label_image(*content), path)
        else:
            path.write_text(content() if content else "")


def _refuse_download(*args, **kwargs):
    raise AssertionError("a test tried to download a TemplateFlow file")


@pytest.fixture(scope="session")
def tf_home(tmp_path_factory):
    """Point TemplateFlow at a tiny generated home for the session; downloads fail the test."""
    home = tmp_path_factory.mktemp("templateflow")
    _write_generated_templateflow(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEMPLATEFLOW_HOME", str(home))
        patch.setenv("TEMPLATEFLOW_AUTOUPDATE", "0")
        # A first import of templateflow reads the variables above; after an earlier import
        # (from another test), its cache is re-rooted and its cached layout dropped.
        from templateflow import client, conf

        patch.setattr(conf._cache.config, "root", home)
        patch.setattr(client, "_s3_get", _refuse_download)
        patch.setattr(client, "_datalad_get", _refuse_download)
        conf._cache.__dict__.pop("layout", None)
        yield home
        conf._cache.__dict__.pop("layout", None)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """An 8-participant demo and its participant level (MultiProc): ``(root, OUTPUT_DIR)``.

    Tests read it and must not change ``root/bids`` or the participant outputs.
    """
    from demo_runs import run_participant

    from bids_ketamine_fc.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, n_subjects=8, n_volumes=120, seed=3)
    return root, run_participant(root)
