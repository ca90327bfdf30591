"""Leave-one-out prediction: the fold engine, the evaluation, and truth-known generated cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score

from bids_ketamine_fc.group.behaviour import prediction, regions
from bids_ketamine_fc.group.inference import clusters, glm, rft
from bids_ketamine_fc.group.maps import unmask

SHAPE = (20, 24, 20)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
VOXEL = np.array([3.0, 3.0, 3.0])
BLOB_CENTRE = np.array([10, 8, 10])


def _mask() -> np.ndarray:
    ijk = np.indices(SHAPE).transpose(1, 2, 3, 0)
    half = np.array(SHAPE) / 2
    return (((ijk - half + 0.5) / (half - 1)) ** 2).sum(-1) <= 1


def cohort(coupling: float, seed: int, n_per_group: int = 12):
    """Generated cohort: smooth noise, plus ``coupling * (0.5 - improvement)`` in a blob.

    Positive coupling: lower connectivity with more improvement (as the study), so NR > R.
    """
    rng = np.random.default_rng(seed)
    mask = _mask()
    improvement = np.r_[rng.uniform(0.5, 0.95, n_per_group), rng.uniform(0, 0.45, n_per_group)]
    ijk = np.indices(SHAPE).transpose(1, 2, 3, 0)
    blob = np.exp(-((ijk - BLOB_CENTRE) ** 2).sum(-1) / 8.0)
    inside = mask.ravel(order="F")
    data = np.empty((improvement.size, int(inside.sum())), np.float32)
    for i, value in enumerate(improvement):
        noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.5) * 4
        volume = 0.3 + 0.1 * noise + coupling * (0.5 - value) * blob
        data[i] = volume.ravel(order="F")[inside]
    rows = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(improvement.size)],
            "group": np.where(improvement >= 0.5, "R", "NR"),
            "improvement": improvement,
            "age": rng.uniform(27, 81, improvement.size).round(),
        }
    )
    return data, mask, rows


def _loo(data, mask, rows, contrast, voxel_p=0.001, cluster_p=0.05, n_perm=1000, seed=0):
    full, n_clusters = prediction.fold_region(
        data, rows, mask, VOXEL, "groups", contrast, (), voxel_p, cluster_p
    )
    folds = prediction.loo_fold_values(
        data, rows, mask, AFFINE, "groups", contrast, (), voxel_p, cluster_p, full, n_jobs=2
    )
    result = prediction.evaluate(
        folds,
        rows["group"].to_numpy() == "R",
        rows["improvement"].to_numpy(),
        n_perm,
        np.random.default_rng(seed),
    )
    return full, n_clusters, folds, result


def test_contrast_t_matches_the_glm():
    data, _, rows = cohort(0.6, 0)
    design = glm.design_matrix(rows, "groupsAge", ("age",))
    fit = glm.fit_ols(data, design)
    for contrast in glm.CONTRASTS:
        expected = glm.contrast_maps(fit, contrast)["t"]
        np.testing.assert_allclose(prediction.contrast_t(fit, contrast), expected, rtol=1e-5)


def test_fold_region_is_the_union_of_the_run_engines_significant_clusters():
    data, mask, rows = cohort(0.6, 1)
    region, n_clusters = prediction.fold_region(
        data, rows, mask, VOXEL, "groups", "NRgtR", (), 0.001, 0.05
    )
    # the same analysis through the modules the group run uses
    design = glm.design_matrix(rows, "groups", ())
    fit = glm.fit_ols(data, design)
    smooth = rft.estimate_smoothness(fit.std_resid, mask, VOXEL, design.dof)
    u = rft.height_threshold(0.001, design.dof)
    t_map = unmask(glm.contrast_maps(fit, "NRgtR")["t"], mask)
    found = clusters.rft_clusters(t_map, mask, u, smooth)
    significant = found.significant(0.05)
    expected = np.isin(found.labels, significant)
    assert n_clusters == len(significant) >= 1
    np.testing.assert_array_equal(region, regions.region_columns(expected, mask))


def test_left_out_map_never_shapes_its_own_fold():
    data, mask, rows = cohort(0.6, 2, n_per_group=8)
    before = prediction.loo_fold_values(
        data, rows, mask, AFFINE, "groups", "NRgtR", (), 0.001, 0.05
    )
    changed = data.copy()
    changed[0] = changed[0][::-1] * 3  # participant 0's map scrambled
    after = prediction.loo_fold_values(
        changed, rows, mask, AFFINE, "groups", "NRgtR", (), 0.001, 0.05
    )
    np.testing.assert_array_equal(before.values[0, 1:], after.values[0, 1:])
    assert before.size_vox[0] == after.size_vox[0] and before.size_vox[0] > 0
    assert before.values[0, 0] != after.values[0, 0]
    assert not np.allclose(before.values[1:, 1:], after.values[1:, 1:])  # other folds use it


def test_evaluation_matches_sklearn_scipy_and_a_plain_loop():
    rng = np.random.default_rng(5)
    n = 14
    values = rng.normal(size=(n, n)) + np.linspace(-1, 1, n)
    values[3] = np.nan  # a fold without a cluster
    folds = prediction.FoldValues(values, np.ones(n, int), np.ones(n, int), np.ones(n))
    is_r = np.arange(n) % 2 == 0
    improvement = rng.uniform(0, 1, n)
    result = prediction.evaluate(folds, is_r, improvement, 1000, np.random.default_rng(0))

    scores = np.full(n, np.nan)
    for i in range(n):
        if np.isnan(values[i, i]):
            continue
        train = np.arange(n) != i
        mean_r, mean_nr = values[i, train & is_r].mean(), values[i, train & ~is_r].mean()
        direction = 1.0 if mean_r >= mean_nr else -1.0
        scores[i] = direction * (values[i, i] - (mean_r + mean_nr) / 2)
    np.testing.assert_allclose(result["scores"], scores)
    valid = np.isfinite(scores)
    assert result["n_folds_with_value"] == n - 1
    assert result["auc"] == pytest.approx(roc_auc_score(is_r[valid], scores[valid]))
    expected_r = stats.pearsonr(np.diag(values)[valid], improvement[valid]).statistic
    assert result["cv_r"] == pytest.approx(expected_r)
    assert result["accuracy"] == pytest.approx(np.mean((scores[valid] > 0) == is_r[valid]))
    assert result["n_permutations"] == 1000
    for key in ("cv_r_p", "auc_p", "accuracy_p", "balanced_accuracy_p"):
        assert 1 / 1001 <= result[key] <= 1


def test_too_few_folds_give_no_metrics():
    n = 8
    values = np.full((n, n), np.nan)
    values[:4] = 1.0
    folds = prediction.FoldValues(values, np.zeros(n, int), np.zeros(n, int), np.ones(n))
    result = prediction.evaluate(
        folds, np.arange(n) < 4, np.linspace(0, 1, n), 10, np.random.default_rng(0)
    )
    assert result["n_folds_with_value"] == 4 and result["n_permutations"] == 1000
    assert np.isnan(result["auc"]) and np.isnan(result["cv_r_p"])


def test_permutation_p_counts_ties_and_the_observed():
    null = np.array([0.1, 0.5, 0.5, 0.9])
    assert prediction.permutation_p(null, 0.5) == pytest.approx(4 / 5)
    assert prediction.permutation_p(-null, -0.5, two_sided=True) == pytest.approx(4 / 5)
    assert prediction.permutation_p(null, 1.0) == pytest.approx(1 / 5)
    assert np.isnan(prediction.permutation_p(null, np.nan))


@pytest.mark.parametrize(("coupling", "contrast", "sign"), [(0.6, "NRgtR", -1), (-0.6, "RgtNR", 1)])
def test_planted_coupling_is_recovered_with_its_sign(coupling, contrast, sign):
    data, mask, rows = cohort(coupling, 3)
    full, n_clusters, folds, result = _loo(data, mask, rows, contrast)
    assert n_clusters >= 1
    ijk = np.argwhere(unmask(full.astype(np.float32), mask, 0) > 0)
    assert np.linalg.norm(ijk.mean(0) - BLOB_CENTRE) < 2
    assert (folds.n_clusters > 0).all() and np.nanmean(folds.dice) > 0.7
    assert np.sign(result["cv_r"]) == sign and abs(result["cv_r"]) > 0.8
    assert result["auc"] > 0.9 and result["accuracy"] > 0.8
    for key in ("cv_r_p", "auc_p", "accuracy_p"):
        assert result[key] < 0.005


def test_without_coupling_the_circular_r_is_large_but_the_loo_auc_is_chance():
    circular, aucs, p_values = [], [], []
    for seed in range(12):
        data, mask, rows = cohort(0.0, 100 + seed)
        for contrast in glm.CONTRASTS:
            full, n_clusters, _, result = _loo(data, mask, rows, contrast, 0.01, 0.9, 1000, seed)
            if n_clusters == 0 or np.isnan(result["auc"]):
                continue
            values = regions.region_means(data, full)
            circular.append(abs(stats.pearsonr(values, rows["improvement"]).statistic))
            aucs.append(result["auc"])
            p_values.append(result["auc_p"])
    assert len(aucs) >= 8
    assert np.median(circular) > 0.45  # selected by R vs NR: strongly "correlated"
    assert abs(np.mean(aucs) - 0.5) < 0.12  # but not predictive out of sample
    assert np.mean(np.array(p_values) < 0.05) <= 0.25


def test_fixed_region_permutation_test_holds_its_level():
    rng = np.random.default_rng(11)
    hits = []
    for _ in range(200):
        values = rng.normal(size=20)
        folds = prediction.fixed_region_values(values)
        result = prediction.evaluate(folds, np.arange(20) < 10, rng.uniform(0, 1, 20), 1000, rng)
        hits.append([result[k] < 0.05 for k in ("auc_p", "accuracy_p", "cv_r_p")])
    rates = np.mean(hits, axis=0)
    assert (rates < 0.1).all() and (rates > 0.005).any()


def test_groups_age_folds_and_a_fold_whose_design_fails(caplog):
    data, mask, rows = cohort(0.6, 4)
    folds = prediction.loo_fold_values(
        data, rows, mask, AFFINE, "groupsAge", "NRgtR", ("age",), 0.001, 0.05, n_jobs=2
    )
    assert (folds.n_clusters > 0).all()
    rows = rows.assign(age=np.where(np.arange(len(rows)) == 0, 50.0, 40.0))
    folds = prediction.loo_fold_values(
        data, rows, mask, AFFINE, "groupsAge", "NRgtR", ("age",), 0.001, 0.05
    )
    # without sub-00 the covariate is constant: that fold is recorded without a cluster
    assert folds.n_clusters[0] == 0 and np.isnan(folds.values[0]).all()
    assert (folds.n_clusters[1:] > 0).all()
    assert "Leave-one-out fold without sub-00" in caplog.text
