"""Shared helpers with no science: BIDS queries, atomic file writing, stage timing.

:mod:`.bids` (runs and entities), :mod:`.io` (outputs written atomically), :mod:`.timing` (stage
times for the log). May import only :mod:`~bids_ketamine_fc.exceptions` and the package version.
"""
