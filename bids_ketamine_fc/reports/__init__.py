"""HTML reports and figures, drawn from results that the analyses wrote or returned.

- :mod:`.participant`: ``sub-<label>.html``;
- :mod:`.group`: ``group/group.html``;
- :mod:`.behaviour`: the scatter and ROC figures of the brain-behaviour step.

May import the analyses (:mod:`~bids_ketamine_fc.participant`, :mod:`~bids_ketamine_fc.group`)
for their constants and file names; the analyses never import the reports.
"""
