import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant.bold import brain_voxel_index, read_brain_series
from bids_ketamine_fc.participant.connectivity import (
    combine_runs,
    fisher_z,
    seed_correlation,
    to_volume,
)
from bids_ketamine_fc.participant.denoising import (
    build_operator,
    fft_bandpass_matrix,
    gaussian_sigma_vox,
    polynomial_trends,
    residual_maker,
)

TR = 2.0


def _mask(shape=(9, 10, 8)):
    mask = np.zeros(shape, bool)
    mask[1:8, 2:9, 1:7] = True
    mask[1, 2, 1] = False
    return mask


def _brute_force(data4d, mask, affine, op_matrix, seed_masks, fwhm):
    """Explicit pipeline: clean every voxel's series, smooth every cleaned volume, correlate."""
    t = data4d.shape[3]
    clean = np.einsum("ts,xyzs->xyzt", op_matrix, data4d.astype(float))
    clean = np.where(mask[..., None], clean, 0.0)
    seeds = np.stack([clean[m].mean(axis=0) for m in seed_masks])
    sigma = gaussian_sigma_vox(fwhm, affine)
    weight = ndimage.gaussian_filter(mask.astype(float), sigma, mode="constant")
    smoothed = [
        ndimage.gaussian_filter(clean[..., k], sigma, mode="constant") / np.where(mask, weight, 1)
        for k in range(t)
    ]  # normalised convolution inside the mask, volume by volume
    voxels = np.stack(smoothed, axis=-1)[mask]  # (n_vox, T), C order of the mask
    r = np.array([[np.corrcoef(s, v)[0, 1] for v in voxels] for s in seeds])
    assert voxels.shape[1] == t
    return r


def test_seed_correlation_equals_explicit_pipeline():
    rng = np.random.default_rng(0)
    mask = _mask()
    affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    n = 60
    data = rng.standard_normal((*mask.shape, n)).astype(np.float32) + 100
    shared = rng.standard_normal(n)
    data[2:5, 3:6, 2:5] += 2 * shared
    confounds = rng.standard_normal((n, 3))
    outliers = np.zeros(n, bool)
    outliers[[7, 30]] = True
    filt = {"type": "fft", "low": 0.008, "high": 0.09}
    op = build_operator(confounds, outliers, TR, 1, filt)
    op_matrix = op.basis @ op.coef.T.astype(float)
    seed_masks = [np.zeros(mask.shape, bool) for _ in range(2)]
    seed_masks[0][2:4, 3:5, 2:4] = True
    seed_masks[1][5:7, 6:8, 4:6] = True
    flat_f = data.reshape(-1, n, order="F")[brain_voxel_index(mask)].T
    index = [np.searchsorted(brain_voxel_index(mask), brain_voxel_index(m)) for m in seed_masks]
    corr = seed_correlation(flat_f, mask, affine, op, index, fwhm_mm=6.0)
    expected = _brute_force(data, mask, affine, op_matrix, seed_masks, 6.0)
    ours = np.stack([to_volume(row, mask)[mask] for row in corr.r()])
    assert np.allclose(ours, expected, atol=2e-5)
    assert ours[0][seed_masks[0][mask]].mean() > 0.5


def test_float32_precision_at_signal_level_10000():
    """Raw values of 10 000 with fluctuations of 5 stay exact to ~1e-6 in z (float32 data)."""
    rng = np.random.default_rng(7)
    n, v = 300, 400
    confounds = rng.standard_normal((n, 8))
    shared = rng.standard_normal(n)
    data = 10000 + 5 * rng.standard_normal((n, v)) + 5 * np.outer(shared, rng.uniform(0, 1, v))
    data = data.astype(np.float32)
    filt = {"type": "fft", "low": 0.008, "high": 0.09}
    op = build_operator(confounds, np.zeros(n, bool), TR, 1, filt)
    design = np.column_stack([polynomial_trends(n, 1), confounds])
    clean = fft_bandpass_matrix(n, TR, 0.008, 0.09) @ residual_maker(design) @ data.astype(float)
    seed = clean[:, :5].mean(axis=1)
    expected = np.arctanh([np.corrcoef(seed, column)[0, 1] for column in clean.T])
    mask = np.ones((20, 20, 1), bool)
    corr = seed_correlation(data.copy(), mask, np.eye(4), op, [np.arange(5)], fwhm_mm=0.0)
    # Without removing each voxel's mean first the error was 5.5e-5 here.
    assert np.abs(fisher_z(corr.r()[0]) - expected).max() < 1e-6


def test_fisher_z_known_values():
    r = np.array([0.0, 0.5, -0.76, 1.0])
    z = fisher_z(r)
    assert z[:3] == pytest.approx([0.0, 0.5493061443, -0.9962150823], abs=1e-6)
    assert np.isfinite(z[3])


