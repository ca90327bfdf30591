"""CONN's hrf-weighted first level, on the coefficients of the cleaned series.

With weights ``w`` (the ``Effect of rest``), CONN's first level correlates ``w (x - m_x)`` and
``w (y - m_y)``, ``m`` the weighted mean ``sum(w x) / sum(w)`` over the concatenated runs
(``conn_process.m`` lines 2277-2288 and 2384-2408 of CONN 20.a). The cleaning operator's output
is ``w x`` (not centred), represented by coefficients ``c`` on an orthonormal basis ``U``; the
sums ``sum(w x) = (U^T 1) . c`` and ``sum(w^2 x) = (U^T w) . c`` are linear in ``c``, add up
across runs, and remove the mean exactly:

    sum w^2 (x - m_x)(y - m_y) = sum w^2 x y - (Sx Ry + Sy Rx) / W + Sx Sy W2 / W^2

with ``S = sum(w x)``, ``R = sum(w^2 x)``, ``W = sum(w)``, ``W2 = sum(w^2)``.
"""

from __future__ import annotations

import numpy as np


def weighted_sums(
    basis: np.ndarray, weights: np.ndarray, voxel_coef: np.ndarray, seed_coef: np.ndarray
) -> dict:
    """Return the sums of ``w x`` and ``w^2 x`` of every voxel and seed, and of ``w`` and ``w^2``.

    Parameters
    ----------
    basis : numpy.ndarray (T, k)
        The operator's orthonormal basis.
    weights : numpy.ndarray (T,)
    voxel_coef : numpy.ndarray (k, n_voxels), float32
    seed_coef : numpy.ndarray (n_seeds, k)

    Returns
    -------
    dict
        ``voxel_sum``, ``voxel_wsum``, ``seed_sum``, ``seed_wsum``, ``weight_sum``, ``weight_sq``.
    """
    functionals = np.stack([basis.sum(axis=0), basis.T @ weights])
    voxel = (functionals.astype(np.float32) @ voxel_coef).astype(np.float64)
    seed = seed_coef @ functionals.T
    return {
        "voxel_sum": voxel[0],
        "voxel_wsum": voxel[1],
        "seed_sum": seed[:, 0],
        "seed_wsum": seed[:, 1],
        "weight_sum": float(weights.sum()),
        "weight_sq": float(weights @ weights),
    }


def remove_weighted_mean(
    cross, voxel_ss, seed_ss, voxel_sum, voxel_wsum, seed_sum, seed_wsum, total, squares
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the cross products and sums of squares with the weighted means removed."""
    cross = cross - (np.outer(seed_sum, voxel_wsum) + np.outer(seed_wsum, voxel_sum)) / total
    cross = cross + np.outer(seed_sum, voxel_sum) * squares / total**2
    voxel_ss = voxel_ss - 2 * voxel_sum * voxel_wsum / total + voxel_sum**2 * squares / total**2
    seed_ss = seed_ss - 2 * seed_sum * seed_wsum / total + seed_sum**2 * squares / total**2
    return cross, voxel_ss, seed_ss


def centre_coefficients(
    basis: np.ndarray, weights: np.ndarray, voxel_coef: np.ndarray, voxel_sum, weight_sum: float
) -> np.ndarray:
    """Return coefficients of ``w (x - m)``, one run's weighted mean removed, ``(k + 1, n)``.

    ``w`` is not in the operator's range, so one row is added for its part outside it; inner
    products of the result are the run's weighted covariances exactly.
    """
    inside = basis.T @ weights
    outside = np.sqrt(max(float(weights @ weights - inside @ inside), 0.0))
    means = (voxel_sum / weight_sum).astype(np.float32)
    # Row by row into one array: an outer product of (k, n_voxels) in float64, its float32 copy
    # and a stacked copy took 1.2 GB of fresh memory at 2 mm.
    out = np.empty((voxel_coef.shape[0] + 1, voxel_coef.shape[1]), dtype=np.float32)
    for row, (coef, shift) in enumerate(zip(voxel_coef, inside.astype(np.float32), strict=True)):
        np.subtract(coef, shift * means, out=out[row])
    np.multiply(means, np.float32(-outside), out=out[-1])
    return out


def centred_coefficients(corr, operator) -> np.ndarray:
    """Return a run's voxel coefficients with its (weighted) mean removed (group ICA input).

    Parameters
    ----------
    corr : SeedCorrelation
        The run's statistics (:func:`~bids_ketamine_fc.participant.connectivity.seed_correlation`).
    operator : CleaningOperator
        Its cleaning operator.

    Returns
    -------
    numpy.ndarray
        Unweighted operators are centred already: ``(k, n_voxels)`` as is; weighted ones give
        ``(k + 1, n_voxels)`` (:func:`centre_coefficients`).
    """
    if operator.weights is None or corr.voxel_sum is None:
        return corr.voxel_coef
    return centre_coefficients(
        operator.basis, operator.weights, corr.voxel_coef, corr.voxel_sum, corr.weight_sum
    )
