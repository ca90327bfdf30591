"""Second-level models and cluster inference.

- :mod:`.glm`: the design (``groups``, ``groupsAge``), OLS fit, t/z/p/effect/g maps;
- :mod:`.rft`: random field theory as SPM12 (smoothness, resels, cluster and peak p);
- :mod:`.permutation`: Freedman-Lane permutation of the maximum cluster size, mass and TFCE,
  batched in :mod:`.freedman_lane`; :mod:`.tfce` the TFCE transform;
- :mod:`.clusters`: clusters of a thresholded map, their tables and peak labels;
  :mod:`.sparse_clusters` labels supra-threshold voxels without dense volumes.

May import :mod:`bids_ketamine_fc.group.maps` and the shared modules; never
:mod:`~bids_ketamine_fc.group.behaviour`, :mod:`~bids_ketamine_fc.group.ica` or
:mod:`~bids_ketamine_fc.group.run`, which build on it.
"""
