"""Leave-one-out responder prediction: an estimate the cluster selection does not inflate.

The full-data cluster was found by the R vs NR contrast, and R/NR comes from the same pain
improvement it is then correlated with, so its correlation is circular. Here the cluster is
re-defined without each participant in turn:

Folds
    For every participant ``i`` the group model is refitted without ``i``; clusters of the
    contrast's t map above the height threshold (t of ``--voxel-p`` at the fold's dof) are kept
    when their random-field cluster p(FWE) < ``--cluster-p``, with the smoothness re-estimated
    from the fold's residuals: the same engine and thresholds as the full analysis
    (:mod:`~bids_ketamine_fc.group.inference.rft`). The fold's cluster is the union of its surviving
    clusters. Row ``i`` of the fold-value matrix ``W`` holds every participant's mean Fisher z in
    it; ``W[i, i]`` is the left-out value. A fold where no cluster survives is recorded (row of
    NaN) and makes no prediction.
Classifier
    Nearest class mean, learned on the training participants of each fold: the threshold is the
    midpoint of their R and NR means inside the fold's cluster, the direction the sign of R mean
    minus NR mean. The decision score of ``i`` is ``direction * (W[i, i] - threshold)``; > 0
    predicts R. Scores are comparable across folds (each is centred by its own fold).
Metrics (over the folds with a value)
    cross-validated r (left-out values vs improvement, Pearson), AUC of the decision scores
    against R/NR, accuracy and balanced accuracy.
Permutation p-values: what is permuted
    The participants' outcomes (R/NR label and improvement, together) are permuted among them
    (at least 1000 times, vectorised); the fold-value matrix ``W`` is held fixed, and for every
    permutation each fold's threshold and direction are re-learned from its permuted training
    labels before the left-out scores, AUC, accuracies and r are recomputed.
    p = (1 + #{null >= observed}) / (1 + n_permutations) (Phipson & Smyth, 2010); one-sided
    (better than chance) for AUC and accuracies, two-sided for r.
Why it is valid
    ``W[i, i]`` comes from a cluster defined without participant ``i`` (neither its map nor its
    outcome). When brain and outcome are unrelated it carries no information on ``i``'s outcome,
    so pairing it with any participant's outcome is equally likely: the outcomes are
    exchangeable. The test is exact when the region is fixed in advance (ROI mode); with fold
    clusters it is approximate, as each fold's cluster depends on the other participants'
    observed outcomes. Re-defining the clusters under every permutation would take 24 000 GLM and
    smoothness fits per 1000 permutations (hours at 2 mm) and would put in the null a mass of
    permutations without any cluster, which is anti-conservative for an analysis that is run
    because a cluster was found.

Caveat, reported with the results: the LOO estimate is computed because the full data produced a
cluster; under no true effect that event favours folds whose cluster partly reflects the left-out
participant's noise, so a significant full-data false positive can leave a mildly optimistic
LOO estimate. It removes the circularity of the selection, not the selection of what is reported.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group.inference import glm, rft

LOGGER = logging.getLogger(__name__)

#: Fewest folds with a value for the metrics to be reported.
MIN_FOLDS = 5
#: Fewest permutations of the evaluation, whatever --n-permutations says.
MIN_PERMUTATIONS = 1000
#: Tolerance when counting permuted statistics at least as extreme as the observed one.
_TIE_TOL = 1e-12


@dataclass(frozen=True)
class FoldValues:
    """The leave-one-out folds of one seed, model and contrast.

    Attributes
    ----------
    values : numpy.ndarray
        ``(n, n)`` float64: ``values[i, j]`` is participant ``j``'s mean Fisher z in the cluster
        of the fold that leaves out ``i`` (NaN row when no cluster survives in that fold).
    n_clusters : numpy.ndarray
        ``(n,)`` surviving clusters per fold.
    size_vox : numpy.ndarray
        ``(n,)`` voxels of each fold's cluster (union of its surviving clusters).
    dice : numpy.ndarray
        ``(n,)`` Dice overlap of each fold's cluster with the full-data reference (NaN if none).
    """

    values: np.ndarray
    n_clusters: np.ndarray
    size_vox: np.ndarray
    dice: np.ndarray

    @property
    def left_out(self) -> np.ndarray:
        """Left-out values ``values[i, i]`` (NaN for folds without a cluster)."""
        return np.diag(self.values).copy()


def contrast_t(fit: glm.OLSFit, contrast: str) -> np.ndarray:
    """Return the t map of ``contrast`` (float32), as :func:`glm.contrast_maps` computes it.

    Only t is needed in a fold; computing z, p and g as well would double the fold's cost.
    """
    design = fit.design
    vector = design.contrast(contrast)
    scale = float(vector @ np.linalg.pinv(design.matrix.T @ design.matrix) @ vector)
    se = np.sqrt(fit.sigma2 * scale)
    t = np.zeros_like(se)
    np.divide(vector @ fit.beta, se, out=t, where=se > 0)
    return t.astype(np.float32)


def fold_region(
    data: np.ndarray,
    rows: pd.DataFrame,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    model: str,
    contrast: str,
    covariates: tuple[str, ...],
    voxel_p: float,
    cluster_p: float,
) -> tuple[np.ndarray, int]:
    """Return the significant clusters of one fit as a boolean over the mask's voxels.

    Parameters
    ----------
    data : numpy.ndarray
        ``(n_rows, n_mask_voxels)`` Fisher z of the fold's training participants.
    rows : pandas.DataFrame
        Their ``participant_id``, ``group`` and covariates, in the order of ``data``.
    mask : numpy.ndarray
        3-D analysis mask; columns of ``data`` follow ``mask.ravel(order="F")``.
    voxel_size : numpy.ndarray
        Voxel sizes in mm.
    model, contrast : str
        The group model and contrast (see :mod:`~bids_ketamine_fc.group.inference.glm`).
    covariates : tuple of str
        Covariates of ``groupsAge``.
    voxel_p, cluster_p : float
        Height threshold (uncorrected p) and cluster p(FWE) threshold (strict, as the full run).

    Returns
    -------
    region : numpy.ndarray
        ``(n_mask_voxels,)`` bool: voxels of the clusters with p(FWE) < ``cluster_p``.
    n_clusters : int
        How many clusters survive.
    """
    design = glm.design_matrix(rows, model, covariates, where="leave-one-out fold")
    fit = glm.fit_ols(data, design)
    smooth = rft.estimate_smoothness(fit.std_resid, mask, voxel_size, design.dof)
    u = rft.height_threshold(voxel_p, design.dof)
    flat = np.zeros(mask.size, np.float32)
    flat[np.flatnonzero(mask.ravel(order="F"))] = contrast_t(fit, contrast)
    labels, sizes = rft.label_clusters(flat.reshape(mask.shape, order="F"), mask, u)
    keep = np.flatnonzero(rft.cluster_pvalues(sizes, u, smooth)["p_fwe"] < cluster_p) + 1
    region = np.isin(labels.ravel(order="F")[mask.ravel(order="F")], keep)
    return region, int(keep.size)


def _dice(region: np.ndarray, reference: np.ndarray | None) -> float:
    if reference is None or not region.any():
        return float("nan")
    return float(2 * (region & reference).sum() / (region.sum() + reference.sum()))


def loo_fold_values(
    data: np.ndarray,
    rows: pd.DataFrame,
    mask: np.ndarray,
    affine: np.ndarray,
    model: str,
    contrast: str,
    covariates: tuple[str, ...],
    voxel_p: float,
    cluster_p: float,
    reference: np.ndarray | None = None,
    n_jobs: int = 1,
) -> FoldValues:
    """Refit the contrast without each participant and read everyone's mean in the fold's cluster.

    Parameters
    ----------
    data, rows
        ``(n, n_mask_voxels)`` float32 Fisher z and the participants' ``participant_id``,
        ``group`` and covariates, in the same order.
    mask, affine : numpy.ndarray
        3-D analysis mask and the maps' affine.
    model, contrast, covariates, voxel_p, cluster_p
        As :func:`fold_region`.
    reference : numpy.ndarray, optional
        Full-data cluster (bool over the mask's voxels), for each fold's Dice overlap.
    n_jobs : int
        Folds fitted in parallel threads (numpy releases the GIL in the heavy steps).

    Returns
    -------
    FoldValues
    """
    n = len(rows)
    voxel_size = rft.voxel_sizes(affine)

    def one_fold(i: int) -> tuple[np.ndarray, int]:
        train = np.arange(n) != i
        fold_rows = rows.iloc[np.flatnonzero(train)].reset_index(drop=True)
        try:
            return fold_region(
                data[train], fold_rows, mask, voxel_size, model, contrast, covariates,
                voxel_p, cluster_p,
            )  # fmt: skip
        except UserInputError as err:  # e.g. a covariate constant without this participant
            LOGGER.warning("Leave-one-out fold without %s: %s", rows["participant_id"].iloc[i], err)
            return np.zeros(data.shape[1], bool), 0

    with ThreadPoolExecutor(max(1, n_jobs)) as pool:
        folds = list(pool.map(one_fold, range(n)))
    values = np.full((n, n), np.nan)
    for i, (region, _) in enumerate(folds):
        if region.any():
            values[i] = data[:, region].mean(axis=1, dtype=np.float64)
    return FoldValues(
        values,
        np.array([k for _, k in folds]),
        np.array([int(r.sum()) for r, _ in folds]),
        np.array([_dice(r, reference) for r, _ in folds]),
    )


def fixed_region_values(values: np.ndarray) -> FoldValues:
    """Folds of a region fixed in advance (ROI mode): every fold reads the same values."""
    values = np.asarray(values, dtype=float)
    n = values.size
    return FoldValues(np.tile(values, (n, 1)), np.ones(n, int), np.zeros(n, int), np.ones(n))


def decision_scores(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Nearest-class-mean rule learned on each fold's training participants, for many labellings.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n, n)`` fold values (:attr:`FoldValues.values`).
    labels : numpy.ndarray
        ``(n_labellings, n)`` bool, True for R (one row per permutation).

    Returns
    -------
    scores, thresholds, directions : numpy.ndarray
        ``(n_labellings, n)``: ``directions * (values[i, i] - thresholds)``, the midpoints of the
        training R and NR means, and the signs of R mean minus NR mean (NaN for folds without a
        value or a training group).
    """
    n = values.shape[0]
    train = np.isfinite(values) & ~np.eye(n, dtype=bool)
    filled = np.where(train, values, 0.0)
    is_r = np.asarray(labels, dtype=float)
    sum_r, count_r = is_r @ filled.T, is_r @ train.T.astype(float)
    sum_nr, count_nr = filled.sum(axis=1) - sum_r, train.sum(axis=1) - count_r
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_r, mean_nr = sum_r / count_r, sum_nr / count_nr
    thresholds = (mean_r + mean_nr) / 2
    directions = np.where(mean_r >= mean_nr, 1.0, -1.0)
    directions[np.isnan(thresholds)] = np.nan
    return directions * (np.diag(values) - thresholds), thresholds, directions


def _auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC (Mann-Whitney U with average ranks for ties, as sklearn)."""
    ranks = stats.rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _accuracies(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted = scores > 0
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (predicted & labels).sum(axis=1) / n_pos
        specificity = (~predicted & ~labels).sum(axis=1) / n_neg
    return (predicted == labels).mean(axis=1), (sensitivity + specificity) / 2


def _pearson_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return yc @ xc / (np.linalg.norm(yc, axis=1) * np.linalg.norm(xc))


def permutation_p(null: np.ndarray, observed: float, two_sided: bool = False) -> float:
    """Return ``(1 + #{null >= observed}) / (1 + len(null))`` (``|.|`` when two-sided)."""
    if np.isnan(observed):
        return float("nan")
    null = np.abs(null) if two_sided else null
    observed = abs(observed) if two_sided else observed
    return float((1 + np.sum(null >= observed - _TIE_TOL)) / (1 + null.size))


def evaluate(
    folds: FoldValues,
    is_responder: np.ndarray,
    improvement: np.ndarray,
    n_permutations: int,
    rng: np.random.Generator,
) -> dict:
    """Cross-validated metrics of the left-out values, with permutation p-values.

    Parameters
    ----------
    folds : FoldValues
    is_responder : numpy.ndarray
        ``(n,)`` bool, True for R.
    improvement : numpy.ndarray
        ``(n,)`` relative pain improvement.
    n_permutations : int
        Permutations of the outcome (at least :data:`MIN_PERMUTATIONS` are drawn).
    rng : numpy.random.Generator

    Returns
    -------
    dict
        ``n_folds_with_value``, ``cv_r``, ``cv_r_p``, ``auc``, ``auc_p``, ``accuracy``,
        ``accuracy_p``, ``balanced_accuracy``, ``balanced_accuracy_p``, ``n_permutations``, and
        the observed per-fold ``scores``, ``thresholds`` and ``directions`` (``(n,)`` arrays).
    """
    is_responder = np.asarray(is_responder, dtype=bool)
    improvement = np.asarray(improvement, dtype=float)
    n, n_perm = is_responder.size, max(int(n_permutations), MIN_PERMUTATIONS)
    order = np.vstack([np.arange(n), rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)])
    labels = is_responder[order]
    scores, thresholds, directions = decision_scores(folds.values, labels)
    valid = np.isfinite(scores[0])
    result = {"n_folds_with_value": int(valid.sum()), "n_permutations": n_perm}
    result |= {"scores": scores[0], "thresholds": thresholds[0], "directions": directions[0]}
    metrics = ("cv_r", "auc", "accuracy", "balanced_accuracy")
    if valid.sum() < MIN_FOLDS or len(set(is_responder[valid])) < 2:
        return result | {m: np.nan for m in metrics} | {f"{m}_p": np.nan for m in metrics}
    s, y = scores[:, valid], labels[:, valid]
    values = {
        "cv_r": _pearson_rows(folds.left_out[valid], improvement[order][:, valid]),
        "auc": _auc(s, y),
    }
    values["accuracy"], values["balanced_accuracy"] = _accuracies(s, y)
    for name, null in values.items():
        result[name] = float(null[0])
        result[f"{name}_p"] = permutation_p(null[1:], null[0], two_sided=name == "cv_r")
    return result


def loo_tables(
    rows: pd.DataFrame, folds: FoldValues, n_permutations: int, rng: np.random.Generator
) -> tuple[dict, pd.DataFrame]:
    """Evaluate the folds (:func:`evaluate`); return the ``prediction.tsv`` row and fold rows.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``participant_id``, ``group`` and ``improvement``, in the order of the folds.
    folds : FoldValues
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    summary : dict
        Counts, metrics, permutation p-values and mean Dice (without seed/model/contrast keys).
    table : pandas.DataFrame
        Per participant: left-out value, threshold, direction, score, prediction, fold cluster.
    """
    is_r = rows["group"].to_numpy() == "R"
    result = evaluate(folds, is_r, rows["improvement"].to_numpy(float), n_permutations, rng)
    dice = folds.dice[np.isfinite(folds.dice)]
    summary = {
        "n": len(rows),
        "n_R": int(is_r.sum()),
        "n_NR": int((~is_r).sum()),
        "n_folds_no_cluster": int((folds.n_clusters == 0).sum()),
        **{key: value for key, value in result.items() if np.ndim(value) == 0},
        "mean_dice": float(dice.mean()) if dice.size else float("nan"),
    }
    scores = result["scores"]
    predicted = np.where(scores > 0, "R", "NR").astype(object)
    predicted[~np.isfinite(scores)] = None
    table = rows[["participant_id", "group", "improvement"]].assign(
        value=folds.left_out,
        threshold=result["thresholds"],
        direction=result["directions"],
        score=scores,
        predicted=predicted,
        n_clusters=folds.n_clusters,
        size_vox=folds.size_vox,
        dice=folds.dice,
    )
    return summary, table
