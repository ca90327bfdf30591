"""The command line (BIDS-App): ``bids_ketamine_fc BIDS_DIR OUTPUT_DIR {participant,group}``.

- :mod:`.parser`: every option, in one place;
- :mod:`.run`: ``main()``, builds :class:`~bids_ketamine_fc.config.Settings` and runs one level;
- :mod:`.participant`: checks every run up front, then runs the nipype workflow;
- :mod:`.group`: runs the group analyses, then draws the figures and writes the report;
- :mod:`.execution`: the nipype plugin of the participant level (``--use-plugin`` or MultiProc);
- :mod:`.brainlife`, :mod:`.brainlife_outputs`: brainlife.io's ``main`` (``bids_ketamine_fc-brainlife``).

The top layer: it may import every other part of the package; nothing imports it.
"""
