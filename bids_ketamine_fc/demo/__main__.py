"""Command line: ``python -m bids_ketamine_fc.demo OUT [options]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bids_ketamine_fc.exceptions import UserInputError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the demo generator."""
    parser = argparse.ArgumentParser(
        prog="python -m bids_ketamine_fc.demo",
        description="Write a synthetic BIDS dataset with fMRIPrep-style derivatives and a "
        "generated TemplateFlow home, for trying bids_ketamine_fc end to end.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT", help="folder to write")
    parser.add_argument("--n-subjects", type=int, default=24, help="participants (default 24)")
    parser.add_argument("--n-volumes", type=int, default=200, help="volumes per run (default 200)")
    parser.add_argument("--tr", type=float, default=2.0, help="repetition time, s (default 2)")
    parser.add_argument("--voxel-size", type=float, default=4.0, help="mm (default 4)")
    parser.add_argument(
        "--space",
        default="MNI152NLin2009cAsym",
        choices=["MNI152NLin2009cAsym", "MNI152NLin6Asym"],
        help="template space of the preprocessed BOLD (default MNI152NLin2009cAsym)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Generate the demo and print where it is; return the exit status."""
    args = build_parser().parse_args(argv)
    from bids_ketamine_fc.demo import generate_demo

    start = time.perf_counter()
    try:
        result = generate_demo(
            args.out_dir,
            n_subjects=args.n_subjects,
            n_volumes=args.n_volumes,
            tr=args.tr,
            voxel_size=args.voxel_size,
            space=args.space,
            seed=args.seed,
        )
    except UserInputError as err:
        print(f"bids_ketamine_fc.demo: error: {err}", file=sys.stderr)
        return int(err.exit_code)
    for key in ("bids_dir", "fmriprep_dir", "templateflow_home", "ground_truth_tsv"):
        print(f"{key}: {result[key]}")
    print(f"generated {args.n_subjects} participants in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
