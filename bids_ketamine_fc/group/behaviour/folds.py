"""Leave-one-out fold maps for many relabellings at once: t maps, thresholds and clusters.

For a relabelling (the participants' R/NR labels in some order) the fold that leaves out
participant ``i`` fits the group model to the others and keeps the clusters of the contrast's t
map that its inference calls significant. Done literally, 1000 relabellings of 24 folds are
24 000 model fits; here they are one matrix product per relabelling:

t maps by downdating the full fit
    The contrast of the cell-means design ``[R, NR, covariates]`` tests the regressor
    ``g = X c / (c'c)`` against the nuisance ``Z = [1, covariates]``, which does not depend on
    the labels. With ``E`` the residuals of ``Z`` on all participants (``Z'E = 0``) and ``h``
    their leverages, the fold's residual sum of squares is ``RSS - E_i^2 / (1 - h_i)`` (a
    rank-one downdate), and the fold's regressor residualised on its own ``Z``, ``x_i``, has
    ``x_i'E = g'E + c_i E_i`` with the scalar ``c_i = g'w_i - g_i`` (``w_i = Z_{-i}
    (Z_{-i}'Z_{-i})^-1 z_i``). So every fold's numerator is the full-data product ``g'E`` plus a
    multiple of the left-out participant's residual, and ``t > u`` is
    ``g'E + c_i E_i > |x_i| u / sqrt(dof + u^2) sqrt(RSS_i)``: the fold's GLM t exactly.
Screening
    ``g'E + c_i E_i`` is at most ``g'E + max|c_i| max|E_i|`` and the bound at least
    ``min|x_i| min_i bound_i``; one product with two extra rows gives that difference for all
    voxels, and only the few voxels where it is positive are tested fold by fold.
Clusters
    Only the supra-threshold voxels are labelled, for all the maps of a batch in one pass
    (:func:`~bids_ketamine_fc.group.inference.sparse_clusters.connected_keys`), as the
    permutation engine does. What survives follows ``--correlation-inference``
    (:mod:`.fold_rules`).

Voxels are the columns of masked data in ``numpy.flatnonzero(mask.ravel(order="F"))`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from bids_ketamine_fc.group.inference import glm, rft
from bids_ketamine_fc.group.inference.sparse_clusters import (
    SparseGrid,
    connected_keys,
    sparse_grid,
)

#: Float32 values of one product block (16 MB).
_BLOCK = 1 << 22
#: Relative leverage margin under which leaving a participant out makes the nuisance singular.
_LEVERAGE_TOL = 1e-8


@dataclass(frozen=True)
class FoldSetup:
    """What every fold map needs, computed once from the full data.

    Attributes
    ----------
    data : numpy.ndarray
        ``(n, V)`` float32 Fisher z (for the region means).
    data_t : numpy.ndarray
        ``(V, n)`` float32 C-contiguous transpose of ``data``.
    resid : numpy.ndarray
        ``(n, V)`` float32 residuals of the nuisance on all participants.
    rss_root : numpy.ndarray
        ``(n, V)`` float64 ``sqrt(RSS_i)`` of each fold (0 where the voxel is constant).
    bounds : numpy.ndarray
        ``(n, V)`` float32 ``u / sqrt(dof + u^2) * sqrt(RSS_i)`` (``inf`` where the voxel is
        constant in the fold): ``t > u`` where ``x_i'E`` exceeds ``|x_i|`` times it.
    residualiser : numpy.ndarray
        ``(n, n, n)``: fold ``i``'s residual-forming matrix of the nuisance, zero row and
        column ``i``.
    downdate : numpy.ndarray
        ``(n, n)``: row ``i`` is ``w_i`` (0 at ``i``), so that ``c_i = g'w_i - g_i``.
    screen : numpy.ndarray
        ``(2, V)`` float32: the smallest bound of the valid folds (``1e30`` where none is finite)
        and the largest ``|E_i|``.
    weights : tuple of float
        Regressor value of an R and of an NR participant (the contrast's group weights).
    valid : numpy.ndarray
        ``(n,)`` bool: the fold's design is full rank.
    dof : int
        Residual degrees of freedom of a fold (``n - 1 - rank([x, Z])``).
    u : float
        Height threshold (t) of ``--voxel-p`` at ``dof``.
    grid : SparseGrid
        Geometry of the mask (18-connectivity).
    """

    data: np.ndarray
    data_t: np.ndarray
    resid: np.ndarray
    rss_root: np.ndarray
    bounds: np.ndarray
    residualiser: np.ndarray
    downdate: np.ndarray
    screen: np.ndarray
    weights: tuple[float, float]
    valid: np.ndarray
    dof: int
    u: float
    grid: SparseGrid

    @property
    def n(self) -> int:
        """Participants (and folds)."""
        return self.data.shape[0]


def nuisance_matrix(rows: pd.DataFrame, model: str, covariates: tuple[str, ...]) -> np.ndarray:
    """Return ``Z = [1, covariates]`` of a model (what a two-group contrast leaves untested)."""
    parts = [np.ones((len(rows), 1))]
    if model == "groupsAge":  # text covariates as indicator columns, as in the full model
        parts.append(glm.covariate_columns(rows, covariates, "leave-one-out fold")[0])
    return np.hstack(parts)


def prepare(
    data: np.ndarray,
    rows: pd.DataFrame,
    mask: np.ndarray,
    model: str,
    contrast: str,
    covariates: tuple[str, ...],
    voxel_p: float,
) -> FoldSetup:
    """Downdate pieces, per-fold threshold scales and residualisers of one seed and contrast.

    Parameters
    ----------
    data : numpy.ndarray
        ``(n, V)`` Fisher z, rows in the order of ``rows``.
    rows : pandas.DataFrame
        ``group`` and the covariates of each participant.
    mask : numpy.ndarray
        3-D analysis mask (``V`` voxels).
    model, contrast : str
        Group model (``groups``/``groupsAge``) and contrast (``RgtNR``/``NRgtR``).
    covariates : tuple of str
        Covariates of ``groupsAge``.
    voxel_p : float
        Height threshold, one-sided voxel p.

    Returns
    -------
    FoldSetup
    """
    n = len(rows)
    z = nuisance_matrix(rows, model, covariates)
    y = np.asarray(data, dtype=np.float64)
    hat = z @ np.linalg.pinv(z)
    resid = y - hat @ y
    leverage = np.clip(np.diag(hat), 0.0, 1.0)
    rank = np.linalg.matrix_rank(z)
    valid = 1.0 - leverage > _LEVERAGE_TOL
    valid &= np.array([np.linalg.matrix_rank(np.delete(z, i, 0)) == rank for i in range(n)])
    rss = np.einsum("ij,ij->j", resid, resid)
    factor = np.where(valid, 1.0 / np.maximum(1.0 - leverage, _LEVERAGE_TOL), 0.0)
    rss_fold = np.maximum(rss[None, :] - factor[:, None] * resid**2, 0.0)
    scale = np.abs(resid).max(axis=0, initial=0.0) ** 2 * n
    rss_root = np.where(rss_fold > 1e-12 * np.maximum(scale, 1e-30), np.sqrt(rss_fold), 0.0)
    residualiser, downdate = np.zeros((n, n, n)), np.zeros((n, n))
    for i in np.flatnonzero(valid):
        keep = np.arange(n) != i
        fold_z = z[keep]
        block = np.eye(n - 1) - fold_z @ np.linalg.pinv(fold_z)
        residualiser[i][np.ix_(keep, keep)] = block
        downdate[i, keep] = fold_z @ np.linalg.pinv(fold_z.T @ fold_z) @ z[i]
    dof = n - 1 - (rank + 1)
    u = rft.height_threshold(voxel_p, dof)
    bounds = (u / np.sqrt(dof + u * u) * rss_root).astype(np.float32)
    bounds[rss_root == 0] = np.inf
    lowest = (
        bounds[valid].min(axis=0, initial=np.inf) if valid.any() else np.full(y.shape[1], np.inf)
    )
    screen = np.stack([np.minimum(lowest, 1e30), np.abs(resid).max(axis=0)]).astype(np.float32)
    weights = glm.CONTRASTS[contrast]
    data32 = np.asarray(data, dtype=np.float32)
    return FoldSetup(
        data=data32,
        data_t=np.ascontiguousarray(data32.T),
        resid=resid.astype(np.float32),
        rss_root=rss_root,
        bounds=bounds,
        residualiser=residualiser,
        downdate=downdate,
        screen=screen,
        weights=(float(weights[0]), float(weights[1])),
        valid=valid,
        dof=int(dof),
        u=u,
        grid=sparse_grid(mask, 18),
    )


def regressors(setup: FoldSetup, folds: np.ndarray, is_r: np.ndarray) -> np.ndarray:
    """Unit-norm tested regressor of each map, residualised on its fold's nuisance.

    Parameters
    ----------
    setup : FoldSetup
    folds : numpy.ndarray
        ``(m,)`` fold (left-out participant) of each map.
    is_r : numpy.ndarray
        ``(m, n)`` bool labels of each map (True: R).

    Returns
    -------
    numpy.ndarray
        ``(m, n)`` float64, 0 at the left-out participant; rows of 0 where the fold is invalid
        or the labels are collinear with the nuisance (such maps have no supra-threshold voxel).
    """
    x = np.where(is_r, setup.weights[0], setup.weights[1])
    out = np.einsum("mjk,mk->mj", setup.residualiser[folds], x)
    norms = np.linalg.norm(out, axis=1)
    good = norms > 1e-8 * np.abs(x).max(axis=1)
    out[good] /= norms[good, None]
    out[~good] = 0.0
    return out


@dataclass(frozen=True)
class Hits:
    """Supra-threshold voxels of a set of maps.

    ``maps``/``voxels``: map and voxel of each supra-threshold entry; ``b``: its
    correlation-scale statistic (``t = sqrt(dof) b / sqrt(1 - b^2)``).
    """

    maps: np.ndarray
    voxels: np.ndarray
    b: np.ndarray

    def t(self, dof: int) -> np.ndarray:
        """Return the t value of each entry."""
        return np.sqrt(dof) * self.b / np.sqrt(np.maximum(1.0 - self.b**2, 1e-30))


def fold_scalars(
    setup: FoldSetup, fold_ids: np.ndarray, is_r: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Return each labelling's regressor ``g`` and, per fold, ``c_i``, ``|x_i|`` and usability.

    Returns
    -------
    g : numpy.ndarray
        ``(B, n)`` float64 regressor of each labelling.
    c, norm : numpy.ndarray
        ``(B, F)``: ``x_i'E = g'E + c E_i``; ``|x_i|``.
    usable : numpy.ndarray
        ``(B, F)`` bool: valid fold and labels not collinear with the nuisance.
    """
    g = np.where(is_r, setup.weights[0], setup.weights[1]).astype(np.float64)
    residualised = np.einsum("fjk,bk->bfj", setup.residualiser[fold_ids], g)
    norm = np.linalg.norm(residualised, axis=2)
    c = g @ setup.downdate[fold_ids].T - g[:, fold_ids]
    usable = (norm > 1e-8 * np.abs(g).max(axis=1, keepdims=True)) & setup.valid[fold_ids]
    return g, c, norm, usable


def supra_threshold(setup: FoldSetup, fold_ids: np.ndarray, is_r: np.ndarray) -> Hits:
    """Voxels with ``t > u`` in the map of every fold of ``fold_ids`` under every labelling.

    Parameters
    ----------
    setup : FoldSetup
    fold_ids : numpy.ndarray
        ``(F,)`` folds (left-out participants).
    is_r : numpy.ndarray
        ``(B, n)`` bool labellings.

    Returns
    -------
    Hits
        Map ``k * B + b`` is fold ``fold_ids[k]`` under labelling ``b``.
    """
    fold_ids = np.asarray(fold_ids)
    n_labels = len(is_r)
    g, c, norm, usable = fold_scalars(setup, fold_ids, is_r)
    # screening rows: g'E - min|x_i| * lowest bound + max|c_i| * max|E_i| > 0 for a possible hit
    # (the bound term loosened by 1e-5, well above the float32 rounding of the product)
    slack = np.column_stack([
        -(1 - 1e-5) * np.where(usable, norm, np.inf).min(axis=1),
        np.where(usable, np.abs(c), 0).max(axis=1),
    ])  # fmt: skip
    slack[~usable.any(axis=1)] = (-1.0, 0.0)
    design = np.hstack([g, slack]).astype(np.float32)
    stacked = np.vstack([setup.resid, setup.screen])
    n_vox = setup.resid.shape[1]
    width = min(max(_BLOCK // max(n_labels, 1), 256), n_vox)
    maps, voxels, values = [], [], []
    for start in range(0, n_vox, width):
        stop = min(start + width, n_vox)
        labelling, column = np.nonzero(design @ stacked[:, start:stop] > 0)
        if not column.size:
            continue
        column += start
        product = np.einsum("mj,jm->m", g[labelling], setup.resid[:, column])
        resid = setup.resid[np.ix_(fold_ids, column)].T  # (m, F) E_i of each candidate
        numerator = product[:, None] + c[labelling] * resid
        bound = norm[labelling] * setup.bounds[np.ix_(fold_ids, column)].T
        hit, fold = np.nonzero((numerator > bound) & usable[labelling])
        maps.append(fold * n_labels + labelling[hit])
        voxels.append(column[hit])
        scale = norm[labelling[hit], fold] * setup.rss_root[fold_ids[fold], column[hit]]
        values.append(numerator[hit, fold] / scale)
    if not maps:
        return Hits(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    return Hits(np.concatenate(maps), np.concatenate(voxels), np.concatenate(values))


def dense_t(setup: FoldSetup, folds: np.ndarray, is_r: np.ndarray) -> np.ndarray:
    """Full t maps ``(m, V)`` float32 of the given maps (for TFCE; memory ``m x V``)."""
    design = regressors(setup, folds, is_r).astype(np.float32)
    b = design @ setup.resid
    with np.errstate(divide="ignore", invalid="ignore"):
        b /= setup.rss_root[folds].astype(np.float32)
    b[~np.isfinite(b) | (setup.rss_root[folds] == 0)] = 0.0
    return (np.sqrt(setup.dof) * b / np.sqrt(np.maximum(1.0 - b * b, 1e-30))).astype(np.float32)


@dataclass(frozen=True)
class Clusters:
    """Connected clusters of the supra-threshold voxels of a set of maps.

    ``label``: cluster of each entry of the :class:`Hits`; ``owner``: map of each cluster;
    ``size``: voxels of each cluster.
    """

    label: np.ndarray
    owner: np.ndarray
    size: np.ndarray


def cluster(setup: FoldSetup, hits: Hits) -> Clusters:
    """Label the 18-connected clusters of every map's supra-threshold voxels in one pass."""
    keys = hits.maps.astype(np.int64) * setup.grid.n_pad + setup.grid.index[hits.voxels]
    order = np.argsort(keys, kind="stable")
    label = np.empty(keys.size, np.int64)
    label[order] = connected_keys(keys[order], setup.grid)
    n_clusters = int(label.max(initial=-1)) + 1
    owner = np.zeros(n_clusters, np.int64)
    owner[label] = hits.maps
    return Clusters(label, owner, np.bincount(label, minlength=n_clusters))


def max_size(clusters: Clusters, n_maps: int) -> np.ndarray:
    """Largest cluster of each map (0 without any supra-threshold voxel)."""
    out = np.zeros(n_maps, np.int64)
    np.maximum.at(out, clusters.owner, clusters.size)
    return out


@dataclass(frozen=True)
class Regions:
    """The surviving region of each map: its means, cluster count and voxels.

    ``means``: ``(m, n)`` float64 every participant's mean Fisher z in the map's region (NaN rows
    for a map without region); ``n_clusters``, ``size``: ``(m,)`` surviving clusters and voxels;
    ``members``: ``(m, V)`` sparse boolean region of each map.
    """

    means: np.ndarray
    n_clusters: np.ndarray
    size: np.ndarray
    members: sparse.csr_matrix


def region_means(
    setup: FoldSetup, n_maps: int, maps: np.ndarray, voxels: np.ndarray, n_clusters: np.ndarray
) -> Regions:
    """Every participant's mean in the region of each map (the union of its surviving voxels)."""
    members = sparse.csr_matrix(
        (np.ones(maps.size, np.float32), (maps, voxels)), shape=(n_maps, setup.data.shape[1])
    )
    size = np.asarray(members.sum(axis=1)).ravel()
    sums = np.asarray(members @ setup.data_t, dtype=np.float64)
    means = np.full((n_maps, setup.n), np.nan)
    has = size > 0
    means[has] = sums[has] / size[has, None]
    return Regions(means, n_clusters, size.astype(np.int64), members)
