"""Shared helpers with no science: BIDS inputs, atomic writing, stage timing, derivatives metadata.

:mod:`.bids` (runs and entities), :mod:`.probseg` (a run's tissue probability maps), :mod:`.io`
(outputs written atomically), :mod:`.timing` (stage times for the log), :mod:`.derivatives` (what
makes OUTPUT_DIR a valid BIDS-Derivatives dataset: ``.bidsignore``, README, BIDS URIs, NIfTI
headers). May import only
:mod:`~bids_ketamine_fc.exceptions` and the package version.
"""
