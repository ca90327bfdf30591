"""Scores and metrics of the leave-one-out folds, for the observed outcomes and every relabelling.

Every fold gives an outcome. For the fold that leaves out ``i`` and relabelling ``k``,
``values[k, i, j]`` is participant ``j``'s mean Fisher z in the fold's region (NaN when no cluster
survives):

- score: nearest class mean learned on the fold's training participants, ``direction *
  (values[k, i, i] - threshold)`` (threshold: midpoint of the training R and NR means;
  direction: sign of R mean minus NR mean); > 0 predicts R. A fold without region scores 0;
- centred value: ``values[k, i, i]`` minus the mean of the training participants in the same
  region (0 without region), so that values of different folds' regions are comparable;
- metrics over all folds: AUC of the scores (ties counted half), accuracy and balanced accuracy
  (a fold without region counts as half right: it predicts nothing), and the cross-validated r
  of the centred values with the improvement (0 when they do not vary).

A permutation p is ``#{k : stat_k >= stat_0} / n_orders`` over the relabellings with the
observed one (``k = 0``) included, i.e. ``(1 + #{null >= observed}) / (1 + n)``; one-sided for
AUC and accuracies, on ``|r|`` for the cross-validated r.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Tolerance when counting permuted statistics at least as extreme as the observed one.
_TIE_TOL = 1e-12
METRICS = ("cv_r", "auc", "accuracy", "balanced_accuracy")


def decision_scores(values: np.ndarray, is_r: np.ndarray) -> tuple[np.ndarray, ...]:
    """Nearest-class-mean scores of every fold for many relabellings.

    Parameters
    ----------
    values : numpy.ndarray
        ``(K, n, n)`` (or ``(1, n, n)``, shared by all relabellings) fold values.
    is_r : numpy.ndarray
        ``(K, n)`` bool labels of each relabelling.

    Returns
    -------
    scores, thresholds, directions, centred : numpy.ndarray
        ``(K, n)``; thresholds and directions NaN for a fold without region, scores and centred
        values 0 there.
    """
    n = values.shape[-1]
    has = np.isfinite(values[:, np.arange(n), np.arange(n)])
    train = ~np.eye(n, dtype=bool)
    filled = np.where(np.isfinite(values) & train, values, 0.0)
    labels = np.asarray(is_r, dtype=float)
    sum_r = (filled @ labels[:, :, None])[..., 0]  # (K, n), values broadcast over K
    count_r = labels @ train.T.astype(float)
    total = filled.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_r = sum_r / count_r
        mean_nr = (total - sum_r) / ((n - 1) - count_r)
    thresholds = (mean_r + mean_nr) / 2
    directions = np.where(mean_r >= mean_nr, 1.0, -1.0)
    left = np.diagonal(values, axis1=1, axis2=2)
    scores = np.where(has, directions * (left - thresholds), 0.0)
    centred = np.where(has, left - total / (n - 1), 0.0)
    usable = has & np.isfinite(thresholds)
    scores = np.where(usable, scores, 0.0)
    thresholds = np.where(usable, thresholds, np.nan)
    directions = np.where(usable, directions, np.nan)
    return scores, thresholds, directions, centred


def auc(scores: np.ndarray, is_r: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC (Mann-Whitney U with average ranks for ties, as scikit-learn)."""
    ranks = stats.rankdata(scores, axis=1)
    n_pos = is_r.sum(axis=1)
    n_neg = is_r.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * is_r).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def accuracies(
    scores: np.ndarray, is_r: np.ndarray, has: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and balanced accuracy per row; a fold without region counts half right."""
    right = np.where(has, (scores > 0) == is_r, 0.5)
    n_pos = is_r.sum(axis=1)
    n_neg = is_r.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (right * is_r).sum(axis=1) / n_pos
        specificity = (right * ~is_r).sum(axis=1) / n_neg
    return right.mean(axis=1), (sensitivity + specificity) / 2


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``x`` with the same row of ``y``; 0 where either is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(xc, axis=1) * np.linalg.norm(yc, axis=1)
    r = np.zeros(x.shape[0])
    np.divide((xc * yc).sum(axis=1), norm, out=r, where=norm > 1e-12 * np.abs(x).max(initial=1))
    return r


def permutation_p(statistics: np.ndarray, two_sided: bool = False) -> float:
    """Return ``#{k : s_k >= s_0} / K`` with ``s_0`` the observed statistic (``|.|``: two-sided).

    ``statistics`` holds the observed value first, then one per relabelling; with random
    relabellings this is ``(1 + #{null >= observed}) / (1 + n)`` (Phipson & Smyth 2010).
    """
    values = np.abs(statistics) if two_sided else np.asarray(statistics, dtype=float)
    if not np.isfinite(values[0]):
        return float("nan")
    return float(np.sum(values >= values[0] - _TIE_TOL) / values.size)


def evaluate(values: np.ndarray, is_r: np.ndarray, improvement: np.ndarray) -> dict:
    """Metrics of the observed fold values and their permutation p-values.

    Parameters
    ----------
    values : numpy.ndarray
        ``(K, n, n)`` fold values per relabelling, the observed outcomes first (or ``(1, n, n)``
        for a region fixed in advance, shared by every relabelling).
    is_r : numpy.ndarray
        ``(K, n)`` bool labels of each relabelling (row 0: observed).
    improvement : numpy.ndarray
        ``(K, n)`` improvement of each relabelling (permuted with the labels).

    Returns
    -------
    dict
        ``cv_r``, ``auc``, ``accuracy``, ``balanced_accuracy`` and their ``*_p``,
        ``n_folds_with_value``, ``n_permutations`` (relabellings, observed included), and the
        observed per-fold ``scores``, ``thresholds``, ``directions`` and ``centred``.
    """
    is_r = np.asarray(is_r, dtype=bool)
    scores, thresholds, directions, centred = decision_scores(values, is_r)
    n = is_r.shape[1]
    has = np.broadcast_to(
        np.isfinite(values[:, np.arange(n), np.arange(n)]), is_r.shape
    )  # fmt: skip
    found = {
        "cv_r": pearson_rows(np.broadcast_to(centred, is_r.shape), improvement),
        "auc": auc(np.broadcast_to(scores, is_r.shape), is_r),
    }
    found["accuracy"], found["balanced_accuracy"] = accuracies(
        np.broadcast_to(scores, is_r.shape), is_r, has
    )
    result = {
        "n_folds_with_value": int(has[0].sum()),
        "n_permutations": int(is_r.shape[0]),
        "scores": scores[0],
        "thresholds": thresholds[0],
        "directions": directions[0],
        "centred": centred[0],
    }
    for name in METRICS:
        result[name] = float(found[name][0])
        result[f"{name}_p"] = permutation_p(found[name], two_sided=name == "cv_r")
    return result
