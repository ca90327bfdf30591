"""Finding the inputs: the BIDS dataset, the fMRIPrep derivatives and the runs to process.

Everything a user can get wrong about paths and labels is checked here, before any output is written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.exceptions import (
    MissingInputError,
    NotBIDSError,
    NothingSelectedError,
    UsageError,
    UserInputError,
)
from bids_ketamine_fc.utils.probseg import tissue_maps

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
SUPPORTED_SPACES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")


@dataclass(frozen=True)
class RunInputs:
    """The files and metadata of one preprocessed BOLD run."""

    subject: str
    entities: dict = field(hash=False)  # session, task, run, space, res (those present)
    bold: Path
    mask: Path
    confounds: Path
    tr: float
    n_volumes: int
    seeds_file: Path | None = field(default=None, compare=False)  # seeds placed by the preflight
    probseg: dict = field(default_factory=dict, hash=False)  # "GM"/"WM"/"CSF" -> Path

    @property
    def prefix(self) -> str:
        """BIDS file-name prefix of the run's outputs: ``sub-X[_ses-Y]_task-Z[_run-N]``."""
        return build_prefix(self.subject, self.entities, ("session", "task", "run"))

    @property
    def space_prefix(self) -> str:
        """Prefix including the ``space``/``res`` entities."""
        return build_prefix(self.subject, self.entities, ("session", "task", "run", "space", "res"))


_SHORT = {"session": "ses", "task": "task", "run": "run", "space": "space", "res": "res"}


def build_prefix(subject: str, entities: dict, keys: tuple[str, ...]) -> str:
    """Join ``sub-<subject>`` and the given entities, in BIDS order, into a file-name prefix."""
    parts = [f"sub-{subject}"]
    parts += [f"{_SHORT[k]}-{entities[k]}" for k in keys if entities.get(k) not in (None, "")]
    return "_".join(parts)


def clean_labels(labels: list[str] | tuple[str, ...], prefix: str, option: str) -> tuple[str, ...]:
    """Strip ``sub-``/``ses-`` prefixes and refuse labels with path or special characters.

    A value that is not a label but names an existing file is read as a list of labels, one a
    line (BIDS-Apps 2.0: ``--subject-label subject_ids.txt``).
    """
    cleaned = []
    for label in _read_label_files(labels, prefix):
        value = _strip_prefix(label, prefix)
        if not _LABEL.match(value):
            raise UsageError(
                f"{option} {label!r} is not a valid BIDS label (letters and digits only, e.g. "
                f"{option} 01) nor a file of labels"
            )
        cleaned.append(value)
    return tuple(dict.fromkeys(cleaned))


def _read_label_files(labels, prefix: str) -> list[str]:
    """Replace each value naming a text file by the labels it lists (blank lines skipped)."""
    values = []
    for label in labels:
        path = Path(label)
        if not _LABEL.match(_strip_prefix(label, prefix)) and path.is_file():
            values += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        else:
            values.append(label)
    return values


def _strip_prefix(label: str, prefix: str) -> str:
    return label[len(prefix) + 1 :] if label.startswith(f"{prefix}-") else label


