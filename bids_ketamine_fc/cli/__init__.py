"""The command line (BIDS-App): ``bids_ketamine_fc BIDS_DIR OUTPUT_DIR {participant,group}``.

- :mod:`.parser`: every option, in one place;
- :mod:`.run`: ``main()``, builds :class:`~bids_ketamine_fc.config.Settings` and runs one level;
- :mod:`.participant`: checks every run up front, then runs the nipype workflow;
- :mod:`.group`: runs the group analyses, then draws the figures and writes the report.

The top layer: it may import every other part of the package; nothing imports it.
"""
