"""What survives in a leave-one-out fold: the inference of ``--correlation-inference``.

Each rule gives, per fold and per label of the left-out participant, a critical value: a cluster
(``rft``, ``permutation``) or a voxel (``tfce``) survives when its statistic exceeds it, as
p(FWE) < ``--cluster-p`` in the full analysis.

``rft``
    Cluster size against random field theory (:mod:`~bids_ketamine_fc.group.inference.rft`), with
    the fold's degrees of freedom and the smoothness of the full-data fit. The group level
    estimates the smoothness once, from all participants; the folds keep that estimate rather than
    re-estimating it from each fold's residuals under every relabelling (which would cost a full
    smoothness estimate per fold and relabelling). A cluster survives from the smallest size whose
    p(FWE) is below ``--cluster-p``.
``permutation``
    Cluster size against the fold's own permutation null of the largest cluster: the fold's
    participants relabelled at random with the fold's group sizes (all relabellings when fewer
    exist), the regressor of interest exchanged. The null depends on the fold and on the label of
    the left-out participant (which sets the fold's group sizes), not on which relabelling of the
    outcomes is being evaluated, so it is computed once per fold and label. Without covariates this
    is the full analysis's test (Freedman-Lane with an intercept only is the exchange of labels);
    with covariates it exchanges the regressor rather than the nuisance residuals.
``tfce``
    Voxel TFCE against the fold's permutation null of the largest TFCE value, built the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bids_ketamine_fc.group.behaviour import folds as fold_maps
from bids_ketamine_fc.group.inference import relabel, rft
from bids_ketamine_fc.group.inference.sparse_clusters import neighbour_table
from bids_ketamine_fc.group.inference.tfce import tfce_map

#: TFCE exponents of the full analysis (Smith & Nichols 2009).
TFCE_E, TFCE_H = 0.5, 2.0
#: Float32 values of the dense t maps swept at once by TFCE.
_TFCE_VALUES = 1 << 23


@dataclass(frozen=True)
class FoldRule:
    """Critical values of the fold inference.

    Attributes
    ----------
    inference : str
        ``rft``, ``permutation`` or ``tfce``.
    critical : numpy.ndarray
        ``(n, 2)``: fold, label of the left-out participant (0 NR, 1 R); a cluster size
        (``rft``, ``permutation``) or a voxel TFCE (``tfce``) must exceed it.
    null_count : int
        Relabellings of each fold's null (0 for ``rft``).
    table : numpy.ndarray or None
        Neighbour table of the mask (``tfce``).
    """

    inference: str
    critical: np.ndarray
    null_count: int = 0
    table: np.ndarray | None = None


def critical_value(null: np.ndarray, alpha: float, exhaustive: bool) -> float:
    """Largest value that does not reach p < ``alpha`` against a null of maxima.

    ``p(v) = (1 + #{null >= v}) / (1 + N)`` for ``N`` random relabellings (the map's own one
    counted once), ``#{null >= v} / N`` when ``null`` holds every relabelling (its own among
    them). A statistic survives when it exceeds the returned value (``inf``: nothing can).
    """
    ordered = np.sort(np.asarray(null, dtype=float))[::-1]
    n = ordered.size
    # "- 1e-9": alpha * (1 + n) = 50 must allow 48 exceedances (p = 49 / 1000), not 49
    allowed = (
        math.ceil(alpha * n - 1e-9) - 1 if exhaustive else math.ceil(alpha * (1 + n) - 1e-9) - 2
    )
    if allowed < 0:
        return float("inf")
    return float(ordered[min(allowed, n - 1)]) if allowed < n else float("-inf")


def rft_rule(setup: fold_maps.FoldSetup, smooth: rft.Smoothness, alpha: float) -> FoldRule:
    """Cluster-size rule of random field theory at the fold's dof, full-data smoothness.

    Parameters
    ----------
    setup : FoldSetup
    smooth : rft.Smoothness
        From :func:`~bids_ketamine_fc.group.inference.rft.estimate_smoothness` on all
        participants (its ``dof`` is replaced by the fold's).
    alpha : float
        ``--cluster-p``.

    Returns
    -------
    FoldRule
    """
    fold_smooth = rft.Smoothness(
        smooth.fwhm_vox, smooth.fwhm_mm, smooth.resels, smooth.n_voxels, setup.dof
    )
    sizes = np.arange(1, smooth.n_voxels + 1)
    p_fwe = rft.cluster_pvalues(sizes, setup.u, fold_smooth)["p_fwe"]
    significant = np.flatnonzero(p_fwe < alpha)
    largest_not = float(sizes[significant[0]] - 1) if significant.size else float("inf")
    return FoldRule("rft", np.full((setup.n, 2), largest_not))


def _fold_labels(setup, fold: int, left_out_is_r: bool, is_r: np.ndarray, count, rng):
    """Relabellings of one fold's participants with the fold's group sizes, left-out fixed."""
    n_r = int(is_r.sum()) - int(left_out_is_r)
    training = np.arange(setup.n - 1) < n_r  # canonical labels; their arrangements
    orders, exhaustive = relabel.relabellings(training, count + 1, rng)
    if not exhaustive:  # row 0 is the canonical arrangement itself, not a draw
        orders = orders[1:]
    labels = np.empty((len(orders), setup.n), bool)
    keep = np.arange(setup.n) != fold
    labels[:, keep] = training[orders]
    labels[:, fold] = left_out_is_r
    return labels, exhaustive


def _null_max(setup, rule_kind: str, fold: int, labels: np.ndarray, table) -> np.ndarray:
    """Largest cluster size (or TFCE) of each relabelled map of one fold."""
    if rule_kind == "permutation":
        hits = fold_maps.supra_threshold(setup, np.array([fold]), labels)
        return fold_maps.max_size(fold_maps.cluster(setup, hits), len(labels)).astype(float)
    folds = np.full(len(labels), fold)
    out = np.empty(len(labels))
    step = max(_TFCE_VALUES // setup.resid.shape[1], 1)
    for start in range(0, len(labels), step):
        part = slice(start, start + step)
        t = fold_maps.dense_t(setup, folds[part], labels[part])
        out[part] = tfce_map(t, table, TFCE_E, TFCE_H).max(axis=1, initial=0.0)
    return out


def permutation_rule(
    setup: fold_maps.FoldSetup,
    kind: str,
    is_r: np.ndarray,
    alpha: float,
    count: int,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
) -> FoldRule:
    """Cluster-size (``permutation``) or TFCE (``tfce``) rule from each fold's own null.

    Parameters
    ----------
    setup : FoldSetup
    kind : str
        ``permutation`` or ``tfce``.
    is_r : numpy.ndarray
        ``(n,)`` observed labels (only their counts matter).
    alpha : float
        ``--cluster-p``.
    count : int
        Relabellings of each fold's null (all of them when fewer exist).
    rng : numpy.random.Generator
    mask : numpy.ndarray, optional
        3-D mask (``tfce``: neighbours for the enhancement).

    Returns
    -------
    FoldRule
    """
    table = neighbour_table(mask, 18) if kind == "tfce" else None
    critical = np.full((setup.n, 2), np.inf)
    used = 0
    for fold in np.flatnonzero(setup.valid):
        for label in (False, True):
            labels, exhaustive = _fold_labels(setup, fold, label, is_r, count, rng)
            null = _null_max(setup, kind, fold, labels, table)
            critical[fold, int(label)] = critical_value(null, alpha, exhaustive)
            used = max(used, len(labels))
    return FoldRule(kind, critical, used, table)


def survivors(
    setup: fold_maps.FoldSetup,
    rule: FoldRule,
    fold_ids: np.ndarray,
    is_r: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surviving voxels of the map of every fold of ``fold_ids`` under every labelling.

    Parameters
    ----------
    setup : FoldSetup
    rule : FoldRule
    fold_ids : numpy.ndarray
        ``(F,)`` folds.
    is_r : numpy.ndarray
        ``(B, n)`` bool labellings.

    Returns
    -------
    maps, voxels : numpy.ndarray
        Map (``k * B + b``: fold ``fold_ids[k]``, labelling ``b``) and voxel of each surviving
        entry.
    n_clusters : numpy.ndarray
        ``(F * B,)`` surviving clusters of each map.
    """
    fold_ids = np.asarray(fold_ids)
    n_maps = fold_ids.size * len(is_r)
    map_fold = np.repeat(fold_ids, len(is_r))
    map_labels = np.tile(np.arange(len(is_r)), fold_ids.size)
    held = is_r[map_labels, map_fold].astype(int)
    if rule.inference == "tfce":
        return _tfce_survivors(setup, rule, map_fold, is_r[map_labels], held)
    hits = fold_maps.supra_threshold(setup, fold_ids, is_r)
    found = fold_maps.cluster(setup, hits)
    keep = found.size > rule.critical[map_fold[found.owner], held[found.owner]]
    entries = keep[found.label]
    n_clusters = np.bincount(found.owner[keep], minlength=n_maps)
    return hits.maps[entries], hits.voxels[entries], n_clusters


def _tfce_survivors(setup, rule, folds, is_r, held):
    """Voxels whose TFCE exceeds the critical value (positive t), and their clusters."""
    maps, voxels = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    step = max(_TFCE_VALUES // setup.resid.shape[1], 1)
    for start in range(0, len(folds), step):
        part = slice(start, start + step)
        t = fold_maps.dense_t(setup, folds[part], is_r[part])
        enhanced = tfce_map(t, rule.table, TFCE_E, TFCE_H)
        limit = rule.critical[folds[part], held[part]][:, None]
        row, col = np.nonzero((enhanced > limit) & (t > 0))
        maps.append(row + start)
        voxels.append(col)
    maps, voxels = np.concatenate(maps), np.concatenate(voxels)
    hits = fold_maps.Hits(maps, voxels, np.zeros(maps.size))
    found = fold_maps.cluster(setup, hits)
    return maps, voxels, np.bincount(found.owner, minlength=len(folds))
