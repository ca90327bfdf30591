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
    ``NRgtR``) are the two tails of the same permuted t maps. When the distinct relabellings are
    fewer than ``n_permutations`` (20 for two groups of three without covariates) every one is
    used once instead (:mod:`.relabel`), and the result says so (``exhaustive``).
Statistics
    Voxels with ``t > height_threshold`` (one-sided) form clusters, 18-connected by default as SPM
    (6 as nilearn; 26 as FSL); cluster mass is the sum of ``t - height_threshold`` over the
    cluster, as nilearn's ``non_parametric_inference``. Each permutation contributes the largest
    cluster size and mass of the map (0 when no voxel survives) to the null distributions; TFCE
    (:mod:`bids_ketamine_fc.group.inference.tfce`) contributes the map's largest TFCE value.
Speed
    The permuted t maps are computed a batch at a time as one float32 matrix product on
    residualised, unit-norm data (:mod:`.permutation_glm`, which also partitions the design and
    says why this is hand-written rather than nilearn's ``permuted_ols``);
    batches run on ``n_jobs`` threads.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from bids_ketamine_fc.group.inference import relabel
from bids_ketamine_fc.group.inference.freedman_lane import (
    Family,
    batch_maxima,
    design_family,
    group_contrasts,
)
from bids_ketamine_fc.group.inference.sparse_clusters import (
    half_offsets,
    neighbour_table,
    observed_clusters,
    sparse_grid,
)
from bids_ketamine_fc.group.inference.tfce import tfce_map
from bids_ketamine_fc.utils.progress import progress_bar

#: Permutations per batch, and float32 values of the t maps kept for TFCE per batch.
_BATCH, _TFCE_MAPS = 256, 1 << 22


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
    exhaustive : bool
        Every distinct relabelling was used once (:func:`~.relabel.relabellings`): fewer
        exist than ``n_permutations`` asked for, and the test is exact.
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
    exhaustive: bool = False

    @property
    def n_permutations(self) -> int:
        """Relabellings used, the identity included (fewer than asked when ``exhaustive``)."""
        return int(self.max_size_null.size)

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


def _run_family(fam, perms, geo, u, tails, tfce, n_jobs, progress) -> np.ndarray:
    """Null maxima ``(2, n_stats, len(perms))`` for one contrast family, batches on threads."""
    size = max(_TFCE_MAPS // fam.data.shape[1], 1) if tfce else _BATCH
    starts = list(range(0, len(perms), size))
    out = np.zeros((2, 3 if tfce else 2, len(perms)))
    pool = ThreadPoolExecutor(max_workers=n_jobs)
    try:
        futures = {
            pool.submit(batch_maxima, perms[s : s + size], fam, geo, u, tails, tfce): s
            for s in starts
        }
        for future in as_completed(futures):
            start = futures[future]
            result = future.result()
            out[:, :, start : start + result.shape[2]] = result
            progress.update(result.shape[2])
    finally:  # on Ctrl-C, the batches not started are dropped instead of awaited
        pool.shutdown(wait=True, cancel_futures=True)
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
    label: str = "permutations",
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
        Show a progress bar with the time left on standard error (on a terminal only).
    connectivity : int, default=18
        Cluster connectivity: 6, 18 (SPM) or 26.
    label : str
        What the progress bar says.

    Returns
    -------
    dict
        Contrast name to :class:`PermutationResult`.
    """
    Y, X, mask = _check_inputs(
        Y, X, contrasts, mask, height_threshold, n_permutations, connectivity
    )
    u, n_perm = float(height_threshold), int(n_permutations)
    drawn = permutations(X.shape[0], n_perm, random_seed)[1:]
    geo = sparse_grid(mask, connectivity)
    table = neighbour_table(mask, connectivity) if tfce else None
    tfce_args = (table, tfce_E, tfce_H, tfce_dh) if tfce else None
    n_jobs = (os.cpu_count() or 1) if n_jobs == -1 else max(int(n_jobs), 1)
    families = group_contrasts(contrasts)
    bar = progress_bar((n_perm - 1) * len(families), label, "perm", enabled=progress)
    results = {}
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limits = nullcontext()
    try:
        with limits:
            for direction, members in families:
                fam = design_family(Y, X, direction)
                tails = (0 in members.values(), 1 in members.values())
                perms, exhaustive = _family_orders(fam, n_perm, drawn)
                null = _run_family(fam, perms, geo, u, tails, tfce_args, n_jobs, bar)
                for name, tail in members.items():
                    found = _result(fam, null[tail], (-1.0) ** tail, u, geo, tfce_args)
                    results[name] = dataclasses.replace(found, exhaustive=exhaustive)
    finally:
        bar.close()
    return {name: results[name] for name in contrasts}


def _family_orders(fam: Family, n_perm: int, drawn: np.ndarray) -> tuple[np.ndarray, bool]:
    """Non-identity orders of one family: every distinct one when fewer than ``n_perm`` exist.

    The permuted t maps depend on the order only through the rows of the tested regressor and
    the varying nuisance (:func:`~.relabel.relabellings`); otherwise the ``drawn`` orders.
    """
    rows = np.column_stack([fam.x, fam.nuisance]).round(12)
    if relabel.count_distinct(rows) > n_perm:
        return drawn, False
    orders, _ = relabel.relabellings(rows, n_perm, np.random.default_rng(0))
    return orders[1:], True


def _result(fam: Family, null: np.ndarray, sign: float, u, geo, tfce_args) -> PermutationResult:
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
