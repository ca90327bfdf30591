"""Generate a realistic synthetic study to run bids_ketamine_fc end to end.

``python -m bids_ketamine_fc.demo OUT`` (or :func:`generate_demo`) writes ``OUT/bids`` (a raw BIDS
dataset with ``participants.tsv`` and ``phenotype/pain.tsv``), ``OUT/bids/derivatives/fmriprep``
(preprocessed BOLD in MNI space, brain masks, tissue maps and confounds exactly laid out as
fMRIPrep >= 21 writes them), ``OUT/templateflow`` (a generated TemplateFlow home, see
:func:`write_templateflow_home`) and ``OUT/ground_truth.tsv``.

Signal model
------------
Anatomy (:mod:`.anatomy`, :mod:`.mni`). The MNI152 template (ICBM 2009a) with its grey- and
white-matter probability maps, shipped inside nilearn's wheel (offline); CSF is the template's
brain mask minus grey and white matter; the probabilities are sharpened to look like one
person's segmentation (fMRIPrep's ``probseg``) and averaged over each voxel (partial volumes);
a 10 mm scalp shell surrounds the brain. The generated Harvard-Oxford atlas places the deep grey
nuclei at their approximate MNI positions (accumbens (+-10, 12, -8), amygdala (+-23, -5, -18),
thalamus, caudate, putamen, pallidum, hippocampus). EPI baseline: CSF 1300, GM 900, WM 700,
scalp 200.

Neural signal (:func:`.signals.node_timeseries`). Gaussian blobs (7 mm; 4 mm subcortical) in grey
matter carry network time series band-limited to 0.01-0.08 Hz, peak 1.5 % of baseline: DMN (mPFC
(1, 55, -3), precuneus/PCC (1, -61, 38) and (+-6, -66, 44), angular, lateral temporal), salience
(ACC (0, 22, 35), anterior insulae (-44, 13, 1) and (47, 14, 0), parietal operculum), visual,
somatomotor, dorsal attention, fronto-parietal, limbic, and subcortical (accumbens, amygdala,
thalamus). Nodes of one network correlate 0.4 (DMN 0.35). The mPFC-precuneus pair is PLANTED:
their neural correlation is exactly the participant's ``planted_coupling``
= 0.70 - 0.50 x improvement + N(0, 0.08), improvement = (nrs_pre - nrs_post) / nrs_pre. Half the
participants are responders (improvement >= 0.5, so coupling about 0.2-0.45), half are not
(improvement < 0.5, coupling about 0.45-0.7): responders have the lower mPFC-precuneus
connectivity and it correlates with improvement (r about -0.9 planted; with the default 24
participants and seed 0, the default analysis finds a precuneus cluster for the mPFC seed, peak t
about 6 and random-field p(FWE) about 0.005, whose mean Fisher z correlates r = -0.72 with
improvement, and the mirror cluster in the mPFC for the PCC seed; nothing for the other seeds).
Groups exist only through ``nrs_pre``/``nrs_post`` in the phenotype; the truth is in
``ground_truth.tsv``.

Noise that only denoising removes (:func:`.signals.simulate_run`):

- physiological: 3 shared sources with 1/sqrt(f) spectra up to 0.15 Hz (so largely inside the
  0.008-0.09 Hz band), loading CSF 2.5 %, GM 1.3 %, WM 0.9 %, scalp 0.4 %, with smooth spatial
  gradients. Without denoising they make every grey-matter voxel correlate with every other
  (raw seed maps are global); aCompCor (WM and CSF components) captures them;
- slow scanner drift (linear + quadratic, about 0.6 %), removed by detrending and high-pass;
- head motion: realignment parameters from a random walk, settling, breathing pseudo-motion and
  1-5 sudden movements per run (FD up to several mm; mean FD about 0.1-0.3 mm). Motion changes
  intensity where the image has edges (brain/scalp/ventricle borders) in proportion to the
  displacement (25 % residual after realignment) and to its frame-to-frame change (spin
  history): removed by the 12 motion regressors. Volumes with large FD also drop the global
  signal by 1.5 % per mm above 0.3 mm: removed by scrubbing;
- thermal noise (SD 9, about 1 % of GM) and white pulsatile noise in CSF (3 %);
- the first 2 volumes are non-steady-state (x1.6, x1.2), flagged as fMRIPrep does.

Confounds (:mod:`.confounds`) are computed from the generated data as fMRIPrep does: tissue means
in the brain and the aCompCor masks (tissue fraction >= 0.99 in the brain mask), DVARS, Power's FD
(50 mm), aCompCor by nipype's ``compute_noise_components`` (the code fMRIPrep runs: DCT high-pass
128 s after dropping the non-steady-state volumes, variance normalisation, SVD per mask), keeping
the components that explain 50 % of the variance but at least 5 per mask.
"""

from bids_ketamine_fc.demo.generate import generate_demo
from bids_ketamine_fc.demo.templateflow_home import write_templateflow_home

__all__ = ["generate_demo", "write_templateflow_home"]