def _read_description(path: Path) -> dict:
    try:
        return json.loads((path / "dataset_description.json").read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise NotBIDSError(
            f"{path / 'dataset_description.json'} is not valid JSON ({err})"
        ) from err


def _is_derivative(description: dict) -> bool:
    return description.get("DatasetType") == "derivative"


def resolve_input_dirs(
    bids_dir: Path, fmriprep_dir: Path | None, required: bool = True
) -> tuple[Path, Path | None]:
    """Check BIDS_DIR and find the fMRIPrep derivatives.

    Parameters
    ----------
    bids_dir : Path
    fmriprep_dir : Path or None
        ``--fmriprep-dir``; None looks in ``BIDS_DIR/derivatives/fmriprep`` (or BIDS_DIR itself).
    required : bool
        Refuse a missing fMRIPrep folder (the participant level); the group level never reads
        it and gets None.

    Returns
    -------
    (bids_dir, fmriprep_dir) : tuple of Path, absolute (fmriprep_dir None when absent and not
        required).
    """
    bids_dir = Path(bids_dir).absolute()
    if not bids_dir.is_dir():
        raise MissingInputError(
            f"BIDS_DIR {bids_dir} does not exist: give the path of a BIDS dataset"
        )
    description = _read_description(bids_dir)
    if not description:
        raise NotBIDSError(
            f"BIDS_DIR {bids_dir} is not a BIDS dataset (no dataset_description.json): "
            "give the dataset's top folder"
        )
    if fmriprep_dir is None:
        fmriprep_dir = (
            bids_dir if _is_derivative(description) else bids_dir / "derivatives" / "fmriprep"
        )
    fmriprep_dir = Path(fmriprep_dir).absolute()
    if not fmriprep_dir.is_dir() and not required:
        return bids_dir, None
    if not fmriprep_dir.is_dir():
        raise MissingInputError(
            f"no fMRIPrep derivatives at {fmriprep_dir}: run fMRIPrep first or pass --fmriprep-dir"
        )
    return bids_dir, fmriprep_dir


def check_output_dir(output_dir: Path, bids_dir: Path, fmriprep_dir: Path | None) -> Path:
    """Refuse an OUTPUT_DIR that is, or lies inside, an input dataset.

    ``BIDS_DIR/derivatives/<name>`` is allowed: BIDS puts derivatives there.
    """
    output_dir = Path(output_dir).absolute()
    for source in {bids_dir, fmriprep_dir} - {None}:
        inside = output_dir == source or source in output_dir.parents
        allowed = (
            source == bids_dir != fmriprep_dir and (bids_dir / "derivatives") in output_dir.parents
        )
        if fmriprep_dir in output_dir.parents or output_dir == fmriprep_dir:
            allowed = False
        if inside and not allowed:
            raise UsageError(
                f"OUTPUT_DIR {output_dir} is inside the input dataset {source}: choose a folder "
                f"outside it (or {bids_dir / 'derivatives' / 'bids_ketamine_fc'})"
            )
    return output_dir


def repetition_time(bold: Path) -> float:
    """Return the TR in seconds from the JSON sidecar, else from the NIfTI header."""
    from bids_ketamine_fc.utils.io import load_nifti

    sidecar = Path(str(bold).replace(".nii.gz", ".json").replace(".nii", ".json"))
    if sidecar.exists():
        try:
            tr = json.loads(sidecar.read_text()).get("RepetitionTime")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise UserInputError(
                f"{sidecar}: not a JSON object ({err}); restore fMRIPrep's sidecar"
            ) from err
        if isinstance(tr, (int, float)) and tr > 0:
            return float(tr)
    header = load_nifti(bold, "BOLD run", _REFETCH).header
    zooms = header.get_zooms()
    unit = header.get_xyzt_units()[1]
    if len(zooms) > 3 and zooms[3] > 0 and unit in ("sec", "msec"):
        return float(zooms[3]) / (1000.0 if unit == "msec" else 1.0)
    raise UserInputError(
        f"{bold}: no usable repetition time (no RepetitionTime in {sidecar.name} and no time unit "
        "in the header): add RepetitionTime (seconds) to the JSON sidecar"
    )


_REFETCH = "re-run fMRIPrep for this run or restore the file"


def check_same_grid(bold: Path, mask: Path) -> None:
    """Refuse a BOLD run and brain mask on different grids (headers only)."""
    from bids_ketamine_fc.utils.io import load_nifti

    bold_img = load_nifti(bold, "BOLD run", _REFETCH)
    mask_img = load_nifti(mask, "brain mask", _REFETCH)
    if bold_img.shape[:3] != mask_img.shape[:3] or not np.allclose(
        bold_img.affine, mask_img.affine, atol=1e-3
    ):
        raise UserInputError(
            f"{bold.name} {bold_img.shape[:3]} and its mask {mask.name} {mask_img.shape[:3]} are on "
            "different grids: use the brain mask fMRIPrep wrote for this run and space"
        )
    if len(bold_img.shape) != 4:
        raise UserInputError(f"{bold}: expected a 4D BOLD series, got shape {bold_img.shape}")


def collect_runs(
    fmriprep_dir: Path,
    task: str,
    space: str,
    subjects: tuple[str, ...] = (),
    sessions: tuple[str, ...] = (),
    problems: list | None = None,
) -> list[RunInputs]:
    """Find every preprocessed BOLD run of ``task`` in ``space`` with its mask and confounds (pybids).

    Parameters
    ----------
    fmriprep_dir : Path
    task, space : str
    subjects, sessions : tuple of str
        Labels selected (all when empty).
    problems : list, optional
        When given, a run with problems (missing mask or confounds, unreadable header, different
        grids, no TR) is left out and appended as a :class:`RunProblem` with every one of them;
        otherwise the first is raised.

    Raises
    ------
    UserInputError
        Unknown participant or session labels, no run for the task/space, or (without
        ``problems``) a problem of a run.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    # Sidecars are read where needed (repetition_time): indexing them all is a third of the time.
    indexer = BIDSLayoutIndexer(validate=False, index_metadata=False)
    layout = BIDSLayout(
        fmriprep_dir, validate=False, config=["bids", "derivatives"], indexer=indexer
    )
    available = layout.get_subjects()
    unknown = sorted(set(subjects) - set(available))
    if unknown:
        raise NothingSelectedError(
            f"--participant-label {' '.join(unknown)} not found in {fmriprep_dir} "
            f"(available: {' '.join(sorted(available)[:20]) or 'none'})"
        )
    _check_sessions(layout, sessions, fmriprep_dir)
    query = {"task": task, "space": space, "desc": "preproc", "suffix": "bold"}
    if subjects:
        query["subject"] = list(subjects)
    if sessions:
        query["session"] = list(sessions)
    bolds = layout.get(extension=[".nii.gz", ".nii"], **query)
    if not bolds:
        spaces = sorted(layout.get_spaces(task=task)) if task in layout.get_tasks() else []
        raise NothingSelectedError(
            f"no fMRIPrep BOLD runs for --task-id {task} in --space {space} under {fmriprep_dir} "
            f"(tasks there: {' '.join(layout.get_tasks()) or 'none'}; spaces for this task: "
            f"{' '.join(spaces) or 'none'})"
        )
    runs = []
    for bold in bolds:
        run = _run_inputs(layout, bold)
        if isinstance(run, RunInputs):
            runs.append(run)
        elif problems is None:
            raise run.errors[0]
        else:
            problems.append(run)
    return runs


def _check_sessions(layout, sessions: tuple[str, ...], fmriprep_dir: Path) -> None:
    if not sessions:
        return
    there = sorted(layout.get_sessions())
    if not there:
        raise NothingSelectedError(
            f"--session-label {' '.join(sessions)}: {fmriprep_dir} has no sessions (no ses-<label> "
            "folders); leave out --session-label"
        )
    unknown = sorted(set(sessions) - set(there))
    if unknown:
        raise NothingSelectedError(
            f"--session-label {' '.join(unknown)} not found in {fmriprep_dir} "
            f"(sessions there: {' '.join(there)})"
        )


@dataclass(frozen=True)
class RunProblem:
    """A run that cannot be processed: every problem found, and its confounds table if found."""

    subject: str
    prefix: str
    errors: list
    confounds: Path | None


def _run_inputs(layout, bold) -> RunInputs | RunProblem:
    """Find the brain mask and confounds of one BOLD run (pybids file) and check them."""
    from bids.layout import Query

    ents = {k: bold.entities.get(k) for k in ("session", "task", "run", "space", "res")}
    pinned = {k: (v if v is not None else Query.NONE) for k, v in ents.items()}
    subject = bold.entities["subject"]
    no_space = {k: v for k, v in pinned.items() if k not in ("space", "res")}
    bold_path = Path(bold.path)
    errors: list[UserInputError] = []
    mask = _attempt(
        errors, _one, layout, bold.path, "brain mask", desc="brain", suffix="mask",
        extension=[".nii.gz", ".nii"], subject=subject, **pinned,
    )  # fmt: skip
    confounds = _attempt(
        errors, _one, layout, bold.path, "confounds table", desc="confounds",
        suffix=["timeseries", "regressors"], extension=".tsv", subject=subject, **no_space,
    )  # fmt: skip
    if mask is not None:
        _attempt(errors, check_same_grid, bold_path, mask)
    tr = _attempt(errors, repetition_time, bold_path)
    if errors:
        prefix = build_prefix(subject, ents, ("session", "task", "run"))
        return RunProblem(subject, prefix, errors, confounds)
    return RunInputs(
        subject=subject,
        entities={k: v for k, v in ents.items() if v is not None},
        bold=bold_path,
        mask=mask,
        confounds=confounds,
        tr=tr,
        n_volumes=int(nb.load(bold_path).shape[3]),
        probseg=tissue_maps(layout, subject, ents),
    )


def _attempt(errors: list, function, *args, **kwargs):
    """Return ``function(*args, **kwargs)``, or None with its user error appended to ``errors``."""
    try:
        return function(*args, **kwargs)
    except UserInputError as err:
        errors.append(err)
        return None


def _one(layout, bold: str, what: str, **query) -> Path:
    found = layout.get(return_type="file", **query)
    if not found:
        raise MissingInputError(
            f"no {what} found for {Path(bold).name}: fMRIPrep writes it beside the BOLD run; "
            "re-run fMRIPrep or restore the file"
        )
    return Path(sorted(found)[0])


def write_dataset_description(settings) -> Path:
    """Write ``OUTPUT_DIR/dataset_description.json``, ``README.md`` and ``.bidsignore`` atomically.

    ``DatasetLinks`` names the raw dataset ``raw`` and the fMRIPrep derivatives ``fmriprep``, the
    dataset names of the BIDS URIs (``bids:fmriprep:sub-01/func/...``) in the sidecars' ``Sources``.
    """
    from bids_ketamine_fc import __version__
    from bids_ketamine_fc.utils.derivatives import (
        FMRIPREP,
        RAW,
        write_bidsignore,
        write_readme,
    )
    from bids_ketamine_fc.utils.io import atomic_write_text

    generated = {
        "Name": "bids_ketamine_fc",
        "Version": __version__,
        "Description": "Denoising (CONN-style), seed-to-voxel connectivity and group analysis.",
    }
    image = os.environ.get("BIDS_KETAMINE_FC_CONTAINER")
    if image:
        generated["Container"] = {"Type": "docker", "Tag": image}
    links = {RAW: settings.bids_dir.absolute().as_uri()}
    if settings.fmriprep_dir is not None:
        links[FMRIPREP] = settings.fmriprep_dir.absolute().as_uri()
    description = {
        "Name": "bids_ketamine_fc: seed-to-voxel resting-state connectivity",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": url} for url in links.values()],
        "DatasetLinks": links,
    }
    path = settings.output_dir / "dataset_description.json"
    write_readme(settings.output_dir)
    write_bidsignore(settings.output_dir)
    return atomic_write_text(path, json.dumps(description, indent=2) + "\n")
