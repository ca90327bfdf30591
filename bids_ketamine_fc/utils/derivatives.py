"""What makes OUTPUT_DIR a valid BIDS-Derivatives dataset besides ``dataset_description.json``.

- :data:`BIDSIGNORE`: the files that BIDS does not define yet (statistical maps, seed and ICA
  entities, tables, reports), written to ``OUTPUT_DIR/.bidsignore`` as fMRIPrep and XCP-D do, so
  that the BIDS validator checks everything else;
- :func:`write_readme`: ``OUTPUT_DIR/README.md``;
- :func:`bids_uri`: ``bids:<dataset>:<path>`` references for the ``Sources`` of sidecars (the
  dataset names are the keys of ``DatasetLinks``);
- :func:`set_header_space`: NIfTI units and sform/qform codes, the same in every image written.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nb

from bids_ketamine_fc.utils.io import atomic_write_text

#: ``OUTPUT_DIR/.bidsignore``: one pattern a line (gitignore syntax), each with why.
BIDSIGNORE = (
    ("*.html", "reports"),
    ("logs/", "logs, settings and the methods boilerplate"),
    (
        "/group",
        "group level: BIDS has no group-level layout yet (BEP041 draft); its files follow the "
        "BIDS key-value naming with the entities of docs/outputs.rst",
    ),
    ("*_seed-*", "seed- is not a BIDS entity (seed-to-voxel maps)"),
    ("*_boldmap.*", "statistical maps (BEP041 draft), not in BIDS yet"),
    ("*_timeseries.*", "seed time series (as fMRIPrep's confounds)"),
    ("*_qc.*", "denoising quality control tables"),
)
#: Names of the datasets in ``DatasetLinks`` (BIDS URIs ``bids:<name>:<path>``).
RAW, FMRIPREP = "raw", "fmriprep"

README = """\
# bids_ketamine_fc derivatives

Seed-to-voxel resting-state functional connectivity computed with bids_ketamine_fc {version}
from the fMRIPrep derivatives of the dataset named in `dataset_description.json`
(`SourceDatasets`, `DatasetLinks`).

- `sub-<label>/func/`: per run and per participant, the Fisher-transformed correlation map of
  each seed (`*_seed-<seed>_stat-fisherz_boldmap.nii.gz`), the denoised seed time series
  (`*_desc-seeds_timeseries.tsv`), the denoising quality control (`*_desc-denoising_qc.tsv`)
  and the reduced denoised data that the group ICA reads (`*_desc-reduced_bold.nii.gz`);
- `sub-<label>.html`: the participant report;
- `group/`: responders vs non-responders (statistical maps, clusters, brain-behaviour
  correlation, group ICA) and `group/group.html`, the group report;
- `logs/`: the log and the settings of each level, and `CITATION.md` (`.html`, `.bib`), a
  methods description written from the settings used, with its references.

`seed-`, `stat-`, `model-`, `contrast-`, `inference-`, `cluster-` and `component-` are not (yet)
BIDS entities; `.bidsignore` lists the files that use them so that the BIDS validator checks the
others. Every TSV file has a JSON sidecar describing its columns.
"""


def write_bidsignore(output_dir: Path) -> Path:
    """Write ``OUTPUT_DIR/.bidsignore`` (:data:`BIDSIGNORE`, with a comment per pattern)."""
    lines = [f"# {why}\n{pattern}" for pattern, why in BIDSIGNORE]
    return atomic_write_text(Path(output_dir) / ".bidsignore", "\n".join(lines) + "\n")


def write_readme(output_dir: Path) -> Path:
    """Write ``OUTPUT_DIR/README.md`` (what the dataset holds and where)."""
    from bids_ketamine_fc import __version__

    return atomic_write_text(Path(output_dir) / "README.md", README.format(version=__version__))


def bids_uri(path: Path | str, root: Path | str, dataset: str = "") -> str:
    """Return the BIDS URI ``bids:<dataset>:<path relative to root>`` of a file.

    Parameters
    ----------
    path : Path or str
        A file inside ``root``.
    root : Path or str
        The root of the dataset named ``dataset``.
    dataset : str
        A key of ``DatasetLinks``; empty for the dataset that holds the sidecar.

    Returns
    -------
    str
        The URI; the file name alone (``bids:<dataset>:<name>``) when ``path`` is not inside
        ``root``.
    """
    path, root = Path(path).absolute(), Path(root).absolute()
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        relative = path.name
    return f"bids:{dataset}:{relative}"


def xform_code(space: str | None) -> int:
    """Return the NIfTI xform code of a template space: 4 (MNI_152) or 2 (aligned)."""
    return 4 if space and space.startswith("MNI152") else 2


def set_header_space(img: nb.Nifti1Image, space: str | None, step: float = 1.0):
    """Set units (mm, and s for 4-D images) and the sform/qform codes of ``space``; return ``img``.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        Changed in place.
    space : str or None
        Template space of the image (``MNI152*`` gives code 4).
    step : float
        Size of the fourth dimension (the repetition time of a series; 1 for other 4-D images).
    """
    header = img.header
    code = xform_code(space)
    img.set_sform(img.affine, code=code)
    img.set_qform(img.affine, code=code)
    if len(img.shape) > 3:
        header.set_xyzt_units("mm", "sec")
        header.set_zooms((*header.get_zooms()[:3], float(step), *header.get_zooms()[4:]))
    else:
        header.set_xyzt_units("mm")
    return img


def save_mask(path: Path, mask, affine, space: str | None, description: str, **sidecar) -> Path:
    """Write a binary mask (uint8 NIfTI) with its JSON sidecar (``Type``, ``Description``...).

    Parameters
    ----------
    path : Path
        The ``.nii.gz`` file.
    mask : numpy.ndarray
        3-D boolean mask.
    affine : numpy.ndarray
        Voxel-to-world affine.
    space : str or None
        Template space (header codes, :func:`set_header_space`).
    description : str
        The sidecar's ``Description``.
    **sidecar
        Further keys (``Type`` defaults to ``"Brain"``; ``Sources``, ...).

    Returns
    -------
    Path
    """
    import json

    import numpy as np

    from bids_ketamine_fc.utils.io import atomic_save_img

    img = set_header_space(nb.Nifti1Image(np.asarray(mask).astype(np.uint8), affine), space)
    atomic_save_img(img, Path(path))
    meta = {"Type": "Brain", "Description": description, **sidecar}
    json_path = Path(path).with_name(Path(path).name.replace(".nii.gz", ".json"))
    atomic_write_text(json_path, json.dumps(meta, indent=2) + "\n")
    return Path(path)
