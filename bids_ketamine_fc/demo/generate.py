"""Generate the whole demo: raw BIDS dataset, fMRIPrep-style derivatives, TemplateFlow home."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bids_ketamine_fc.demo.anatomy import bold_grid
from bids_ketamine_fc.demo.dataset import write_dataset_files, write_subject
from bids_ketamine_fc.demo.phenotype import make_cohort
from bids_ketamine_fc.demo.signals import Phantom, build_phantom
from bids_ketamine_fc.demo.templateflow_home import SPACES, write_templateflow_home
from bids_ketamine_fc.exceptions import UsageError
from bids_ketamine_fc.utils.io import atomic_write_tsv

MIN_VOLUMES = 40
TRUTH_COLUMNS = [
    "participant_id",
    "group",
    "improvement",
    "planted_coupling",
    "mean_fd",
    "n_motion_outliers",
    "age",
]


def _check(n_subjects: int, n_volumes: int, tr: float, voxel_size: float, space: str) -> None:
    if n_subjects < 2:
        raise UsageError(f"--n-subjects {n_subjects}: need at least 2 (one R, one NR)")
    if n_volumes < MIN_VOLUMES:
        raise UsageError(f"--n-volumes {n_volumes}: need at least {MIN_VOLUMES} volumes")
    if not 0.3 <= tr <= 6.0:
        raise UsageError(f"--tr {tr}: give a repetition time between 0.3 and 6 s")
    if not 1.5 <= voxel_size <= 8.0:
        raise UsageError(f"--voxel-size {voxel_size}: give a voxel size between 1.5 and 8 mm")
    if space not in SPACES:
        raise UsageError(f"--space {space!r}: choose one of {', '.join(SPACES)}")


def _write_chunk(bids: Path, phantom: Phantom, tasks: list, space: str, n_volumes: int, tr: float):
    """Write the participants of ``tasks`` ((index, row dict, seed sequence)) in this process."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread per process: no oversubscription of the cores
        return [
            (
                index,
                write_subject(
                    bids, row, phantom, np.random.default_rng(stream), space, n_volumes, tr
                ),
            )
            for index, row, stream in tasks
        ]


def generate_demo(
    out_dir: Path,
    n_subjects: int = 24,
    n_volumes: int = 200,
    tr: float = 2.0,
    voxel_size: float = 4.0,
    space: str = "MNI152NLin2009cAsym",
    seed: int = 0,
    n_jobs: int | None = None,
    templateflow: bool = True,
) -> dict:
    """Write a synthetic ketamine-response study: BIDS, fMRIPrep derivatives, TemplateFlow home.

    Layout under ``out_dir``: ``bids/`` (raw dataset with ``participants.tsv`` and
    ``phenotype/pain.tsv``), ``bids/derivatives/fmriprep/`` (preprocessed BOLD, brain masks,
    confounds, tissue probability maps), ``templateflow/`` (a generated TemplateFlow home for both
    MNI spaces) and ``ground_truth.tsv`` (groups and planted coupling; outside the dataset).

    Parameters
    ----------
    out_dir : Path
        Folder to write (created; existing demo files are overwritten).
    n_subjects : int
        Participants; half of them (rounded down) respond to ketamine.
    n_volumes : int
        Volumes per run, the first 2 non-steady-state.
    tr : float
        Repetition time (s).
    voxel_size : float
        Isotropic voxel size (mm) of the preprocessed BOLD grid.
    space : str
        ``MNI152NLin2009cAsym`` or ``MNI152NLin6Asym`` (FSL's LAS grid).
    seed : int
        Random seed; the same seed gives the same dataset (whatever ``n_jobs``).
    n_jobs : int or None
        Processes writing participants; None uses up to 2 (the cores of a laptop-class run).
    templateflow : bool
        Also write the TemplateFlow home (``templateflow_home`` is None when False).

    Returns
    -------
    dict
        ``bids_dir``, ``fmriprep_dir``, ``templateflow_home``, ``ground_truth_tsv`` (paths),
        ``ground_truth`` (DataFrame with ``participant_id``, ``group``, ``improvement``,
        ``planted_coupling``, ``mean_fd``, ``n_motion_outliers``, ``age``), ``space``,
        ``n_volumes``, ``tr``, ``voxel_size``.
    """
    _check(n_subjects, n_volumes, tr, voxel_size, space)
    out_dir = Path(out_dir)
    bids = out_dir / "bids"
    streams = np.random.SeedSequence(seed).spawn(n_subjects + 1)
    cohort = make_cohort(np.random.default_rng(streams[0]), n_subjects)
    write_dataset_files(bids, cohort, tr)
    phantom = build_phantom(bold_grid(space, voxel_size))
    tasks = [
        (k, row.to_dict(), stream)
        for (k, row), stream in zip(cohort.iterrows(), streams[1:], strict=True)
    ]
    n_jobs = min(n_jobs or min(2, os.cpu_count() or 1), n_subjects)
    chunks = [tasks[k::n_jobs] for k in range(n_jobs)]
    home = out_dir / "templateflow"
    write_home = write_templateflow_home if templateflow else lambda _: None
    if n_jobs == 1:
        done = _write_chunk(bids, phantom, tasks, space, n_volumes, tr)
        home = write_home(home)
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded BLAS
        with ProcessPoolExecutor(n_jobs, mp_context=context) as pool:
            futures = [
                pool.submit(_write_chunk, bids, phantom, chunk, space, n_volumes, tr)
                for chunk in chunks
            ]
            home = write_home(home)  # meanwhile, in this process
            done = [item for future in futures for item in future.result()]
    runs = pd.DataFrame([run for _, run in sorted(done, key=lambda item: item[0])])
    truth = pd.concat([cohort, runs], axis=1)[TRUTH_COLUMNS]
    truth_tsv = atomic_write_tsv(truth, out_dir / "ground_truth.tsv", float_format=None)
    return {
        "bids_dir": bids,
        "fmriprep_dir": bids / "derivatives" / "fmriprep",
        "templateflow_home": home,
        "ground_truth_tsv": truth_tsv,
        "ground_truth": truth,
        "space": space,
        "n_volumes": n_volumes,
        "tr": tr,
        "voxel_size": voxel_size,
    }
