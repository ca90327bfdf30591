"""Freedman-Lane design partition and batched permuted t maps for :mod:`.permutation`.

Model
    For a contrast ``c`` of the design ``X`` the nuisance part is ``X`` times the null space of
    ``c'`` (for a contrast of one column: the columns it gives 0 weight; for the cell-means design
    ``[R, NR, age]`` and ``[1, -1, 0]``: an intercept and age). Following Freedman & Lane (1983),
    as PALM and FSL randomise do, the residuals of the nuisance-only model are permuted, its fit is
    added back and the full model is refitted. :func:`design_family` computes the pieces once per
    contrast direction (:func:`group_contrasts`: a contrast and its negation share them).
Computation (why this is hand-written rather than nilearn's ``permuted_ols``, 50 ms a permutation)
    The data are residualised and scaled to unit norm once, so that a voxel's t under a
    permutation is a function of its dot products with the permuted regressor (and permuted
    nuisance columns): a batch of permutations is one float32 matrix product, thresholded on the
    correlation scale, and only the few hundred supra-threshold voxels per permutation are
    labelled (:func:`~.sparse_clusters.group_maxima`), a batch at once
    (:func:`batch_maxima`). Each batch uses per-thread scratch buffers, so batches may run on
    threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from bids_ketamine_fc.group.inference.sparse_clusters import SparseGrid, group_maxima
from bids_ketamine_fc.group.inference.tfce import tfce_maxima

#: Float32 values of one product block (16 MB) and of the maps swept together by
#: :func:`~.tfce.tfce_maxima`.
_BLOCK, _TFCE_VALUES = 1 << 22, 1 << 20
_RANK_TOL = 1e-10


@dataclass(frozen=True)
class Family:
    """A contrast direction and its Freedman-Lane pieces (shared by ``c`` and ``-c``).

    Attributes
    ----------
    x : numpy.ndarray
        ``(n,)`` regressor of interest, residualised on the nuisance, unit norm.
    nuisance : numpy.ndarray
        ``(n, q)`` orthonormal nuisance columns that permutation changes (not the constant).
    data : numpy.ndarray
        ``(n, V)`` float32 data residualised on the nuisance, unit-norm columns (0 if constant).
    t : numpy.ndarray
        ``(V,)`` float64 observed t of ``x``.
    df : int
        Residual degrees of freedom of the full model.
    """

    x: np.ndarray  # (n,) residualised regressor of interest, unit norm
    nuisance: np.ndarray  # (n, q) orthonormal nuisance columns not invariant to permutation
    data: np.ndarray  # (n, V) float32 residualised data, unit-norm columns
    t: np.ndarray  # (V,) float64 observed t
    df: int


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space (SVD, relative rank tolerance)."""
    if matrix.shape[1] == 0:
        return np.zeros((matrix.shape[0], 0))
    u, s, _ = linalg.svd(matrix, full_matrices=False)
    return u[:, s > _RANK_TOL * max(s.max(initial=0.0), 1.0)]


