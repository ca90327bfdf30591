"""Shared helpers with no science: BIDS queries (:mod:`.bids`) and atomic file writing (:mod:`.io`).

May import only :mod:`~bids_ketamine_fc.exceptions` and the package version.
"""
