"""Permutation inference (cluster size, mass, TFCE) against independent computations."""

from __future__ import annotations

import io
import itertools
import sys
import warnings

import numpy as np
import pytest
from scipy import linalg, ndimage, stats

from bids_ketamine_fc.group.inference.permutation import (
    cluster_p_fwe,
    permutation_test,
    permutations,
)
from bids_ketamine_fc.group.inference.sparse_clusters import neighbour_table
from bids_ketamine_fc.group.inference.tfce import tfce_map, tfce_maxima

SHAPE = (14, 16, 12)
STRUCTURE = {c: ndimage.generate_binary_structure(3, k) for c, k in ((6, 1), (18, 2), (26, 3))}


def _mask(shape=SHAPE):
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    mask[1:4, 1:4, :] = False  # not a box: clusters must stop at the mask edge
    return mask


def _to_columns(volumes, mask):
    """(n, X, Y, Z) volumes -> (n, n_voxels) float32 in mask.ravel(order='F') order."""
    flat = volumes.reshape(volumes.shape[0], -1, order="F")
    return flat[:, np.flatnonzero(mask.ravel(order="F"))].astype(np.float32)


def _to_volume(values, mask):
    flat = np.zeros(mask.size)
    flat[np.flatnonzero(mask.ravel(order="F"))] = values
    return flat.reshape(mask.shape, order="F")


def _smooth_noise(rng, n, shape=SHAPE, fwhm=4.0):
    return ndimage.gaussian_filter(rng.standard_normal((n, *shape)), (0,) + (fwhm / 2.355,) * 3)


def _groups(n_r, n_nr):
    X = np.zeros((n_r + n_nr, 2))
    X[:n_r, 0] = 1
    X[n_r:, 1] = 1
    return X


def _ols_t(Y, X, c):
    """Ordinary least squares t of contrast c (independent of the engine)."""
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    resid = Y - X @ beta
    df = X.shape[0] - np.linalg.matrix_rank(X)
    sigma2 = (resid**2).sum(0) / df
    return (c @ beta) / np.sqrt(sigma2 * (c @ np.linalg.pinv(X.T @ X) @ c))


def _max_clusters(tvol, mask, u, connectivity):
    labels, n = ndimage.label(mask & (tvol > u), STRUCTURE[connectivity])
    if n == 0:
        return 0, 0.0
    ids = np.arange(1, n + 1)
    sizes = np.bincount(labels.ravel())[1:]
    masses = ndimage.sum_labels(tvol - u, labels, ids)
    return sizes.max(), masses.max()


def _brute_tfce(vol, mask, connectivity, E=0.5, H=2.0):
    """TFCE by definition: label at each of 100 heights (dh = max / 100), sum e**E h**H dh."""
    peak = vol[mask].max()
    out = np.zeros(vol.shape)
    for h in np.linspace(0, peak, 101)[1:]:
        labels, _ = ndimage.label(mask & (vol >= h), STRUCTURE[connectivity])
        sizes = np.bincount(labels.ravel()).astype(float)
        sizes[0] = 0
        out += sizes[labels] ** E * h**H * (peak / 100)
    return out


