"""Thin nipype interfaces around :mod:`~bids_ketamine_fc.participant.run` and its outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)


class _DenoiseRunInputSpec(BaseInterfaceInputSpec):
    run = traits.Dict(
        mandatory=True, desc="bold, mask, confounds, tr, prefix, space_prefix, space, probseg"
    )
    options = traits.Dict(mandatory=True, desc="RunOptions as a dictionary")
    omp_nthreads = traits.Int(1, usedefault=True, desc="BLAS threads")


class _DenoiseRunOutputSpec(TraitedSpec):
    result = File(exists=True, desc="JSON with the run's QC, files and statistics")


class DenoiseRun(SimpleInterface):
    """Denoise one run and compute its seed-to-voxel Fisher z maps."""

    input_spec = _DenoiseRunInputSpec
    output_spec = _DenoiseRunOutputSpec

    def _run_interface(self, runtime):
        from threadpoolctl import threadpool_limits

        from bids_ketamine_fc.config import RunOptions
        from bids_ketamine_fc.participant.run import process_run
        from bids_ketamine_fc.participant.strategy import load_strategy

        options = RunOptions(**self.inputs.options)
        strategy = load_strategy(options.denoise_strategy, options.fd_threshold)
        # One BLAS thread for the small (T x T) algebra, where OpenBLAS's threads cost more than
        # they give (an SVD of 300 x 300 took 1 s with two threads on a busy machine, 30 ms with
        # one); process_run shares the large products and the smoothing among omp_nthreads.
        with threadpool_limits(1):
            result = process_run(
                self.inputs.run, strategy, options, Path(runtime.cwd), self.inputs.omp_nthreads
            )
        out = Path(runtime.cwd) / "result.json"
        out.write_text(json.dumps(result, indent=2))
        self._results["result"] = str(out)
        return runtime


class _SubjectOutputsInputSpec(BaseInterfaceInputSpec):
    results = InputMultiObject(File(exists=True), mandatory=True, desc="result.json of each run")
    prefixes = traits.List(traits.Str, mandatory=True, desc="file-name prefix of each run")
    subject = traits.Str(mandatory=True)
    task = traits.Str(mandatory=True)
    space_entities = traits.Str(mandatory=True, desc="space-S[_res-R]")
    output_dir = traits.Str(mandatory=True)
    settings_json = traits.Str("", usedefault=True)


class _SubjectOutputsOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)
    n_included = traits.Int()
    timings = traits.Dict(desc="seconds by stage: each run's, then the subject's outputs")


class SubjectOutputs(SimpleInterface):
    """Move a subject's run files into OUTPUT_DIR, write the subject-level maps and the report."""

    input_spec = _SubjectOutputsInputSpec
    output_spec = _SubjectOutputsOutputSpec

    def _run_interface(self, runtime):
        from threadpoolctl import threadpool_limits

        from bids_ketamine_fc.participant.outputs import (
            install_run_files,
            write_reduced_data,
            write_subject_maps,
        )
        from bids_ketamine_fc.reports.citation import participant_markdown, to_html
        from bids_ketamine_fc.reports.participant import write_participant_report
        from bids_ketamine_fc.utils.timing import StageClock

        clock = StageClock()
        output_dir = Path(self.inputs.output_dir)
        results = [json.loads(Path(f).read_text()) for f in self.inputs.results]
        prefixes = list(self.inputs.prefixes)
        written = []
        for result, prefix in zip(results, prefixes, strict=True):
            written += install_run_files(result, prefix, output_dir)
        clock.lap("install run files")
        maps = write_subject_maps(
            self.inputs.subject,
            self.inputs.task,
            self.inputs.space_entities,
            results,
            prefixes,
            output_dir,
        )
        clock.lap("subject maps")
        with threadpool_limits(1):  # the runs' SVD does not depend on the machine's cores
            reduced = write_reduced_data(
                self.inputs.subject,
                self.inputs.task,
                self.inputs.space_entities,
                results,
                output_dir,
            )
        clock.lap("subject reduced data")
        seeds = {Path(m).name.split("_seed-")[1].split("_")[0]: m for m in maps}
        runs = [
            {"run": p, "qc": r["qc"], "report": r.get("report")}
            for r, p in zip(results, prefixes, strict=True)
        ]
        methods = ""
        if self.inputs.settings_json:
            methods = to_html(participant_markdown(json.loads(self.inputs.settings_json)))
        report = write_participant_report(
            self.inputs.subject,
            runs,
            seeds,
            output_dir / f"sub-{self.inputs.subject}.html",
            self.inputs.settings_json,
            methods,
        )
        clock.lap("report")
        extra = [reduced] if reduced else []
        self._results["out_files"] = [*written, *maps, *extra, os.fspath(report)]
        self._results["n_included"] = sum(1 for r in results if r["stats"])
        runs = {p: r.get("timings", {}) for r, p in zip(results, prefixes, strict=True)}
        self._results["timings"] = {"runs": runs, "outputs": clock.seconds}
        return runtime
