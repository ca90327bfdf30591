import numpy as np
import pytest
from nilearn import signal

from bids_ketamine_fc.participant.denoising import (
    build_operator,
    butterworth_matrix,
    fft_bandpass_matrix,
    filter_matrix,
    gaussian_sigma_vox,
    lowpass_note,
    smooth_rows_in_mask,
)

TR = 2.0


def conn_filter(y, tr, low, high):
    """Independent re-statement of CONN's conn_filter on one series (mirror, FFT, zero, IFFT)."""
    n = y.size
    ext = np.concatenate([y, y[::-1]])
    spec = np.fft.fft(ext)
    f = np.arange(ext.size)
    f = np.minimum(f, ext.size - f)
    spec[(f < low * (tr * ext.size)) | (f >= high * (tr * ext.size))] = 0
    return np.fft.ifft(spec).real[:n]


def test_fft_bandpass_frequency_response():
    n = 200
    t = np.arange(n) * TR
    F = fft_bandpass_matrix(n, TR, 0.008, 0.09)
    # Cosines of the DCT basis inside the band pass unchanged, outside are removed.
    for freq, expected in [(0.03, 1.0), (0.05, 1.0), (0.002, 0.0), (0.15, 0.0), (0.2, 0.0)]:
        k = round(freq * 2 * n * TR)
        y = np.cos(np.pi * k * (np.arange(n) + 0.5) / n)
        gain = np.linalg.norm(F @ y) / np.linalg.norm(y)
        assert gain == pytest.approx(expected, abs=1e-9), freq
    assert np.allclose(F, F.T) and np.allclose(F @ F, F)
    y = np.random.default_rng(0).standard_normal(n) + 0.01 * t
    assert np.allclose(F @ y, conn_filter(y, TR, 0.008, 0.09))


# Number of cosines conn_filter keeps for the band 0.008-0.09 Hz: the trace of
# conn_filter(rt, [0.008 0.09], eye(T)) computed by CONN 20.a's conn_filter.m (github alfnie/conn,
# commit 1f26d3e) under GNU Octave 7.3. At T = 450, TR = 3 s the low-pass edge falls exactly on bin
# 243 (0.09 * (3 * 900) = 243.0), which CONN removes; at TR = 7 s the low-pass edge is above the
# Nyquist frequency and removes nothing.
CONN_KEPT_COSINES = {
    (450, 3.0): 221, (150, 2.5): 62, (151, 3.0): 74, (300, 2.0): 98, (200, 0.8): 26,
    (240, 1.5): 59, (100, 7.0): 88,
}  # fmt: skip


@pytest.mark.parametrize(("n", "tr"), sorted(CONN_KEPT_COSINES))
def test_fft_bandpass_edges_as_conn_filter(n, tr):
    band = fft_bandpass_matrix(n, tr, 0.008, 0.09)
    assert round(np.trace(band)) == CONN_KEPT_COSINES[(n, tr)]
    y = np.random.default_rng(n).standard_normal(n)
    assert np.allclose(band @ y, conn_filter(y, tr, 0.008, 0.09), atol=1e-12)


@pytest.mark.parametrize("kind", ["fft", "butterworth"])
def test_low_pass_above_nyquist_is_no_low_pass(kind):
    """TR 7 s: 0.09 Hz is above Nyquist (0.071 Hz); CONN keeps every bin, so only the high-pass acts."""
    order = {"order": 2} if kind == "butterworth" else {}
    band = filter_matrix(100, 7.0, {"type": kind, "low": 0.008, "high": 0.09, **order})
    high_pass = filter_matrix(100, 7.0, {"type": kind, "low": 0.008, "high": None, **order})
    assert np.array_equal(band, high_pass)
    assert lowpass_note(0.09, 7.0).startswith("low-pass cut-off 0.09 Hz is at or above")
    assert lowpass_note(0.09, 2.0) is None and lowpass_note(None, 7.0) is None


def test_butterworth_matrix_matches_nilearn():
    y = np.random.default_rng(1).standard_normal((120, 3))
    B = butterworth_matrix(120, TR, 0.01, 0.08, order=2)
    expected = signal.butterworth(y, 1 / TR, low_pass=0.08, high_pass=0.01, order=2, copy=True)
    assert np.allclose(B @ y, expected, atol=1e-10)


def test_planted_confound_removed_exactly():
    rng = np.random.default_rng(2)
    n = 150
    confounds = rng.standard_normal((n, 4))
    truth = rng.standard_normal(n)
    y = truth + confounds @ np.array([3.0, -2.0, 1.0, 5.0]) + 10.0
    op = build_operator(confounds, np.zeros(n, bool), TR, 1, None)
    cleaned = op.basis @ (y @ op.coef)
    design = np.column_stack([np.ones(n), np.linspace(-1, 1, n), confounds])
    expected = truth - design @ np.linalg.lstsq(design, truth, rcond=None)[0]
    assert np.allclose(cleaned, expected, atol=1e-5)
    assert op.dof == n - 6