def test_cluster_p_fwe_counts_null_at_least_observed():
    null = np.array([5, 0, 3, 5, 9, 1, 2, 2, 7, 4])
    p = cluster_p_fwe(np.array([9, 5, 4.5, 0, 10]), null)
    np.testing.assert_allclose(p, [0.1, 0.4, 0.4, 1.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        cluster_p_fwe([1.0], [])


def test_permutations_identity_first_and_seeded():
    table = permutations(7, 50, random_seed=3)
    np.testing.assert_array_equal(table[0], np.arange(7))
    np.testing.assert_array_equal(np.sort(table, axis=1), np.tile(np.arange(7), (50, 1)))
    np.testing.assert_array_equal(table, permutations(7, 50, random_seed=3))
    assert not np.array_equal(table, permutations(7, 50, random_seed=4))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_observed_t_and_clusters_match_ols_and_ndimage(connectivity):
    rng = np.random.default_rng(0)
    mask = _mask()
    X = np.column_stack([_groups(7, 6), rng.normal(40, 10, 13)])
    X[:, 2] -= X[:, 2].mean()
    Y = _to_columns(_smooth_noise(rng, 13) + 0.1, mask)
    c = np.array([1.0, -1.0, 0.0])
    res = permutation_test(
        Y, X, {"a": c}, mask, 1.0, n_permutations=1, progress=False, connectivity=connectivity
    )["a"]
    t = _ols_t(Y.astype(np.float64), X, c)
    np.testing.assert_allclose(res.t, t, rtol=1e-6, atol=1e-6)
    assert res.df == 13 - 3
    tvol = _to_volume(res.t, mask)
    labels, n = ndimage.label(mask & (tvol > 1.0), STRUCTURE[connectivity])
    assert res.cluster_sizes.size == n > 1
    assert sorted(res.cluster_sizes) == sorted(np.bincount(labels.ravel())[1:])
    masses = ndimage.sum_labels(tvol - 1.0, labels, np.arange(1, n + 1))
    np.testing.assert_allclose(np.sort(res.cluster_masses), np.sort(masses))
    peaks = [res.t[res.cluster_labels == k].max() for k in range(1, n + 1)]
    assert np.all(np.diff(peaks) <= 0)  # clusters numbered by decreasing peak
    assert res.max_size_null.tolist() == [res.cluster_sizes.max()]


@pytest.mark.parametrize("covariate", [False, True])
def test_null_maxima_match_brute_force_freedman_lane(covariate):
    """Each permutation's max size, mass and TFCE equal an explicit Freedman-Lane refit."""
    rng = np.random.default_rng(1)
    mask, n, u = _mask(), 12, 1.2
    X = _groups(6, 6)
    c = np.array([1.0, -1.0])
    if covariate:
        X = np.column_stack([X, rng.normal(size=n) + X[:, 0]])
        c = np.array([1.0, -1.0, 0.0])
    volumes = _smooth_noise(rng, n)
    if covariate:
        volumes += 0.8 * X[:, 2, None, None, None]
    Y = _to_columns(volumes, mask)
    res = permutation_test(
        Y, X, {"pos": c, "neg": -c}, mask, u, 8, random_seed=5, tfce=True, progress=False
    )
    nuisance = X @ linalg.null_space(c[None, :])
    hat = nuisance @ np.linalg.pinv(nuisance)
    Y64 = Y.astype(np.float64)
    for k, order in enumerate(permutations(n, 8, 5)):
        data = ((Y64 - hat @ Y64)[np.argsort(order)]) + hat @ Y64  # residuals permuted
        t = _to_volume(_ols_t(data, X, c), mask)
        for name, sign in (("pos", 1.0), ("neg", -1.0)):
            size, mass = _max_clusters(sign * t, mask, u, 18)
            assert res[name].max_size_null[k] == size
            np.testing.assert_allclose(res[name].max_mass_null[k], mass, rtol=1e-4, atol=1e-4)
            tfce = _brute_tfce(sign * t, mask, 18).max()
            np.testing.assert_allclose(res[name].max_tfce_null[k], tfce, rtol=1e-4)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("dh", ["auto", 0.2])
def test_tfce_matches_definition(connectivity, dh):
    rng = np.random.default_rng(2)
    mask = _mask((9, 10, 8))
    vols = 3 * _smooth_noise(rng, 3, (9, 10, 8), fwhm=2.5)
    values = _to_columns(vols, mask).astype(np.float64)
    table = neighbour_table(mask, connectivity)
    got = tfce_map(values, table, dh=dh)
    for m in range(3):
        vol = _to_volume(values[m], mask)
        peak = vol[mask].max()
        heights = np.linspace(0, peak, 101)[1:] if dh == "auto" else np.arange(1, 100) * dh
        step = peak / 100 if dh == "auto" else dh
        expected = np.zeros(vol.shape)
        for h in heights[heights <= peak]:
            labels, _ = ndimage.label(mask & (vol >= h), STRUCTURE[connectivity])
            sizes = np.bincount(labels.ravel()).astype(float)
            sizes[0] = 0
            expected += np.sqrt(sizes[labels]) * h**2 * step
        np.testing.assert_allclose(_to_volume(got[m], mask), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(tfce_maxima(values, table, dh=dh), got.max(axis=1), rtol=1e-10)


def test_tfce_equals_nilearn_times_dh():
    from nilearn.mass_univariate._utils import calculate_tfce

    rng = np.random.default_rng(3)
    mask = _mask()
    vol = 4 * _smooth_noise(rng, 1)[0] * mask
    values = vol.ravel(order="F")[np.flatnonzero(mask.ravel(order="F"))]
    ours = tfce_map(values, neighbour_table(mask, 6))
    theirs = calculate_tfce(vol[..., None], STRUCTURE[6], two_sided_test=False)[..., 0]
    np.testing.assert_allclose(_to_volume(ours, mask) / (vol.max() / 100), theirs * mask, rtol=1e-9)


def test_agrees_with_nilearn_non_parametric_inference():
    """Cluster-size and -mass FWE p values agree with nilearn within Monte Carlo error."""
    nib = pytest.importorskip("nibabel")
    pd = pytest.importorskip("pandas")
    from nilearn.glm.second_level import non_parametric_inference

    rng = np.random.default_rng(4)
    mask, n_perm = _mask(), 1000
    vols = _smooth_noise(rng, 16, fwhm=3.5)
    vols[:8, 3:7, 4:8, 3:6] += 0.45
    vols[:8, 9:12, 10:13, 7:10] += 0.25
    Y, X = _to_columns(vols, mask), _groups(8, 8)
    p_height = 0.01
    u = stats.t.isf(p_height, 14)
    ours = permutation_test(
        Y, X, {"RgtNR": np.array([1.0, -1.0])}, mask, u, n_perm, 0, progress=False, connectivity=6
    )["RgtNR"]
    affine = np.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = non_parametric_inference(
            [nib.Nifti1Image(v.astype(np.float32), affine) for v in vols],
            design_matrix=pd.DataFrame(X, columns=["R", "NR"]),
            second_level_contrast=[1, -1],
            mask=nib.Nifti1Image(mask.astype(np.uint8), affine),
            n_perm=n_perm,
            threshold=p_height,
            random_state=1,
        )
    select = np.flatnonzero(mask.ravel(order="F"))
    np.testing.assert_allclose(theirs["t"].get_fdata().ravel(order="F")[select], ours.t, atol=1e-5)
    compared = 0
    for metric, p_ours in (("size", ours.cluster_p_fwe_size), ("mass", ours.cluster_p_fwe_mass)):
        p_theirs = 10 ** -theirs[f"logp_max_{metric}"].get_fdata().ravel(order="F")[select]
        for k, p in enumerate(p_ours, start=1):
            p_nl = p_theirs[ours.cluster_labels == k][0]
            se = np.sqrt(2 * max(p * (1 - p), 0.01 * 0.99) / n_perm)
            assert abs(p - p_nl) <= 4 * se + 2 / n_perm, (metric, k, p, p_nl)
            compared += 0.002 < p < 0.9
    assert compared >= 2  # p values away from the bounds were compared


def _null_rates(n_data, n_perm, covariate, seed):
    """Fraction of null datasets with any cluster at FWE p <= alpha (mass), alphas 0.05..0.5."""
    rng = np.random.default_rng(seed)
    shape, n = (20, 24, 20), 16
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    X, c = _groups(8, 8), np.array([1.0, -1.0])
    if covariate:  # a strong covariate effect, correlated with group, no group effect
        age = rng.normal(size=n) + X[:, 0]
        X, c = np.column_stack([X, age - age.mean()]), np.array([1.0, -1.0, 0.0])
    u = stats.t.isf(0.01, n - X.shape[1])
    p_min = {"size": [], "mass": []}
    for d in range(n_data):
        Y = _to_columns(_smooth_noise(rng, n, shape), mask)
        if covariate:
            Y += (2.0 * Y.std() * X[:, 2])[:, None].astype(np.float32)
        res = permutation_test(Y, X, {"a": c}, mask, u, n_perm, d, progress=False)["a"]
        p_min["size"].append(res.cluster_p_fwe_size.min(initial=1.0))
        p_min["mass"].append(res.cluster_p_fwe_mass.min(initial=1.0))
    return {k: np.asarray(v) for k, v in p_min.items()}


def _check_calibrated(p_min, n_data):
    for metric, p in p_min.items():
        rate = np.mean(p <= 0.05)
        print(f"{metric}: family-wise rate {rate:.3f} over {n_data} null datasets")
        assert 0.025 <= rate <= 0.075, (metric, rate)
        for alpha in (0.1, 0.2, 0.5):
            tolerance = 3.5 * np.sqrt(alpha * (1 - alpha) / n_data)
            assert abs(np.mean(p <= alpha) - alpha) <= tolerance, (metric, alpha)


def test_null_family_wise_rate():
    """No group difference: any FWE-significant cluster in about 5% of 500 datasets."""
    _check_calibrated(_null_rates(500, 200, covariate=False, seed=10), 500)


def test_freedman_lane_calibrated_with_covariate():
    """Strong covariate effect, correlated with group, no group effect: p values uniform."""
    _check_calibrated(_null_rates(300, 200, covariate=True, seed=11), 300)


@pytest.mark.slow
@pytest.mark.parametrize("covariate", [False, True])
def test_null_family_wise_rate_many(covariate):
    _check_calibrated(_null_rates(1000, 200, covariate=covariate, seed=12), 1000)


def test_planted_difference_is_found_in_its_direction_only():
    rng = np.random.default_rng(6)
    mask = _mask()
    vols = _smooth_noise(rng, 20)
    vols[:10, 5:10, 6:11, 4:8] += 1.0
    Y, X = _to_columns(vols, mask), _groups(10, 10)
    c = np.array([1.0, -1.0])
    res = permutation_test(Y, X, {"RgtNR": c, "NRgtR": -c}, mask, 3.0, 500, 1, progress=False)
    planted_vol = np.zeros(SHAPE, bool)
    planted_vol[5:10, 6:11, 4:8] = True
    planted = _to_columns(planted_vol[None].astype(float), mask)[0] > 0
    first = res["RgtNR"].cluster_labels == 1
    assert res["RgtNR"].cluster_p_fwe_size[0] <= 0.01
    assert res["RgtNR"].cluster_p_fwe_mass[0] <= 0.01
    assert (first & planted).sum() >= 0.8 * first.sum()
    assert res["NRgtR"].cluster_p_fwe_size.min(initial=1.0) > 0.05


def test_reproducible_and_independent_of_jobs_and_grouping():
    rng = np.random.default_rng(7)
    mask = _mask()
    Y, X = _to_columns(_smooth_noise(rng, 14), mask), _groups(7, 7)
    c = np.array([1.0, -1.0])
    kwargs = dict(height_threshold=1.5, n_permutations=300, progress=False)
    a = permutation_test(Y, X, {"RgtNR": c, "NRgtR": -c}, mask, random_seed=3, **kwargs)
    b = permutation_test(Y, X, {"NRgtR": -c}, mask, random_seed=3, n_jobs=2, **kwargs)
    other = permutation_test(Y, X, {"NRgtR": -c}, mask, random_seed=4, **kwargs)
    np.testing.assert_array_equal(a["NRgtR"].max_size_null, b["NRgtR"].max_size_null)
    np.testing.assert_array_equal(a["NRgtR"].max_mass_null, b["NRgtR"].max_mass_null)
    assert not np.array_equal(a["NRgtR"].max_size_null, other["NRgtR"].max_size_null)
    with_tfce = permutation_test(Y, X, {"NRgtR": -c}, mask, random_seed=3, tfce=True, **kwargs)
    np.testing.assert_array_equal(a["NRgtR"].max_size_null, with_tfce["NRgtR"].max_size_null)
    np.testing.assert_array_equal(a["RgtNR"].t, -a["NRgtR"].t)
    assert a["RgtNR"].max_size_null.shape == (300,)
    assert not np.array_equal(a["RgtNR"].max_size_null[1:], a["NRgtR"].max_size_null[1:])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_with_the_time_left_on_a_terminal_only(capsys, monkeypatch):
    rng = np.random.default_rng(8)
    mask = _mask()
    Y, X = _to_columns(_smooth_noise(rng, 10), mask), _groups(5, 5)
    terminal = _Terminal()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        permutation_test(Y, X, {"a": np.array([1.0, -1.0])}, mask, 2.0, 20, 0, label="seed X")
    shown = terminal.getvalue()
    assert "seed X" in shown and "/19 [00:00<" in shown  # [elapsed<time left, rate]
    permutation_test(Y, X, {"a": np.array([1.0, -1.0])}, mask, 2.0, 20, 0)
    assert capsys.readouterr().err == ""  # not a terminal: no bar in logs or pipes


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mask=np.ones((2, 2, 2), bool)), "mask must be 3D"),
        (dict(X=np.ones((10, 2))), "rank deficient"),
        (dict(contrasts={"a": np.array([1.0])}), "non-zero vector"),
        (dict(height_threshold=-1.0), "positive t"),
        (dict(connectivity=8), "connectivity"),
        (dict(n_permutations=0), "at least 1"),
    ],
)
def test_bad_arguments_are_rejected(change, message):
    rng = np.random.default_rng(9)
    mask = _mask()
    args = dict(
        Y=_to_columns(_smooth_noise(rng, 10), mask),
        X=_groups(5, 5),
        contrasts={"a": np.array([1.0, -1.0])},
        mask=mask,
        height_threshold=2.0,
        n_permutations=10,
        progress=False,
    )
    args.update(change)
    with pytest.raises(ValueError, match=message):
        permutation_test(**args)


