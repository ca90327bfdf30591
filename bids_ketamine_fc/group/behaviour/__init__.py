"""Brain-behaviour: connectivity in a region against pain improvement.

- :mod:`.run`: which regions (significant clusters, ``--roi``), which pre-specified tests
  (``--prediction``) and the step in order;
- :mod:`.regions`: a region's voxels and each participant's mean Fisher z in it;
- :mod:`.correlation`: Pearson, Spearman, bootstrap, partial and within-group r (r only for a
  circular region);
- :mod:`.prediction`: the pre-specified leave-one-out test, every fold re-run under each
  permutation of the outcomes; :mod:`.folds` (fold t maps by downdating the full fit, batched
  cluster labelling), :mod:`.fold_rules` (the fold inference) and :mod:`.metrics` (scores,
  AUC, accuracies, cross-validated r, permutation p);
- :mod:`.tables`: ``correlation.tsv``, ``cluster_values.tsv``, ``prediction.tsv``,
  ``prediction_folds.tsv`` and their sidecars.

May import :mod:`bids_ketamine_fc.group.inference`, :mod:`bids_ketamine_fc.group.maps` and the
shared modules; never the reports.
"""