def test_regbp_operator_equals_explicit_regression_then_conn_filter():
    rng = np.random.default_rng(3)
    n = 100
    confounds = rng.standard_normal((n, 3))
    outliers = np.zeros(n, bool)
    outliers[[10, 40]] = True
    y = rng.standard_normal(n)
    op = build_operator(confounds, outliers, TR, 1, {"type": "fft", "low": 0.008, "high": 0.09})
    spikes = np.eye(n)[:, [10, 40]]
    design = np.column_stack([np.ones(n), np.linspace(-1, 1, n), confounds, spikes])
    resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    expected = conn_filter(resid, TR, 0.008, 0.09)
    expected -= expected.mean()
    assert np.allclose(op.basis @ (y @ op.coef), expected, atol=1e-5)


# Our operator regresses un-standardised confounds on purpose; nilearn warns about that choice.
@pytest.mark.filterwarnings("ignore:When confounds are provided")
def test_simult_correlations_equal_nilearn_clean():
    rng = np.random.default_rng(4)
    n = 120
    confounds = rng.standard_normal((n, 5))
    data = rng.standard_normal((n, 6)) + confounds @ rng.standard_normal((5, 6))
    filt = {"type": "butterworth", "low": 0.01, "high": 0.08, "order": 2}
    # detrend order 0: the (band-passed) constant vanishes, as in nilearn's filtered confounds
    op = build_operator(confounds, np.zeros(n, bool), TR, 0, filt, filter_order="simult")
    coef = data.T @ op.coef.astype(float)
    ours = np.corrcoef(coef @ op.basis.T)
    cleaned = signal.clean(
        data,
        confounds=confounds,
        detrend=False,
        standardize=None,
        standardize_confounds=False,
        filter="butterworth",
        low_pass=0.08,
        high_pass=0.01,
        t_r=TR,
        butterworth__order=2,
    )
    assert np.allclose(ours, np.corrcoef(cleaned.T), atol=1e-5)
    # inner products of coefficients are those of the cleaned series
    assert np.allclose(coef @ coef.T, (coef @ op.basis.T) @ (coef @ op.basis.T).T)


def test_censoring_drops_outlier_volumes():
    n = 80
    outliers = np.zeros(n, bool)
    outliers[[5, 6, 7]] = True
    op = build_operator(np.zeros((n, 0)), outliers, TR, 1, None, censor=True)
    assert op.basis.shape[0] == n - 3


def _normalised_convolution(volume, mask, sigma):
    """Smoothing inside a mask written out with scipy: G * (v m) / G * m, zero outside."""
    from scipy import ndimage

    weight = ndimage.gaussian_filter(mask.astype(float), sigma, mode="constant")
    smoothed = ndimage.gaussian_filter(np.where(mask, volume, 0.0), sigma, mode="constant")
    return np.where(mask, smoothed / np.where(mask, weight, 1.0), 0.0)


def test_smooth_rows_in_mask_preserves_constant_and_ignores_outside():
    mask = np.zeros((12, 14, 10), bool)
    mask[2:10, 3:12, 2:8] = True
    values = np.full((1, int(mask.sum())), 3.0, np.float32)
    out = smooth_rows_in_mask(values, mask, np.array([1.5, 1.5, 1.5]))
    assert out is values and np.allclose(out, 3.0, atol=1e-5)  # the edge is not diluted


@pytest.mark.parametrize(("n_threads", "batch"), [(1, 8), (2, 3), (3, 21)])
def test_smooth_rows_in_mask_equals_normalised_convolution(n_threads, batch):
    rng = np.random.default_rng(5)
    mask = np.zeros((30, 34, 28), bool)
    mask[4:25, 3:30, 5:22] = True
    mask[10:14, 10:14, 10:14] = False  # a hole
    sigma = np.array([1.2, 1.5, 0.9])
    volumes = rng.standard_normal((21, *mask.shape)).astype(np.float32)
    values = volumes[:, mask]  # C order of the mask
    smooth_rows_in_mask(values, mask, sigma, n_threads, batch)
    expected = np.stack([_normalised_convolution(v, mask, sigma)[mask] for v in volumes])
    np.testing.assert_allclose(values, expected, atol=2e-6)


def test_gaussian_sigma_from_fwhm_on_las_grid():
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    sigma = gaussian_sigma_vox(8.0, affine)
    assert np.allclose(sigma, 8.0 / 2.3548200450309493 / 2.0)