@pytest.mark.parametrize(("covariate", "expected"), [(False, 20), (True, 720)])
def test_few_relabellings_are_each_used_once(covariate, expected):
    """3 + 3 subjects: every split once (20), or every order of the rows with a covariate (720)."""
    rng = np.random.default_rng(7)
    mask, u = _mask(), 1.5
    X = _groups(3, 3)
    c = np.array([1.0, -1.0])
    if covariate:
        X = np.column_stack([X, rng.normal(size=6)])
        c = np.array([1.0, -1.0, 0.0])
    Y = _to_columns(_smooth_noise(rng, 6), mask)
    res = permutation_test(Y, X, {"pos": c}, mask, u, 5000, random_seed=1, progress=False)["pos"]
    assert res.exhaustive and res.n_permutations == expected
    observed = _max_clusters(_to_volume(_ols_t(Y, X, c), mask), mask, u, 18)[0]
    assert res.max_size_null[0] == observed
    if not covariate:  # brute force: the 20 splits into two groups of three
        brute = []
        for chosen in itertools.combinations(range(6), 3):
            split = np.zeros((6, 2))
            split[list(chosen), 0] = 1
            split[:, 1] = 1 - split[:, 0]
            t = _to_volume(_ols_t(Y.astype(np.float64), split, c), mask)
            brute.append(_max_clusters(t, mask, u, 18)[0])
        assert sorted(res.max_size_null) == sorted(brute)
    assert np.all(res.cluster_p_fwe_size >= 1 / expected)  # the smallest attainable p
