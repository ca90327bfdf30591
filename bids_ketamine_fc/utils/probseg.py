"""fMRIPrep's tissue probability maps of a run's space, found at any resolution."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np


def tissue_maps(layout, subject: str, entities: dict) -> dict:
    """Find fMRIPrep's tissue probability maps of a subject in the run's space (any resolution).

    ``anat/sub-X[_ses-Y]_space-<S>[_res-<R>]_label-{GM,WM,CSF}_probseg.nii.gz``: the run's session
    is preferred when the anatomy is per session, then the finest resolution (as CONN imports
    the anatomical images fMRIPrep wrote; it samples them on the BOLD grid).

    Returns
    -------
    dict
        ``{"GM"|"WM"|"CSF": Path}`` for the labels found (empty when none).
    """
    found = {}
    for label in ("GM", "WM", "CSF"):
        files = layout.get(
            subject=subject, space=entities["space"], label=label, suffix="probseg",
            extension=[".nii.gz", ".nii"], return_type="file",
        )  # fmt: skip
        if files:
            found[label] = Path(min(files, key=lambda f: _map_rank(f, entities.get("session"))))
    return found


def _map_rank(path: str, session: str | None) -> tuple:
    """Order tissue maps: the run's session (or no session) first, then smaller voxels first."""
    other_session = "_ses-" in Path(path).name and f"_ses-{session}_" not in Path(path).name
    try:
        voxel = float(np.prod(nb.load(path).header.get_zooms()[:3]))
    except (OSError, ValueError, nb.filebasedimages.ImageFileError):
        voxel = np.inf  # unreadable: last choice (reading it later names the file)
    return (other_session, voxel, path)
