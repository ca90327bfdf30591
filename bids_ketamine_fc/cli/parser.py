"""The command line of the BIDS-App, in one place (as fmriprep and xcp_d do it).

Building the parser has no side effects: no network, no TemplateFlow, no file system access
(``--bids-exec-spec`` reads the packaged Boutiques descriptor only when it is given).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from bids_ketamine_fc import __version__
from bids_ketamine_fc.config import DEFAULT_PREDICTION
from bids_ketamine_fc.exceptions import ExitCode

INFERENCE_CHOICES = ("rft", "permutation", "tfce")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with the exit statuses of :class:`~bids_ketamine_fc.exceptions.ExitCode`.

    A command-line mistake prints one line (not the usage block) and exits 64 (usage), or 17 for an
    unknown analysis level (BIDS-Apps 2.0); argparse's own status 2 is reserved by the shell.
    """

    def error(self, message: str):
        code = ExitCode.USAGE
        if message.startswith("argument analysis_level"):
            code = ExitCode.UNKNOWN_LEVEL
        self.exit(int(code), f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _finite_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = _finite_float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _probability(value: str) -> float:
    number = _finite_float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


class _PrintDescriptor(argparse.Action):
    """``--bids-exec-spec``: print the Boutiques descriptor (BIDS-Apps 2.0) and exit, like --version."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import resources

        descriptor = resources.files("bids_ketamine_fc").joinpath("data", "boutiques.json")
        parser._print_message(descriptor.read_text(encoding="utf-8"), sys.stdout)
        parser.exit()


def get_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``bids_ketamine_fc``.

    Returns
    -------
    argparse.ArgumentParser
        The parser; ``docs/usage.rst`` renders it with sphinx-argparse.
    """
    parser = _ArgumentParser(
        prog="bids_ketamine_fc",
        description=(
            "Seed-to-voxel resting-state functional connectivity from fMRIPrep outputs "
            "(participant level) and responder vs non-responder group analysis (group level)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "bids_dir", type=Path, help="the raw BIDS dataset (or an fMRIPrep derivatives dataset)"
    )
    parser.add_argument("output_dir", type=Path, help="where the derivatives are written")
    parser.add_argument("analysis_level", choices=["participant", "group"], help="processing stage")
    parser.add_argument("--version", action="version", version=f"bids_ketamine_fc {__version__}")
    parser.add_argument(
        "--bids-exec-spec",
        action=_PrintDescriptor,
        help="print the Boutiques descriptor of the command line (BIDS-Apps 2.0) and exit",
    )
    _add_selection(parser)
    _add_denoising(parser)
    _add_resources(parser)
    _add_group(parser)
    return parser


def _add_selection(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Selecting the data")
    g.add_argument(
        "--participant-label",
        "--participant_label",
        "--subject-label",
        dest="participant_label",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="participants to process, with or without 'sub-', or a text file of labels, one a "
        "line (default: all)",
    )
    g.add_argument(
        "--session-label",
        "--session_label",
        dest="session_label",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="sessions to process, with or without 'ses-', or a text file of labels, one a line "
        "(default: all)",
    )
    g.add_argument(
        "--task-id", "--task_id", dest="task_id", default="rest", help="task label of the runs"
    )
    g.add_argument(
        "--space",
        default="MNI152NLin2009cAsym",
        help="fMRIPrep output space (MNI152NLin2009cAsym or MNI152NLin6Asym); resolution from the files",
    )
    g.add_argument(
        "--fmriprep-dir",
        "--fmriprep_dir",
        dest="fmriprep_dir",
        type=Path,
        default=None,
        help="fMRIPrep derivatives (default: BIDS_DIR/derivatives/fmriprep, or BIDS_DIR itself if it is one)",
    )


def _add_denoising(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Denoising and seeds")
    g.add_argument(
        "--seeds",
        default="study",
        help="'study' (the nine seeds of the study) or a JSON/YAML file of seeds (spheres, "
        "TemplateFlow atlas labels or mask files)",
    )
    g.add_argument(
        "--denoise-strategy",
        "--denoise_strategy",
        dest="denoise_strategy",
        default="conn",
        help="preset (conn, conn-simult, conn-fmriprep, acompcor, 36p) or a YAML/JSON strategy file",
    )
    g.add_argument(
        "--smoothing-fwhm",
        "--smoothing_fwhm",
        dest="smoothing_fwhm",
        type=_positive_float,
        default=8.0,
        help="Gaussian smoothing FWHM in mm inside the brain mask (0 disables)",
    )
    g.add_argument(
        "--fd-threshold",
        "--fd_threshold",
        dest="fd_threshold",
        type=_positive_float,
        default=None,
        help="motion (mm) above which a volume is scrubbed: ART's composite motion for the conn "
        "presets, framewise displacement otherwise (default: the strategy's)",
    )
    g.add_argument(
        "--dummy-scans",
        "--dummy_scans",
        dest="dummy_scans",
        type=_non_negative_int,
        default=None,
        help="initial volumes to drop (default: fMRIPrep's non-steady-state outliers)",
    )
    g.add_argument(
        "--min-seed-coverage",
        dest="min_seed_coverage",
        type=_probability,
        default=0.5,
        help="refuse a seed whose fraction of voxels inside the run's brain mask is below this",
    )
    g.add_argument(
        "--min-volumes",
        dest="min_volumes",
        type=_positive_int,
        default=30,
        help="exclude a run with fewer volumes left after dropping and scrubbing",
    )
    g.add_argument(
        "--reduced-dims",
        dest="reduced_dims",
        type=_non_negative_int,
        default=50,
        help="temporal dimensions of the denoised data kept for group ICA "
        "(desc-reduced_bold; 0 writes none)",
    )


def _add_resources(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Resources and execution")
    g.add_argument(
        "-w",
        "--work-dir",
        "--work_dir",
        dest="work_dir",
        type=Path,
        default=None,
        help="working directory, resumable (default: a folder in the system's temporary "
        "folder named after OUTPUT_DIR, printed at the start)",
    )
    g.add_argument(
        "--nprocs",
        "--n-cpus",
        "--nthreads",
        dest="nprocs",
        type=_positive_int,
        default=1,
        help="number of parallel processes",
    )
    g.add_argument(
        "--omp-nthreads",
        dest="omp_nthreads",
        type=_positive_int,
        default=1,
        help="threads per process (BLAS)",
    )
    g.add_argument(
        "--mem-gb",
        "--mem_gb",
        dest="mem_gb",
        type=_positive_float,
        default=None,
        help="memory limit for the scheduler (GB)",
    )
    g.add_argument(
        "--use-plugin",
        "--nipype-plugin-file",
        dest="use_plugin",
        type=Path,
        default=None,
        metavar="FILE",
        help="nipype plugin file, as fMRIPrep's: YAML with 'plugin' (e.g. SLURM, SGE, MultiProc) "
        "and 'plugin_args'; it wins over --nprocs (default: MultiProc with --nprocs processes)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="count",
        default=0,
        help="more log output (-v, -vv)",
    )


def _add_group(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Group level")
    _add_group_design(g)
    _add_group_inference(g)
    _add_group_follow_up(g)


def _add_group_design(g) -> None:
    g.add_argument(
        "--phenotype",
        type=Path,
        default=None,
        help="phenotype TSV (default: participants.tsv joined with every TSV in BIDS_DIR/phenotype)",
    )
    g.add_argument("--pain-pre", dest="pain_pre", default="nrs_pre", help="column of pain before")
    g.add_argument("--pain-post", dest="pain_post", default="nrs_post", help="column of pain after")
    g.add_argument(
        "--pain-max",
        dest="pain_max",
        type=float,
        default=10.0,
        help="top of the pain scale (NRS 0-10): a rating below 0 or above it is an error",
    )
    g.add_argument(
        "--responder-threshold",
        dest="responder_threshold",
        type=_finite_float,
        default=0.5,
        help="responder when (pre - post) / pre >= this",
    )
    g.add_argument(
        "--covariates",
        nargs="*",
        default=["age"],
        help="covariates of the groupsAge model: numeric ones mean-centred, text ones (e.g. sex) "
        "as centred indicator columns against their first level",
    )


def _add_group_inference(g) -> None:
    g.add_argument(
        "--voxel-p",
        dest="voxel_p",
        type=_probability,
        default=0.001,
        help="cluster-forming height threshold, voxel p uncorrected",
    )
    g.add_argument(
        "--cluster-p",
        dest="cluster_p",
        type=_probability,
        default=0.05,
        help="cluster-level FWE threshold",
    )
    g.add_argument(
        "--inference",
        nargs="+",
        choices=INFERENCE_CHOICES,
        default=["rft", "permutation"],
        help="cluster inference methods",
    )
    g.add_argument(
        "--n-permutations",
        dest="n_permutations",
        type=_positive_int,
        default=5000,
        help="permutations for permutation and TFCE inference",
    )
    g.add_argument(
        "--random-seed",
        dest="random_seed",
        type=int,
        default=None,
        help="seed of the random number generator (permutations, bootstrap)",
    )


def _add_group_follow_up(g) -> None:
    g.add_argument(
        "--ica-components",
        dest="ica_components",
        type=_positive_int,
        default=20,
        help="number of group ICA components",
    )
    g.add_argument(
        "--dual-regression",
        dest="dual_regression",
        default="fsl",
        choices=["fsl", "normalised"],
        help="fsl: as FSL's dual_regression (raw data, unit-variance time courses: subject maps "
        "keep their amplitude); normalised: on variance-normalised data (shape only)",
    )
    g.add_argument(
        "--correlation-model",
        dest="correlation_model",
        default="groups",
        choices=["groups", "groupsAge"],
        help="model whose clusters feed the correlation",
    )
    g.add_argument(
        "--correlation-inference",
        dest="correlation_inference",
        default="rft",
        choices=INFERENCE_CHOICES,
        help="inference whose clusters feed the correlation",
    )
    g.add_argument(
        "--roi",
        type=Path,
        default=None,
        help="independent ROI mask for the brain-behaviour correlation (with --roi-seed)",
    )
    g.add_argument("--roi-seed", dest="roi_seed", default=None, help="seed whose map --roi reads")
    g.add_argument(
        "--prediction",
        nargs="+",
        default=[DEFAULT_PREDICTION],
        metavar="SEED:MODEL:CONTRAST",
        help="pre-specified leave-one-out tests, run whether or not the full data give a "
        "cluster; 'all' (every seed, model and contrast) or 'none'",
    )
    g.add_argument(
        "--prediction-permutations",
        dest="prediction_permutations",
        type=_positive_int,
        default=1000,
        help="permutations of the outcomes for the leave-one-out p values (every fold is re-run "
        "under each); also the size of each fold's own null with --correlation-inference "
        "permutation or tfce",
    )
