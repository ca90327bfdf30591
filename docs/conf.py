"""Sphinx configuration of the bids_ketamine_fc documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (needs ``pip install '.[doc]'``).
The usage page is generated from :func:`bids_ketamine_fc.cli.parser.get_parser` by
sphinx-argparse, so the documented options are always those of the installed command.
"""

import sys
from pathlib import Path

# Document the source tree next to this folder, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_ketamine_fc import __version__  # noqa: E402

project = "bids_ketamine_fc"
author = "bids_ketamine_fc developers"
copyright = "bids_ketamine_fc developers"
version = release = __version__

extensions = ["sphinxarg.ext", "sphinx.ext.mathjax"]
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_title = f"bids_ketamine_fc {__version__}"
html_theme_options = {"description": "Seed-to-voxel resting-state connectivity as a BIDS-App"}
