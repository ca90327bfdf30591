"""Pre-specified leave-one-out prediction of the response, tested by re-running every fold.

For each hypothesis of ``--prediction`` (``SEED:MODEL:CONTRAST``; the study's is
``mPFC:groups:NRgtR``) the leave-one-out runs whether or not the full data gave a significant
cluster, and its result is reported beside the full-data cluster, never instead of it.

Folds
    Participant ``i`` is left out, the group model is fitted to the others and the clusters of the
    contrast's t map that ``--correlation-inference`` calls significant are kept
    (:mod:`.folds`, :mod:`.fold_rules`); every participant's mean Fisher z in their union is the
    fold's row of values. A fold where no cluster survives gives a defined outcome (score 0, no
    information; :mod:`.metrics`).
Test
    The outcomes (R/NR label and improvement together) are permuted among the participants
    *before* the folds, and under every permutation each fold's GLM, threshold, clusters and
    classifier are redone; ``p = (1 + #{null >= observed}) / (1 + n)``. Since the whole
    procedure, the choice of the regions included, is repeated on each relabelled data set, and
    nothing in it depends on whether the full data gave a cluster, the observed result is
    exchangeable with the permuted ones when the outcomes are independent of the maps (and
    covariates): the test is exact under that null. It answers the pre-specified question only; a
    hypothesis chosen after seeing the full-data clusters is not covered.

:data:`PROCEDURE` says the same in plain text for ``prediction.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bids_ketamine_fc.group.behaviour import fold_rules, metrics
from bids_ketamine_fc.group.behaviour import folds as fold_maps
from bids_ketamine_fc.group.inference import relabel, rft

LOGGER = logging.getLogger(__name__)

#: Fold maps labelled together in one batch.
_MAPS_PER_BATCH = 1536

PROCEDURE = (
    "Pre-specified leave-one-out test (--prediction SEED:MODEL:CONTRAST), run whether or not the "
    "full data gave a significant cluster. Folds: each participant in turn is left out; the group "
    "model is fitted to the others, its contrast t map is thresholded at --voxel-p and the "
    "clusters that --correlation-inference calls significant at --cluster-p are kept (rft: "
    "random field theory at the fold's degrees of freedom with the smoothness estimated once "
    "from all participants' residuals of the model without the group difference; permutation "
    "and tfce: each fold's own permutation null). Every participant's mean Fisher z in the union "
    "of the fold's clusters is recorded. Classifier: nearest class mean of the fold's training "
    "participants (threshold midway between their R and NR means, direction the sign of R minus "
    "NR); the left-out participant's score is direction * (value - threshold), > 0 predicts R. "
    "A fold without a surviving cluster scores 0, has a centred value of 0 and counts as half "
    "right (it predicts nothing). Metrics over all folds: AUC of the scores, accuracy, balanced "
    "accuracy, and the cross-validated r of the centred left-out values (value minus the "
    "training mean in the same region) with the improvement. Test: the outcomes (R/NR label and "
    "improvement together) are permuted among the participants before the folds, and under "
    "every permutation each fold's model, threshold, clusters and classifier are redone; "
    "p = (1 + #{null >= observed}) / (1 + n_permutations), one-sided for AUC and accuracies, on "
    "|r| for the cross-validated r; when the distinct permutations are fewer than asked, each is "
    "used once and the smallest p is 1 / their number. As the choice of the regions is repeated "
    "on every permuted data set and does not depend on the full-data result, the test is exact "
    "when the outcomes are independent of the maps and covariates. It covers the pre-specified "
    "hypothesis only: a test chosen after seeing the full-data clusters is not covered."
)


@dataclass(frozen=True)
class FoldValues:
    """The leave-one-out folds of one hypothesis, for the observed outcomes and each relabelling.

    Attributes
    ----------
    values : numpy.ndarray
        ``(K, n, n)`` float64: ``values[k, i, j]`` is participant ``j``'s mean Fisher z in the
        region of fold ``i`` (left out ``i``) under relabelling ``k`` (``k = 0``: observed); NaN
        row without region. ``(1, n, n)`` for a region fixed in advance.
    orders : numpy.ndarray
        ``(K, n)``: under relabelling ``k`` participant ``j`` has the outcome of ``orders[k, j]``.
    exhaustive : bool
        ``orders`` holds every distinct permutation of the outcomes once.
    n_clusters, size_vox, dice : numpy.ndarray
        ``(n,)`` observed folds: surviving clusters, region voxels, Dice overlap with the
        full-data region (NaN without either).
    fold_null : int
        Relabellings of each fold's own null (``permutation``/``tfce``; 0 otherwise).
    """

    values: np.ndarray
    orders: np.ndarray
    exhaustive: bool
    n_clusters: np.ndarray
    size_vox: np.ndarray
    dice: np.ndarray
    fold_null: int = 0

    @property
    def left_out(self) -> np.ndarray:
        """Observed left-out values ``values[0, i, i]`` (NaN for folds without region)."""
        return np.diagonal(self.values[0]).copy()


def outcome_orders(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Permutations of the outcomes: identity first, all ``n!`` of them when fewer than ``count``."""
    return relabel.relabellings(np.arange(n), count, rng)