def design_family(Y: np.ndarray, X: np.ndarray, contrast: np.ndarray) -> Family:
    """Partition the design for ``contrast`` and residualise the data (float64, then float32).

    Parameters
    ----------
    Y : numpy.ndarray
        ``(n_subjects, n_voxels)`` finite data.
    X : numpy.ndarray
        ``(n_subjects, p)`` full-rank design.
    contrast : numpy.ndarray
        ``(p,)`` contrast vector (its sign and scale do not change the family but for ``t``).

    Returns
    -------
    Family
        The Freedman-Lane pieces and the observed t map of ``contrast``.

    Raises
    ------
    ValueError
        Rank-deficient design, no residual degrees of freedom or a constant tested regressor.
    """
    n, p = X.shape
    df = n - np.linalg.matrix_rank(X)
    if np.linalg.matrix_rank(X) < p or df < 1:
        raise ValueError(f"Design of shape {X.shape} is rank deficient or leaves no residual df.")
    nuisance = X @ linalg.null_space(contrast[None, :])
    ones = np.full((n, 1), 1 / np.sqrt(n))
    fit = nuisance @ np.linalg.lstsq(nuisance, ones, rcond=None)[0] if nuisance.size else 0 * ones
    if np.allclose(fit, ones, atol=1e-8):
        # the constant is unchanged by permutation: its term in the refit is always zero
        varying = _orthonormal(nuisance - ones @ (ones.T @ nuisance))
        basis = np.hstack([ones, varying])
    else:
        varying = basis = _orthonormal(nuisance)
    x = X @ contrast / (contrast @ contrast)
    if np.ptp(x) < 1e-12 * np.abs(x).max():
        raise ValueError("The tested regressor is constant: permuting subjects cannot test it.")
    x = x - basis @ (basis.T @ x)
    x /= np.linalg.norm(x)
    Y = Y.astype(np.float64)
    resid = Y - basis @ (basis.T @ Y)
    norm = np.linalg.norm(resid, axis=0)
    scale = np.abs(Y).max(axis=0, initial=0.0) * np.sqrt(n)
    valid = norm > 1e-6 * np.maximum(scale, np.finfo(np.float32).tiny)
    resid[:, valid] /= norm[valid]
    resid[:, ~valid] = 0.0
    r = x @ resid
    t = np.sqrt(df) * r / np.sqrt(np.maximum(1.0 - r * r, 1e-300))
    return Family(x, varying, resid.astype(np.float32), t, int(df))


_SCRATCH = threading.local()


