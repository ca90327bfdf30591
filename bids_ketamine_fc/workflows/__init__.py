"""nipype workflow factories (``init_*_wf``) of the participant level.

May import :mod:`~bids_ketamine_fc.interfaces`, :mod:`~bids_ketamine_fc.config` and
:mod:`~bids_ketamine_fc.utils`; never the group level or the reports.
"""
