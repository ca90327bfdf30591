"""Group ICA of the participants' reduced denoised data.

- :mod:`.run`: the step in order, and its files under ``group/ica/``;
- :mod:`.data`: the ``desc-reduced_bold`` files and the analysis mask;
- :mod:`.decompose`: subject PCA, MIGP, spatial FastICA and dual regression;
- :mod:`.match`: components matched to the Yeo-7 networks (Schaefer atlas);
- :mod:`.compare`: R vs NR models of the selected (DMN) components' subject maps.

May import :mod:`bids_ketamine_fc.group.inference`, :mod:`bids_ketamine_fc.group.maps` and the
shared modules; never the reports.
"""