def _scratch(n_values: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-thread float32 product and score buffers and a boolean buffer (reused across calls)."""
    cached = getattr(_SCRATCH, "buffers", None)
    if cached is None or cached[0].size < n_values:
        cached = (np.empty(n_values, np.float32), np.empty(n_values, np.float32))
        cached += (np.empty(n_values, bool),)
        _SCRATCH.buffers = cached
    return cached


def _scan(block: np.ndarray, n_rows: int, kappa: float, scratch, tmap) -> tuple:
    """Supra-threshold entries of one product block: flat positions, ``b`` and ``sum(a**2)``.

    ``block`` holds ``b`` (rows ``:n_rows``) then each permuted nuisance column's products;
    ``t > u`` on either tail is ``kappa * b**2 + sum(a**2) > 1``. When ``tmap`` is given it
    receives ``t / sqrt(df) = b / sqrt(1 - b**2 - sum(a**2))``.
    """
    b = block[:n_rows]
    score = scratch[1][: b.size].reshape(b.shape)
    flag = scratch[2][: b.size].reshape(b.shape)
    n_extra = block.shape[0] // n_rows - 1
    if n_extra == 0:  # no covariate: |b| > 1 / sqrt(kappa), two passes over the block
        bound = np.float32(1.0 / np.sqrt(kappa))
        hit = np.flatnonzero(np.greater(np.abs(b, out=score), bound, out=flag))
        if tmap is not None:
            np.subtract(1.0, np.multiply(b, b, out=tmap), out=tmap)
        value, others = b.ravel()[hit], np.zeros(hit.size, np.float32)
    else:
        np.multiply(b, b, out=score)
        score *= kappa
        for j in range(1, n_extra + 1):
            extra = block[n_rows * j : n_rows * (j + 1)]
            score += np.square(extra, out=extra)
        hit = np.flatnonzero(np.greater(score, 1.0, out=flag))
        value = b.ravel()[hit]
        others = score.ravel()[hit] - kappa * value * value
        if tmap is not None:  # 1 - b**2 - sum(a**2) = 1 - score + (kappa - 1) * b**2
            np.multiply(b, b, out=tmap)
            tmap *= kappa - 1.0
            tmap += 1.0
            tmap -= score
    if tmap is not None:
        np.sqrt(np.maximum(tmap, 1e-30, out=tmap), out=tmap)
        np.divide(b, tmap, out=tmap)
    return hit, value, others


def batch_maxima(perms, fam: Family, geo: SparseGrid, u: float, tails: tuple[bool, bool], tfce):
    """Null maxima of one batch of permutations, for both tails of a family.

    Parameters
    ----------
    perms : numpy.ndarray
        ``(n_rows, n_subjects)`` permutations (rows of :func:`~.permutation.permutations`).
    fam : Family
        From :func:`design_family`.
    geo : SparseGrid
        Mask geometry (:func:`~.sparse_clusters.sparse_grid`).
    u : float
        Cluster-forming t threshold.
    tails : tuple of bool
        Whether the positive and the negative tail are needed (an unneeded one stays 0).
    tfce : tuple or None
        ``(neighbour table, E, H, dh)`` to also compute the largest TFCE of each map.

    Returns
    -------
    numpy.ndarray
        ``(2, n_stats, n_rows)``: tail, then largest cluster size, mass (and TFCE).
    """
    n_rows, q, n_vox = len(perms), fam.nuisance.shape[1], fam.data.shape[1]
    design = np.concatenate([fam.x[perms]] + [fam.nuisance[perms, j] for j in range(q)])
    design = design.astype(np.float32)
    width = min(max(_BLOCK // design.shape[0], 1024), n_vox)
    scratch = _scratch(design.shape[0] * width)
    kappa = (fam.df + u * u) / (u * u)  # t > u  <=>  kappa * b**2 + sum(a**2) > 1 and b > 0
    tmaps = np.empty((n_rows, n_vox), np.float32) if tfce else None
    keys, excess = [], []
    for start in range(0, n_vox, width):
        stop = min(start + width, n_vox)
        block = scratch[0][: design.shape[0] * (stop - start)].reshape(design.shape[0], -1)
        np.matmul(design, fam.data[:, start:stop], out=block)
        tmap = tmaps[:, start:stop] if tfce else None
        hit, value, others = _scan(block, n_rows, kappa, scratch, tmap)
        if not (tails[0] and tails[1]):
            keep = np.flatnonzero(value > 0 if tails[0] else value < 0)
            hit, value, others = hit[keep], value[keep], others[keep]
        resid = np.maximum(1.0 - others - value * value, 1e-30)
        row, col = np.divmod(hit, stop - start)
        keys.append((row + n_rows * (value < 0)) * geo.n_pad + geo.index[col + start])
        excess.append(np.sqrt(fam.df) * np.abs(value) / np.sqrt(resid) - u)
    sizes, masses = group_maxima(np.concatenate(keys), np.concatenate(excess), geo, 2 * n_rows)
    stats = [sizes.reshape(2, n_rows), masses.reshape(2, n_rows)]
    if tfce:
        tmaps *= np.float32(np.sqrt(fam.df))
        stats.append(_tfce_null(tmaps, tails, tfce))
    return np.stack(stats, axis=1)


def _tfce_null(tmaps: np.ndarray, tails: tuple[bool, bool], tfce) -> np.ndarray:
    """Largest TFCE of each permuted t map, for each tail: ``(2, n_maps)``."""
    per_sweep = max(_TFCE_VALUES // tmaps.shape[1], 1)
    out = np.zeros((2, tmaps.shape[0]))
    for tail, sign in ((0, 1.0), (1, -1.0)):
        for s in range(0, tmaps.shape[0], per_sweep) if tails[tail] else ():
            out[tail, s : s + per_sweep] = tfce_maxima(sign * tmaps[s : s + per_sweep], *tfce)
    return out


def group_contrasts(contrasts: dict) -> list[tuple[np.ndarray, dict[str, int]]]:
    """Group contrasts by direction, so that ``c`` and ``-c`` share one set of permuted maps.

    Parameters
    ----------
    contrasts : dict
        Name to non-zero contrast vector.

    Returns
    -------
    list of tuple
        ``[(unit vector, {name: tail 0 (same sign) or 1 (opposite)}), ...]`` in first-seen order.
    """
    families: list[tuple[np.ndarray, dict[str, int]]] = []
    for name, vector in contrasts.items():
        unit = np.asarray(vector, dtype=np.float64) / np.linalg.norm(vector)
        for direction, members in families:
            if np.allclose(unit, direction) or np.allclose(unit, -direction):
                members[name] = 0 if np.allclose(unit, direction) else 1
                break
        else:
            families.append((unit, {name: 0}))
    return families
