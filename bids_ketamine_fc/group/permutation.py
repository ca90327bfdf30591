"""Permutation inference for the second-level GLM: cluster size, cluster mass and TFCE (FWE).

Model and permutations
    For a contrast ``c`` of the design ``X`` the nuisance part is ``X`` times the null space of
    ``c'`` (for a contrast of one column: the columns it gives 0 weight; for the cell-means design
    ``[R, NR, age]`` and ``[1, -1, 0]``: an intercept and age). Following Freedman & Lane (1983),
    as PALM and FSL randomise do, the residuals of the nuisance-only model are permuted, its fit is
    added back and the full model is refitted. When the nuisance is only the intercept this is the
    plain exchange of group labels. Subjects are exchangeable; ``n_permutations`` includes the
    identity first (as PALM), the others are drawn at random with ``numpy.random.default_rng``.
    One set of permutations serves every contrast, and a contrast and its negation (``RgtNR`` and
    ``NRgtR``) are the two tails of the same permuted t maps.
Statistics
    Voxels with ``t > height_threshold`` (one-sided) form clusters, 18-connected by default as SPM
    (6 as nilearn; 26 as FSL); cluster mass is the sum of ``t - height_threshold`` over the
    cluster, as nilearn's ``non_parametric_inference``. Each permutation contributes the largest
    cluster size and mass of the map (0 when no voxel survives) to the null distributions; TFCE
    (:mod:`bids_ketamine_fc.group.tfce`) contributes the map's largest TFCE value.
Speed (why this is hand-written rather than nilearn's ``permuted_ols``, 50 ms a permutation)
    The data are residualised and scaled to unit norm once, so that a voxel's t under a
    permutation is a function of its dot products with the permuted regressor (and permuted
    nuisance columns): a batch of permutations is one float32 matrix product, thresholded on the
    correlation scale, and only the few hundred supra-threshold voxels per permutation are
    labelled (:func:`~.sparse_clusters.group_maxima`), a batch at once. Batches run on ``n_jobs`` threads.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from bids_ketamine_fc.group.sparse_clusters import (
    SparseGrid,
    group_maxima,
    half_offsets,
    neighbour_table,
    observed_clusters,
    sparse_grid,
)
from bids_ketamine_fc.group.tfce import tfce_map, tfce_maxima

#: Permutations per batch, float32 values of one product block (16 MB), of the t maps kept for
#: TFCE per batch, and of the maps swept together by :func:`~.tfce.tfce_maxima`.
_BATCH, _BLOCK, _TFCE_MAPS, _TFCE_VALUES = 256, 1 << 22, 1 << 22, 1 << 20
_RANK_TOL = 1e-10


@dataclass(frozen=True)
class PermutationResult:
    """Permutation inference for one one-sided contrast.

    Attributes
    ----------
    t : numpy.ndarray
        ``(n_voxels,)`` float64 observed t map.
    df : int
        Residual degrees of freedom.
    height_threshold : float
        Cluster-forming threshold (t).
    connectivity : int
        6, 18 or 26.
    cluster_labels : numpy.ndarray
        ``(n_voxels,)`` int32 observed clusters ``1..n`` by decreasing peak t, 0 elsewhere.
    cluster_sizes, cluster_masses : numpy.ndarray
        ``(n,)`` size (voxels) and mass (sum of ``t - height_threshold``) of clusters ``1..n``.
    max_size_null, max_mass_null : numpy.ndarray
        ``(n_permutations,)`` largest cluster size / mass of each permutation, identity first.
    tfce_obs, tfce_p_fwe, max_tfce_null : numpy.ndarray or None
        Observed TFCE, its voxel-wise FWE p value and the maximum-TFCE null (``tfce=True``).
    """

    t: np.ndarray
    df: int
    height_threshold: float
    connectivity: int
    cluster_labels: np.ndarray
    cluster_sizes: np.ndarray
    cluster_masses: np.ndarray
    max_size_null: np.ndarray
    max_mass_null: np.ndarray
    tfce_obs: np.ndarray | None = None
    tfce_p_fwe: np.ndarray | None = None
    max_tfce_null: np.ndarray | None = None

    @property
    def cluster_p_fwe_size(self) -> np.ndarray:
        """FWE p value of each observed cluster from the maximum-size null."""
        return cluster_p_fwe(self.cluster_sizes, self.max_size_null)

    @property
    def cluster_p_fwe_mass(self) -> np.ndarray:
        """FWE p value of each observed cluster from the maximum-mass null."""
        return cluster_p_fwe(self.cluster_masses, self.max_mass_null)


def cluster_p_fwe(observed_values: np.ndarray, null_max: np.ndarray) -> np.ndarray:
    """Family-wise error p value of observed values against a null of maxima.

    ``p = #{k : null_max[k] >= value} / len(null_max)`` where ``null_max`` holds the identity
    permutation first (PALM's convention). As the identity's maximum is at least every observed
    value this is the usual ``(1 + #{random permutations >= value}) / (1 + n_random)`` (nilearn's
    voxel-level form; its cluster-level p leaves out the 1s). The smallest p is
    ``1 / n_permutations``.

    Parameters
    ----------
    observed_values : numpy.ndarray
        Cluster sizes, masses or voxel TFCE values.
    null_max : numpy.ndarray
        ``(n_permutations,)`` maxima, identity included.

    Returns
    -------
    numpy.ndarray
        float64 p values shaped as ``observed_values``.
    """
    null = np.sort(np.asarray(null_max, dtype=np.float64).ravel())
    if null.size == 0:
        raise ValueError("null_max is empty.")
    values = np.asarray(observed_values, dtype=np.float64)
    below = np.searchsorted(null, values, side="left")
    return (null.size - below) / null.size


def permutations(n_subjects: int, n_permutations: int, random_seed: int | None) -> np.ndarray:
    """Return the permutations used: row 0 is the identity, the others uniform at random.

    Row ``k`` is the order in which the permuted regressors read the subjects (the data rows
    are permuted by its inverse); drawn with replacement, as PALM does when ``n!`` is large.

    Parameters
    ----------
    n_subjects, n_permutations : int
    random_seed : int or None
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray
        ``(n_permutations, n_subjects)`` int64.
    """
    rng = np.random.default_rng(random_seed)
    table = np.tile(np.arange(n_subjects), (n_permutations, 1))
    table[1:] = rng.permuted(table[1:], axis=1)
    return table


@dataclass(frozen=True)
class _Family:
    """A contrast direction and its Freedman-Lane pieces (shared by ``c`` and ``-c``)."""

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


def _family(Y: np.ndarray, X: np.ndarray, contrast: np.ndarray) -> _Family:
    """Partition the design for ``contrast`` and residualise the data (float64, then float32)."""
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
    return _Family(x, varying, resid.astype(np.float32), t, int(df))


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


def _batch(perms, fam: _Family, geo: SparseGrid, u: float, tails: tuple[bool, bool], tfce):
    """Null maxima of one batch of permutations: ``(2, n_stats, len(perms))``, tails first."""
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


class _Progress:
    """Progress on standard error: a tqdm bar when tqdm is installed, else a counter line."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.bar = total, 0, enabled, None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="permutations", unit="perm", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        """Count ``n`` more permutations done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            end = "\n" if self.done >= self.total else ""
            print(f"\rpermutations: {self.done}/{self.total}", end=end, file=sys.stderr)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def _check_inputs(Y, X, contrasts, mask, height_threshold, n_permutations, connectivity):
    """Validate the arguments of :func:`permutation_test`; return float arrays."""
    Y, X, mask = np.asarray(Y), np.asarray(X, dtype=np.float64), np.asarray(mask, dtype=bool)
    if Y.ndim != 2 or X.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"Y {Y.shape} and X {X.shape} must be 2D with one row per subject.")
    if mask.ndim != 3 or int(mask.sum()) != Y.shape[1]:
        raise ValueError(f"mask must be 3D with {Y.shape[1]} true voxels (one per column of Y).")
    if not np.isfinite(Y).all() or not np.isfinite(X).all():
        raise ValueError("Y and X must be finite (remove invalid voxels from the mask).")
    if not contrasts:
        raise ValueError("contrasts is empty.")
    for name, vector in contrasts.items():
        if np.shape(vector) != (X.shape[1],) or not np.any(vector):
            raise ValueError(f"Contrast {name!r} must be a non-zero vector of {X.shape[1]} values.")
    if not (np.isfinite(height_threshold) and height_threshold > 0):
        raise ValueError(f"height_threshold must be a positive t value; got {height_threshold}.")
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be at least 1; got {n_permutations}.")
    half_offsets(connectivity)  # raises for a bad connectivity
    return Y, X, mask


