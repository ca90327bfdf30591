"""The TemplateFlow files ``bids_ketamine_fc`` reads, and the command that downloads them.

The app never downloads at run time (:mod:`bids_ketamine_fc.templates`). Its files are fetched
beforehand, from the one list :data:`QUERIES`, by ``bids_ketamine_fc-fetch-templateflow`` (a
``pip`` install) and by the image build (``Dockerfile``), which runs this file as a script with
only the ``templateflow`` client installed: it imports nothing from the package, so that build
layer stays cached while the application code changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: The command a user runs to download the files (a console script of the package).
FETCH_COMMAND = "bids_ketamine_fc-fetch-templateflow"
_MASK = {"resolution": 2, "desc": "brain", "suffix": "mask", "extension": ".nii.gz"}
_IMAGE = {"resolution": 2, "suffix": "dseg", "extension": ".nii.gz"}
_TABLE = {"suffix": "dseg", "extension": ".tsv"}
_HOSPA, _HOCPA = {"atlas": "HOSPA"}, {"atlas": "HOCPA"}
_SCHAEFER = {"atlas": "Schaefer2018", "desc": "200Parcels7Networks"}
_IMAGES = ({**_IMAGE, **_HOSPA, "desc": "th25"}, {**_IMAGE, **_HOCPA, "desc": "th25"})
#: For each template, one query a file: the res-02 brain mask, the Harvard-Oxford subcortical
#: (HOSPA: seeds and peak labels) and cortical (HOCPA: peak labels) th25 label images, the
#: Schaefer 2018 200-parcel 7-network labels (network templates of the group ICA), and the label
#: tables TemplateFlow has for them (none for HOSPA/HOCPA in MNI152NLin2009cAsym: their values are
#: those of MNI152NLin6Asym, whose tables name them).
QUERIES = {
    "MNI152NLin2009cAsym": (_MASK, *_IMAGES, {**_IMAGE, **_SCHAEFER}, {**_TABLE, **_SCHAEFER}),
    "MNI152NLin6Asym": (
        _MASK, *_IMAGES, {**_IMAGE, **_SCHAEFER},
        {**_TABLE, **_HOSPA}, {**_TABLE, **_HOCPA}, {**_TABLE, **_SCHAEFER},
    ),
}  # fmt: skip
#: Smallest size of a real file: TemplateFlow's placeholders are empty, a failed download may
#: leave a short error page.
_MIN_BYTES = 100


def covers(template: str, entities: dict) -> bool:
    """Tell whether a query of :func:`bids_ketamine_fc.templates.get_template_file` is fetched.

    Any resolution counts (the app reads the nearest one it has).
    """
    keys = ("atlas", "desc", "suffix", "extension")
    asked = {key: entities.get(key) for key in keys}
    return any(
        asked == {key: query.get(key) for key in keys} for query in QUERIES.get(template, ())
    )


def fetch(list_only: bool = False) -> list[Path]:
    """Download the files into ``TEMPLATEFLOW_HOME`` (those present are kept) and return them.

    Parameters
    ----------
    list_only : bool
        Return the files' paths in ``TEMPLATEFLOW_HOME`` without downloading.

    Raises
    ------
    RuntimeError
        When a query does not match exactly one file, or a file is too small to be real after
        the download.
    """
    from templateflow import api

    get = api.ls if list_only else api.get
    files = []
    for template, queries in QUERIES.items():
        for query in queries:
            found = get(template, **query)
            found = found if isinstance(found, list) else [found]
            if len(found) != 1:
                raise RuntimeError(f"TemplateFlow {template} {query}: {len(found)} files, not 1")
            files.append(Path(found[0]))
    bad = [str(p) for p in files if not p.is_file() or p.stat().st_size < _MIN_BYTES]
    if bad and not list_only:
        raise RuntimeError(f"TemplateFlow files missing or empty after download: {bad}")
    return files


def main(argv: list[str] | None = None) -> int:
    """Run ``bids_ketamine_fc-fetch-templateflow``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=FETCH_COMMAND,
        description="Download into TEMPLATEFLOW_HOME (default ~/.cache/templateflow) the TemplateFlow "
        "files bids_ketamine_fc reads, and only those (needs internet access).",
    )
    parser.add_argument("--list", action="store_true", help="print the files; download nothing")
    opts = parser.parse_args(argv)
    if opts.list:
        print(*fetch(list_only=True), sep="\n")
        return 0
    try:
        files = fetch()
    except Exception as err:  # network or server failure: one line, not a traceback
        print(f"{FETCH_COMMAND}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(*files, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
