"""Brain-behaviour: connectivity in a region against pain improvement.

- :mod:`.run`: which regions (significant clusters, ``--roi``) and the step in order;
- :mod:`.regions`: a region's voxels and each participant's mean Fisher z in it;
- :mod:`.correlation`: Pearson, Spearman, bootstrap, partial and within-group r;
- :mod:`.prediction`: the leave-one-out estimate (cluster re-defined without each participant);
- :mod:`.tables`: ``correlation.tsv``, ``cluster_values.tsv``, ``prediction.tsv``,
  ``prediction_folds.tsv`` and their sidecars.

May import :mod:`bids_ketamine_fc.group.inference`, :mod:`bids_ketamine_fc.group.maps` and the
shared modules; never the reports.
"""
