"""Thin nipype interfaces: each loads its inputs, calls one pure function, writes the result.

May import :mod:`~bids_ketamine_fc.participant` (the science), :mod:`~bids_ketamine_fc.reports`
(the participant report), :mod:`~bids_ketamine_fc.config` and :mod:`~bids_ketamine_fc.utils`;
never the group level, the workflows or the command line.
"""