def nuisance_smoothness(setup: fold_maps.FoldSetup, mask, affine) -> rft.Smoothness:
    """Smoothness of all participants' residuals of the model without the group difference.

    The residuals of the nuisance (intercept and covariates) do not depend on the labels, so the
    estimate is the same for every relabelling (``spm_est_smoothness`` as the group level).
    """
    dof = setup.dof + 2  # the nuisance model: the fold dof plus the left-out row and x
    rss = np.einsum("ij,ij->j", setup.resid.astype(np.float64), setup.resid)
    scale = np.zeros_like(rss)
    np.divide(1.0, np.sqrt(rss / dof), out=scale, where=rss > 0)
    std_resid = (setup.resid * scale).astype(np.float32)
    return rft.estimate_smoothness(std_resid, mask, rft.voxel_sizes(affine), dof)


def _dice(members, reference: np.ndarray | None) -> np.ndarray:
    size = np.asarray(members.sum(axis=1)).ravel()
    if reference is None or not reference.any():
        return np.full(size.size, np.nan)
    overlap = np.asarray(members @ reference.astype(np.float32)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * overlap / (size + reference.sum())
    return np.where(size > 0, dice, np.nan)


def _observed(setup, rule, is_r, reference) -> tuple[np.ndarray, ...]:
    """Fold values of the observed labels, with each fold's clusters, size and Dice."""
    maps, voxels, n_clusters = fold_rules.survivors(setup, rule, np.arange(setup.n), is_r[None])
    regions = fold_maps.region_means(setup, setup.n, maps, voxels, n_clusters)
    return regions.means, regions.n_clusters, regions.size, _dice(regions.members, reference)


def run_batches(
    n_maps: int,
    batch: int,
    work: Callable[[slice], None],
    n_jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Call ``work(slice)`` on consecutive batches of ``n_maps`` items, on ``n_jobs`` threads.

    BLAS is limited to one thread per batch when ``n_jobs > 1`` (threadpoolctl when installed);
    ``progress`` is called with the number of items each finished batch covered.
    """
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    slices = [slice(s, min(s + batch, n_maps)) for s in range(0, n_maps, batch)]
    limits = nullcontext()
    if n_jobs > 1:
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=1, user_api="blas")
        except ImportError:
            pass

    def one(part: slice) -> None:
        work(part)
        if progress is not None:
            progress(part.stop - part.start)

    if n_jobs <= 1:
        for part in slices:
            one(part)
        return
    with limits, ThreadPoolExecutor(n_jobs) as pool:
        list(pool.map(one, slices))


def relabelled_values(
    setup: fold_maps.FoldSetup,
    rule: fold_rules.FoldRule,
    is_r: np.ndarray,
    n_jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Fold values ``(K, n, n)`` of every fold under each row of ``is_r`` (``(K, n)`` labels).

    Batches of relabellings run on ``n_jobs`` threads; ``progress(k)`` is called after each
    batch with the relabellings it covered.
    """
    valid = np.flatnonzero(setup.valid)
    n, count = setup.n, len(is_r)
    values = np.full((count, n, n), np.nan)
    per_batch = max(1, _MAPS_PER_BATCH // max(valid.size, 1))

    def work(part: slice) -> None:
        rows = np.arange(part.start, part.stop)
        maps, voxels, n_clusters = fold_rules.survivors(setup, rule, valid, is_r[rows])
        regions = fold_maps.region_means(setup, valid.size * rows.size, maps, voxels, n_clusters)
        means = regions.means.reshape(valid.size, rows.size, n).transpose(1, 0, 2)
        values[rows[:, None], valid[None, :]] = means

    if valid.size:
        run_batches(count, per_batch, work, n_jobs, progress)
    return values


def loo_fold_values(
    data: np.ndarray,
    rows: pd.DataFrame,
    mask: np.ndarray,
    affine: np.ndarray,
    hypothesis: tuple[str, str],
    options: dict,
    orders: np.ndarray,
    rng: np.random.Generator,
    reference: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> FoldValues:
    """Run the folds for the observed outcomes and every relabelling of them.

    Parameters
    ----------
    data, rows
        ``(n, V)`` float32 Fisher z and the participants' ``group`` and covariates (same order).
    mask, affine : numpy.ndarray
        3-D analysis mask and the maps' affine.
    hypothesis : tuple of str
        ``(model, contrast)``.
    options : dict
        ``covariates``, ``voxel_p``, ``cluster_p``, ``inference`` (``rft``, ``permutation``,
        ``tfce``), ``fold_null`` (relabellings of each fold's own null) and ``n_jobs``.
    orders : numpy.ndarray
        ``(K, n)`` outcome orders, identity first (:func:`outcome_orders`).
    rng : numpy.random.Generator
        Draws the folds' own nulls.
    reference : numpy.ndarray, optional
        Full-data region (bool over the mask's voxels), for the Dice overlaps.
    progress : callable, optional
        Called with the relabellings done after each batch.

    Returns
    -------
    FoldValues
    """
    model, contrast = hypothesis
    setup = fold_maps.prepare(
        data, rows, mask, model, contrast, options["covariates"], options["voxel_p"]
    )
    for i in np.flatnonzero(~setup.valid):
        LOGGER.warning(
            "Leave-one-out fold without %s: the design is singular (a covariate is constant "
            "without this participant); the fold gives no region.",
            rows["participant_id"].iloc[i],
        )
    is_r = rows["group"].to_numpy() == "R"
    inference = options["inference"]
    if inference == "rft":
        rule = fold_rules.rft_rule(
            setup, nuisance_smoothness(setup, mask, affine), options["cluster_p"]
        )
    else:
        rule = fold_rules.permutation_rule(
            setup, inference, is_r, options["cluster_p"], options["fold_null"], rng, mask
        )
    values, n_clusters, size, dice = _observed(setup, rule, is_r, reference)
    exhaustive = len(orders) == relabel.count_distinct(np.arange(len(rows)))
    relabelled = relabelled_values(setup, rule, is_r[orders[1:]], options["n_jobs"], progress)
    all_values = np.concatenate([values[None], relabelled])
    return FoldValues(all_values, orders, exhaustive, n_clusters, size, dice, rule.null_count)


def fixed_region_values(values: np.ndarray, orders: np.ndarray) -> FoldValues:
    """Folds of a region fixed in advance (ROI mode): every fold and relabelling reads ``values``."""
    values = np.asarray(values, dtype=float)
    n = values.size
    exhaustive = len(orders) == relabel.count_distinct(np.arange(n))
    return FoldValues(
        np.tile(values, (1, n, 1)), orders, exhaustive, np.ones(n, int), np.zeros(n, int),
        np.ones(n),
    )  # fmt: skip


def loo_tables(rows: pd.DataFrame, folds: FoldValues) -> tuple[dict, pd.DataFrame]:
    """Evaluate the folds (:func:`~.metrics.evaluate`); return the summary and the fold rows.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``participant_id``, ``group`` and ``improvement``, in the order of the folds.
    folds : FoldValues

    Returns
    -------
    summary : dict
        Counts, metrics, permutation p-values, the smallest attainable p and the mean Dice.
    table : pandas.DataFrame
        Per participant: left-out value, centred value, threshold, direction, score,
        prediction (n/a without region), the fold's clusters, size and Dice.
    """
    is_r = rows["group"].to_numpy() == "R"
    improvement = rows["improvement"].to_numpy(float)
    result = metrics.evaluate(folds.values, is_r[folds.orders], improvement[folds.orders])
    dice = folds.dice[np.isfinite(folds.dice)]
    summary = {
        "n": len(rows),
        "n_R": int(is_r.sum()),
        "n_NR": int((~is_r).sum()),
        "n_folds_no_cluster": int((folds.n_clusters == 0).sum()),
        **{key: value for key, value in result.items() if np.ndim(value) == 0},
        "exhaustive": folds.exhaustive,
        "smallest_p": relabel.smallest_p(len(folds.orders)),
        "fold_null_permutations": folds.fold_null,
        "mean_dice": float(dice.mean()) if dice.size else float("nan"),
    }
    has = np.isfinite(folds.left_out)
    predicted = np.where(result["scores"] > 0, "R", "NR").astype(object)
    predicted[~has] = None
    table = rows[["participant_id", "group", "improvement"]].assign(
        value=folds.left_out,
        centred=result["centred"],
        threshold=result["thresholds"],
        direction=result["directions"],
        score=result["scores"],
        predicted=predicted,
        n_clusters=folds.n_clusters,
        size_vox=folds.size_vox,
        dice=folds.dice,
    )
    return summary, table