def _group_contrasts(contrasts: dict) -> list[tuple[np.ndarray, dict[str, int]]]:
    """Group contrasts by direction: ``[(unit vector, {name: tail 0 (+) or 1 (-)}), ...]``."""
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


def _run_family(fam, perms, geo, u, tails, tfce, n_jobs, progress) -> np.ndarray:
    """Null maxima ``(2, n_stats, len(perms))`` for one contrast family, batches on threads."""
    size = max(_TFCE_MAPS // fam.data.shape[1], 1) if tfce else _BATCH
    starts = list(range(0, len(perms), size))
    out = np.zeros((2, 3 if tfce else 2, len(perms)))
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = {
            pool.submit(_batch, perms[s : s + size], fam, geo, u, tails, tfce): s for s in starts
        }
        for future in as_completed(futures):
            start = futures[future]
            result = future.result()
            out[:, :, start : start + result.shape[2]] = result
            progress.update(result.shape[2])
    return out


def permutation_test(
    Y: np.ndarray,
    X: np.ndarray,
    contrasts: dict[str, np.ndarray],
    mask: np.ndarray,
    height_threshold: float,
    n_permutations: int = 5000,
    random_seed: int | None = None,
    tfce: bool = False,
    tfce_E: float = 0.5,
    tfce_H: float = 2.0,
    tfce_dh: float | str = "auto",
    n_jobs: int = 1,
    progress: bool = True,
    connectivity: int = 18,
) -> dict[str, PermutationResult]:
    """Cluster-size, cluster-mass (and TFCE) FWE inference by permutation (Freedman-Lane).

    Parameters
    ----------
    Y : numpy.ndarray
        ``(n_subjects, n_voxels)`` data; column ``k`` is voxel
        ``numpy.flatnonzero(mask.ravel(order="F"))[k]``.
    X : numpy.ndarray
        ``(n_subjects, p)`` full-rank design (e.g. ``[R, NR, covariates]``).
    contrasts : dict
        Name to ``(p,)`` contrast vector; each is tested one-sided (``t > height_threshold``).
    mask : numpy.ndarray
        3D boolean mask, ``mask.sum() == n_voxels``.
    height_threshold : float
        Cluster-forming threshold on the t scale (positive).
    n_permutations : int, default=5000
        Permutations including the identity.
    random_seed : int or None
        Seed of ``numpy.random.default_rng``; results do not depend on ``n_jobs``.
    tfce : bool, default=False
        Also compute TFCE and its voxel-wise FWE p values.
    tfce_E, tfce_H, tfce_dh : float, float, float or "auto"
        TFCE extent and height exponents and height step (:mod:`~.tfce`).
    n_jobs : int, default=1
        Threads (-1: all cores).
    progress : bool, default=True
        Show progress on standard error.
    connectivity : int, default=18
        Cluster connectivity: 6, 18 (SPM) or 26.

    Returns
    -------
    dict
        Contrast name to :class:`PermutationResult`.
    """
    Y, X, mask = _check_inputs(
        Y, X, contrasts, mask, height_threshold, n_permutations, connectivity
    )
    u, n_perm = float(height_threshold), int(n_permutations)
    perms = permutations(X.shape[0], n_perm, random_seed)[1:]
    geo = sparse_grid(mask, connectivity)
    table = neighbour_table(mask, connectivity) if tfce else None
    tfce_args = (table, tfce_E, tfce_H, tfce_dh) if tfce else None
    n_jobs = (os.cpu_count() or 1) if n_jobs == -1 else max(int(n_jobs), 1)
    families = _group_contrasts(contrasts)
    bar = _Progress((n_perm - 1) * len(families), progress)
    results = {}
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limits = nullcontext()
    try:
        with limits:
            for direction, members in families:
                fam = _family(Y, X, direction)
                tails = (0 in members.values(), 1 in members.values())
                null = _run_family(fam, perms, geo, u, tails, tfce_args, n_jobs, bar)
                for name, tail in members.items():
                    results[name] = _result(fam, null[tail], (-1.0) ** tail, u, geo, tfce_args)
    finally:
        bar.close()
    return {name: results[name] for name in contrasts}


def _result(fam: _Family, null: np.ndarray, sign: float, u, geo, tfce_args) -> PermutationResult:
    """Observed clusters of one tail; identity maxima prepended to the null distributions."""
    t = sign * fam.t
    labels, sizes, masses = observed_clusters(t, u, geo)
    extra = {}
    if tfce_args is not None:
        table, E, H, dh = tfce_args
        observed = tfce_map(t, table, E, H, dh)
        max_null = np.concatenate([[observed.max(initial=0.0)], null[2]])
        extra = dict(tfce_obs=observed, tfce_p_fwe=cluster_p_fwe(observed, max_null))
        extra["max_tfce_null"] = max_null
    return PermutationResult(
        t=t,
        df=fam.df,
        height_threshold=u,
        connectivity=geo.connectivity,
        cluster_labels=labels,
        cluster_sizes=sizes,
        cluster_masses=masses,
        max_size_null=np.concatenate([[sizes.max(initial=0)], null[0]]).astype(np.int64),
        max_mass_null=np.concatenate([[masses.max(initial=0.0)], null[1]]),
        **extra,
    )
