"""Brain-behaviour correlation: mean Fisher z in a cluster (or an ROI) against pain improvement.

Each participant's mean Fisher z in a region is correlated with the relative improvement
``(pre - post) / pre``: Pearson r with its p and 95 % Fisher interval (``scipy.stats.pearsonr``),
Spearman rho, a paired bootstrap interval of r (``scipy.stats.bootstrap``, BCa, 10 000
resamples, seeded), the partial r controlling for the covariates and r within R and within NR.

A cluster of the R vs NR contrast was chosen with groups made from the same improvement, so its r
is circular: on pure noise the selected clusters give large r. For such a region r, rho and the
partial r are kept as descriptions but their p values and intervals are not computed
(:data:`CIRCULAR_NA`, written n/a): they would assume a region chosen independently of the
improvement. The within-group r and p are kept: the region depends on the maps and the labels
only, and within a group the improvement carries no information about the maps when brain and
outcome are unrelated. The pre-specified test is the leave-one-out of
:mod:`~bids_ketamine_fc.group.behaviour.prediction`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from bids_ketamine_fc.exceptions import UserInputError

#: Fewest participants with a value and an improvement for a correlation.
MIN_PARTICIPANTS = 5
#: Fewest participants of a group for the within-group r.
MIN_PER_GROUP = 3
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_METHOD = "BCa"
CONFIDENCE = 0.95
#: Statistics left n/a for a circular region (chosen by the R vs NR contrast).
CIRCULAR_NA = ("p", "ci_low", "ci_high", "spearman_p", "boot_ci_low", "boot_ci_high", "partial_p")


def pearson(x: np.ndarray, y: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Pearson r, two-sided p and the Fisher-transform confidence interval of r.

    Returns
    -------
    dict
        ``r``, ``p``, ``ci_low``, ``ci_high`` (``scipy.stats.pearsonr``; the interval is
        ``tanh(atanh(r) -+ z_{(1+confidence)/2} / sqrt(n - 3))``).
    """
    result = stats.pearsonr(x, y)
    interval = result.confidence_interval(confidence)
    r, p = float(result.statistic), float(result.pvalue)
    return {"r": r, "p": p, "ci_low": float(interval.low), "ci_high": float(interval.high)}


def _r_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis`` (vectorised statistic for ``scipy.stats.bootstrap``)."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis) / np.sqrt((xc * xc).sum(axis) * (yc * yc).sum(axis))


def bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    method: str = BOOTSTRAP_METHOD,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Paired bootstrap interval ``(low, high)`` of Pearson r (``scipy.stats.bootstrap``).

    Participants are resampled with their pair of values, ``n_resamples`` times from ``rng``;
    ``method`` is ``"BCa"`` (bias-corrected and accelerated) or ``"percentile"``.
    """
    if method not in ("BCa", "percentile"):
        raise ValueError(f"Unknown bootstrap method {method!r}; expected 'BCa' or 'percentile'.")
    result = stats.bootstrap(
        (np.asarray(x, float), np.asarray(y, float)),
        _r_along,
        n_resamples=n_resamples,
        paired=True,
        vectorized=True,
        method=method,
        confidence_level=confidence,
        random_state=rng,  # scipy >= 1.11 (``rng`` only from 1.15)
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def partial_correlation(
    x: np.ndarray, y: np.ndarray, covariates: np.ndarray
) -> tuple[float, float]:
    """Partial r of ``x`` and ``y`` controlling for ``covariates``, and its two-sided p.

    Both are residualised on an intercept and the ``(n, k)`` covariates; r of the residuals is
    tested with ``t = r sqrt(dof / (1 - r^2))``, ``dof = n - 2 - k`` (as the t test of ``x`` in
    the regression of ``y`` on ``x`` and the covariates). NaN when ``k`` is 0.
    """
    covariates = np.asarray(covariates, dtype=float).reshape(len(x), -1)
    if covariates.shape[1] == 0:
        return float("nan"), float("nan")
    design = np.column_stack([np.ones(len(x)), covariates])
    both = np.column_stack([x, y]).astype(float)
    resid = both - design @ np.linalg.lstsq(design, both, rcond=None)[0]
    r = float(_r_along(resid[:, 0], resid[:, 1]))
    dof = len(x) - 2 - covariates.shape[1]
    if dof < 1 or not np.isfinite(r):
        return r, float("nan")
    t = r * np.sqrt(dof / max(1.0 - r * r, np.finfo(float).tiny))
    return r, float(2 * stats.t.sf(abs(t), dof))


def _within_groups(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    out = {}
    for group in ("R", "NR"):
        in_group = groups == group
        n = int(in_group.sum())
        r = p = np.nan
        if n >= MIN_PER_GROUP and np.ptp(x[in_group]) > 0 and np.ptp(y[in_group]) > 0:
            r, p = stats.pearsonr(x[in_group], y[in_group])
        out |= {f"n_{group}": n, f"r_{group}": float(r), f"p_{group}": float(p)}
    return out


def correlate(
    values: np.ndarray,
    improvement: np.ndarray,
    groups: np.ndarray,
    covariates: np.ndarray,
    rng: np.random.Generator,
    where: str = "correlation",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    method: str = BOOTSTRAP_METHOD,
    circular: bool = False,
) -> dict:
    """Every statistic of one region: Pearson, Spearman, bootstrap, partial and within-group r.

    Parameters
    ----------
    values, improvement : numpy.ndarray
        ``(n,)`` mean Fisher z and relative pain improvement per participant.
    groups : numpy.ndarray
        ``(n,)`` ``"R"``/``"NR"``.
    covariates : numpy.ndarray
        ``(n, k)`` covariates for the partial r (``k`` may be 0).
    rng : numpy.random.Generator
        For the bootstrap (:func:`bootstrap_ci`, with ``n_resamples`` and ``method``).
    where : str
        Names the region in error messages.
    circular : bool
        The region was chosen by the R vs NR contrast: the statistics of :data:`CIRCULAR_NA`
        are NaN (no bootstrap is drawn).

    Returns
    -------
    dict
        ``n``, ``r``, ``p``, ``ci_low``, ``ci_high``, ``spearman_rho``, ``spearman_p``,
        ``boot_ci_low``, ``boot_ci_high``, ``partial_r``, ``partial_p``, ``n_R``, ``r_R``,
        ``p_R``, ``n_NR``, ``r_NR``, ``p_NR``.

    Raises
    ------
    UserInputError
        Fewer than :data:`MIN_PARTICIPANTS` participants have a value and an improvement.
    """
    x, y = np.asarray(values, float), np.asarray(improvement, float)
    covariates = np.asarray(covariates, dtype=float).reshape(len(x), -1)
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(covariates).all(axis=1)
    if keep.sum() < MIN_PARTICIPANTS:
        raise UserInputError(
            f"{where}: only {int(keep.sum())} participant(s) have a value and an improvement; "
            f"the correlation needs at least {MIN_PARTICIPANTS} (check subjects.tsv)."
        )
    x, y, covariates, groups = x[keep], y[keep], covariates[keep], np.asarray(groups)[keep]
    row = {"n": int(keep.sum())} | pearson(x, y)
    spearman = stats.spearmanr(x, y)
    row |= {"spearman_rho": float(spearman.statistic), "spearman_p": float(spearman.pvalue)}
    if not circular:
        row["boot_ci_low"], row["boot_ci_high"] = bootstrap_ci(x, y, rng, n_resamples, method)
    row["partial_r"], row["partial_p"] = partial_correlation(x, y, covariates)
    row |= {key: float("nan") for key in CIRCULAR_NA} if circular else {}
    return row | _within_groups(x, y, groups)
