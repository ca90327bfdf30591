"""Workflow factories of the participant level."""

from __future__ import annotations

from collections import defaultdict

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_ketamine_fc.config import RunOptions, Settings
from bids_ketamine_fc.interfaces.connectivity import DenoiseRun, SubjectOutputs
from bids_ketamine_fc.utils.bids import RunInputs, build_prefix
from bids_ketamine_fc.utils.derivatives import FMRIPREP, bids_uri


def init_bids_ketamine_fc_wf(
    settings: Settings, runs: list[RunInputs], name: str = "bids_ketamine_fc_wf"
):
    """Build the participant-level workflow: one sub-workflow per subject, run in parallel.

    Parameters
    ----------
    settings : Settings
    runs : list of RunInputs
        Every run to process (from :func:`~bids_ketamine_fc.utils.bids.collect_runs`).
    name : str

    Returns
    -------
    nipype Workflow
    """
    workflow = pe.Workflow(name=name)
    workflow.base_dir = str(settings.work_dir)
    by_subject = defaultdict(list)
    for run in runs:
        by_subject[run.subject].append(run)
    for subject, subject_runs in sorted(by_subject.items()):
        workflow.add_nodes([init_single_subject_wf(settings, subject, subject_runs)])
    return workflow


def init_single_subject_wf(
    settings: Settings, subject: str, runs: list[RunInputs], name: str | None = None
):
    """Build one subject's workflow: a ``DenoiseRun`` node per run, then the subject's outputs.

    Inputs come from the ``runs`` (no inputnode connections are needed); the ``outputnode`` gives
    ``out_files`` (every file written to OUTPUT_DIR) and ``n_included`` (runs kept).

    Parameters
    ----------
    settings : Settings
    subject : str
    runs : list of RunInputs
        The subject's runs.
    name : str, optional
        Defaults to ``single_subject_<label>_wf``.
    """
    workflow = pe.Workflow(name=name or f"single_subject_{subject}_wf")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["out_files", "n_included"]), name="outputnode"
    )
    merge = pe.Node(niu.Merge(len(runs)), name="merge_results", run_without_submitting=True)
    options = RunOptions.from_settings(settings).to_dict()
    for index, run in enumerate(runs, start=1):
        denoise = pe.Node(
            DenoiseRun(
                run=_run_dict(run, settings.fmriprep_dir),
                options=options,
                omp_nthreads=settings.omp_nthreads,
            ),
            name=f"denoise_{_node_label(run)}",
            n_procs=settings.omp_nthreads,
            mem_gb=_mem_gb(run),
        )
        workflow.connect(denoise, "result", merge, f"in{index}")
    space = build_prefix(subject, runs[0].entities, ("space", "res")).split("_", 1)[1]
    ds_subject = pe.Node(
        SubjectOutputs(
            prefixes=[run.prefix for run in runs],
            subject=subject,
            task=settings.task_id,
            space_entities=space,
            output_dir=str(settings.output_dir),
            settings_json=settings.to_json(),
        ),
        name="ds_subject",
    )
    workflow.connect([
        (merge, ds_subject, [("out", "results")]),
        (ds_subject, outputnode, [("out_files", "out_files"), ("n_included", "n_included")]),
    ])  # fmt: skip
    return workflow


def _run_dict(run: RunInputs, fmriprep_dir) -> dict:
    sources = [
        bids_uri(path, fmriprep_dir, FMRIPREP) for path in (run.bold, run.mask, run.confounds)
    ]
    return {
        "bold": str(run.bold),
        "mask": str(run.mask),
        "confounds": str(run.confounds),
        "tr": run.tr,
        "prefix": run.prefix,
        "space_prefix": run.space_prefix,
        "space": run.entities["space"],
        "seeds_file": str(run.seeds_file) if run.seeds_file else "",
        "sources": sources,
        "probseg": {label: str(path) for label, path in run.probseg.items()},
    }


def _node_label(run: RunInputs) -> str:
    return run.prefix.replace("-", "")


def _mem_gb(run: RunInputs) -> float:
    """Peak memory of one run: about the brain voxels' float32 series plus working arrays."""
    import nibabel as nb
    import numpy as np

    shape = nb.load(run.bold).shape
    return float(np.prod(shape)) * 4 * 1.5 / 2**30 + 0.3