def test_combine_runs_is_concatenation():
    rng = np.random.default_rng(1)
    mask = _mask((6, 6, 5))
    affine = np.eye(4) * 3
    affine[3, 3] = 1
    seed = np.zeros(mask.shape, bool)
    seed[2:4, 2:4, 2:4] = True
    idx = [np.searchsorted(brain_voxel_index(mask), brain_voxel_index(seed))]
    runs, cleaned = [], []
    for n in (50, 70):
        data = rng.standard_normal((n, int(mask.sum()))).astype(np.float32)
        op = build_operator(np.zeros((n, 0)), np.zeros(n, bool), TR, 1, None)
        cleaned.append(op.basis @ (op.coef.T @ data))
        runs.append(seed_correlation(data, mask, affine, op, idx, fwhm_mm=0.0))  # uses data up
    series = np.concatenate(cleaned)
    seed_ts = series[:, idx[0]].mean(axis=1)
    expected = [np.dot(seed_ts, v) / np.linalg.norm(seed_ts) / np.linalg.norm(v) for v in series.T]
    assert np.allclose(combine_runs(runs).r()[0], expected, atol=1e-5)


def test_weighted_scaled_runs_equal_conns_weighted_correlation():
    """CONN's first level: runs in percent signal change, concatenated, then hrf-weighted r."""
    rng = np.random.default_rng(3)
    mask = _mask((6, 6, 5))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    seed = np.zeros(mask.shape, bool)
    seed[2:4, 2:4, 2:4] = True
    idx = [np.searchsorted(brain_voxel_index(mask), brain_voxel_index(seed))]
    runs, voxels, seeds, weights = [], [], [], []
    for n, level in ((50, 1000.0), (70, 1300.0)):
        data = level + rng.standard_normal((n, int(mask.sum()))) * 10
        weight = np.r_[np.linspace(0.05, 1.1, 8), np.ones(n - 8)]
        op = build_operator(rng.standard_normal((n, 2)), np.zeros(n, bool), TR, 1, None,
                            weights=weight)  # fmt: skip
        corr = seed_correlation(data.astype(np.float32), mask, affine, op, idx, 0.0, scaling="psc")
        runs.append(corr)
        clean = (op.basis @ op.coef.T.astype(float)) @ data / weight[:, None]
        voxels.append(clean * 100 / data.mean())
        seeds.append(clean[:, idx[0]].mean(axis=1) * 100 / data[:, idx[0]].mean())
        weights.append(weight)
    w, x, s = np.concatenate(weights), np.concatenate(voxels), np.concatenate(seeds)
    x = (x - w @ x / w.sum()) * w[:, None]  # conn_wdemean, then times the weights
    s = (s - w @ s / w.sum()) * w
    expected = s @ x / np.linalg.norm(s) / np.linalg.norm(x, axis=0)
    assert np.allclose(combine_runs(runs).r()[0], expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_read_brain_series_equals_nibabel(tmp_path, dtype):
    rng = np.random.default_rng(2)
    mask = _mask()
    data = (rng.standard_normal((*mask.shape, 20)) * 100 + 1000).astype(dtype)
    img = nb.Nifti1Image(data, np.eye(4))
    if dtype is np.int16:
        img.header.set_slope_inter(0.5, 10.0)
    nb.save(img, tmp_path / "bold.nii.gz")
    expected = nb.load(tmp_path / "bold.nii.gz").get_fdata()
    series = read_brain_series(tmp_path / "bold.nii.gz", mask, n_dummy=3)
    ref = expected.reshape(-1, 20, order="F")[brain_voxel_index(mask)].T[3:]
    assert np.allclose(series.data, ref, rtol=1e-6)
    assert np.allclose(series.global_signal, ref.mean(axis=1), rtol=1e-6)


def test_read_brain_series_refuses_nan(tmp_path):
    mask = _mask()
    data = np.ones((*mask.shape, 5), np.float32)
    data[4, 5, 3, 2] = np.nan
    nb.save(nb.Nifti1Image(data, np.eye(4)), tmp_path / "bold.nii.gz")
    with pytest.raises(UserInputError, match="NaN"):
        read_brain_series(tmp_path / "bold.nii.gz", mask)


def test_reduce_dimensions_keeps_leading_temporal_components():
    from bids_ketamine_fc.participant.connectivity import reduce_dimensions

    rng = np.random.default_rng(5)
    coef = (rng.standard_normal((30, 8)) @ rng.standard_normal((8, 200))).astype(np.float32)
    coef += 0.01 * rng.standard_normal(coef.shape).astype(np.float32)
    assert np.array_equal(reduce_dimensions(coef, 40), coef)
    reduced = reduce_dimensions(coef, 8)
    u, s, vt = np.linalg.svd(coef.astype(float), full_matrices=False)
    expected = (vt[:8].T * s[:8] ** 2) @ vt[:8]  # voxel-by-voxel inner products, rank 8
    assert reduced.shape == (8, 200)
    assert np.allclose(reduced.T.astype(float) @ reduced, expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_read_brain_series_in_small_chunks(tmp_path, monkeypatch, suffix):
    import bids_ketamine_fc.participant.bold as bold

    rng = np.random.default_rng(4)
    mask = _mask()
    data = (rng.standard_normal((*mask.shape, 23)) * 50 + 800).astype(np.float32)
    nb.save(nb.Nifti1Image(data, np.eye(4)), tmp_path / f"bold{suffix}")
    # three volumes a chunk, and dummies that end inside a chunk: every boundary is crossed
    monkeypatch.setattr(bold, "_CHUNK_BYTES", 3 * mask.size * 4)
    series = read_brain_series(tmp_path / f"bold{suffix}", mask, n_dummy=4)
    ref = data.reshape(-1, 23, order="F")[brain_voxel_index(mask)].T[4:]
    assert np.array_equal(series.data, ref)
    assert np.array_equal(series.global_signal, ref.mean(axis=1, dtype=np.float64))
    ref64 = ref.astype(np.float64)  # tSNR from moments taken chunk by chunk
    np.testing.assert_allclose(series.tsnr, ref64.mean(axis=0) / ref64.std(axis=0), rtol=1e-6)
    data[5, 5, 3, 17] = np.inf  # in a late chunk
    data[6, 5, 3, 17] = -np.inf
    nb.save(nb.Nifti1Image(data, np.eye(4)), tmp_path / f"bad{suffix}")
    with pytest.raises(UserInputError, match="2 voxels inside the brain mask hold NaN or infinite"):
        read_brain_series(tmp_path / f"bad{suffix}", mask, n_dummy=4)


def test_smoothing_does_not_depend_on_the_number_of_threads():
    from bids_ketamine_fc.participant.connectivity import _smooth_coefficients

    rng = np.random.default_rng(6)
    mask = _mask()
    coef = rng.standard_normal((7, int(mask.sum()))).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    one = _smooth_coefficients(coef.copy(), mask, affine, 6.0, n_threads=1)
    three = _smooth_coefficients(coef.copy(), mask, affine, 6.0, n_threads=3)
    many = _smooth_coefficients(coef.copy(), mask, affine, 6.0, n_threads=16)  # > volumes
    assert np.array_equal(one, three) and np.array_equal(one, many)
    assert not np.allclose(one, coef)


def test_centred_coefficients_give_weighted_covariances():
    from bids_ketamine_fc.participant.weighting import centred_coefficients

    rng = np.random.default_rng(8)
    mask = _mask((6, 6, 5))
    n = 60
    data = (100 + rng.standard_normal((n, int(mask.sum())))).astype(np.float32)
    weight = np.r_[np.linspace(0.05, 1.1, 8), np.ones(n - 8)]
    op = build_operator(rng.standard_normal((n, 2)), np.zeros(n, bool), TR, 1,
                        {"type": "fft", "low": 0.01, "high": 0.1}, weights=weight)  # fmt: skip
    clean = (op.basis @ op.coef.T.astype(float)) @ (data - data.mean(axis=0)) / weight[:, None]
    corr = seed_correlation(data.copy(), mask, np.eye(4), op, [np.arange(3)], 0.0)
    coef = centred_coefficients(corr, op).astype(float)
    centred = (clean - weight @ clean / weight.sum()) * weight[:, None]
    assert np.allclose(coef.T @ coef, centred.T @ centred, rtol=1e-4, atol=1e-4)


def test_gzip_reader_decompresses_a_chunk_ahead(tmp_path):
    """ISA-L's reader runs a chunk of volumes ahead (fails if isal's reader class changes)."""
    import bids_ketamine_fc.participant.bold as bold

    pytest.importorskip("isal")
    data = np.arange(4000, dtype=np.float32).reshape(10, 10, 10, 4)
    nb.save(nb.Nifti1Image(data, np.eye(4)), tmp_path / "bold.nii.gz")
    with bold._open_image(tmp_path / "bold.nii.gz") as reader:
        assert reader.raw.queue.maxsize == bold._CHUNK_BYTES // bold._BLOCK_BYTES
        reader.read(352)  # the header
        assert np.frombuffer(reader.read(), np.float32).tolist() == data.ravel("F").tolist()
