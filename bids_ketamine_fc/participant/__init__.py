"""The participant level, one run start to finish, in pure Python (no nipype).

In the order the method runs:

- :mod:`.strategy`: denoising strategies (the presets in ``data/denoise/*.yml``, or a user file);
- :mod:`.confounds`: the regressors of a run from fMRIPrep's confounds table, and the outliers;
- :mod:`.hrf`, :mod:`.art`, :mod:`.compcor`: what CONN computes itself (the ``Effect of rest`` and
  the first level's hrf weights, ART's composite motion and global signal, aCompCor from the
  tissue probability maps);
- :mod:`.regressors`: all of a run's regressors and outliers, from the above;
- :mod:`.denoising`: every temporal step (regression, band-pass, censoring) as one operator;
- :mod:`.seed_file`: seed sets (``data/seeds/*.json`` or a user's file), checked entry by entry;
- :mod:`.seeds`: the seeds' voxels on the run's grid;
- :mod:`.connectivity`: reading the run, smoothing, seed-to-voxel r and Fisher z, runs combined;
- :mod:`.run`: :func:`~.run.process_run`, all of the above for one run;
- :mod:`.outputs`: the run's files installed in OUTPUT_DIR and the subject-level maps.

May import :mod:`~bids_ketamine_fc.config`, :mod:`~bids_ketamine_fc.exceptions`,
:mod:`~bids_ketamine_fc.templates` and :mod:`~bids_ketamine_fc.utils`; never the group level,
the reports, the nipype layers (workflows, interfaces) or the command line.
"""
