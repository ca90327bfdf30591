"""The group level: plain Python over the participant outputs (no nipype).

- :mod:`.run`: the level, in order (phenotype, maps, models per seed, inference, ICA, behaviour);
- :mod:`.phenotype`: ``participants.tsv`` + ``phenotype/*.tsv``, R/NR groups, ``subjects.tsv``;
- :mod:`.maps`: finding and reading the subject-level maps; writing group statistic maps;
- :mod:`.inference`: the GLM and its cluster inferences (random field theory, permutation, TFCE);
- :mod:`.behaviour`: the brain-behaviour correlation and the leave-one-out prediction;
- :mod:`.ica`: group ICA, dual regression, network matching and R vs NR tests.

May import :mod:`~bids_ketamine_fc.config`, :mod:`~bids_ketamine_fc.exceptions`,
:mod:`~bids_ketamine_fc.templates`, :mod:`~bids_ketamine_fc.utils` and the participant level's
readers of its own files; never the reports, the nipype layers or the command line (the analysis
returns its results; :mod:`bids_ketamine_fc.cli.group` hands them to the reports).
"""
