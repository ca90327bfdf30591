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


def _generated_label_image(voxel_mm: float, orientation: str = "RAS") -> nb.Nifti1Image:
    """Return the generated HOSPA-like label image on a ``voxel_mm`` grid, RAS or LAS."""
    shape = [int((hi - lo) / voxel_mm) + 1 for lo, hi in _FOV_MM]
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [lo for lo, _ in _FOV_MM]
    if orientation == "LAS":
        affine[0, 0], affine[0, 3] = -voxel_mm, _FOV_MM[0][1]
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nb.affines.apply_affine(affine, ijk)
    labels = np.zeros(len(xyz), dtype=np.uint8)
    for value, (_, centre, radius) in _HOSPA_BLOBS.items():
        labels[np.linalg.norm(xyz - centre, axis=1) <= radius] = value
    return nb.Nifti1Image(labels.reshape(shape), affine)


def _hospa_tsv() -> str:
    rows = ["index\tname"] + [f"{k}\t{name}" for k, (name, _, _) in _HOSPA_BLOBS.items()]
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
