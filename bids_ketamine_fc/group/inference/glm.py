"""Second-level general linear model: responders vs non-responders, with or without covariates.

As CONN's second level (and SPM's two-sample t-test with equal variances), the model is ordinary
least squares with one column per group (``R`` then ``NR``) and, for ``groupsAge``, the mean-centred
covariates: a numeric one as one column, a categorical one (text levels, e.g. ``sex`` M/F) as one
indicator column per level but the first in sorted order (the reference), mean-centred too, so
that the group columns stay the group means at the sample's average covariates
(:func:`covariate_columns`). Contrasts ``RgtNR = [1, -1, 0, ...]`` and ``NRgtR = [-1, 1, 0, ...]``
give one-sided t maps, their p values, z maps of equal p, the contrast of betas (``effect``) and
Hedges' g.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from bids_ketamine_fc.exceptions import UserInputError

GROUPS = ("R", "NR")
CONTRASTS = {"RgtNR": (1.0, -1.0), "NRgtR": (-1.0, 1.0)}
#: Fewest included participants per group for a two-sample test.
MIN_PER_GROUP = 3
#: Relative singular-value tolerance under which the standardised design counts as collinear.
_RANK_TOL = 1e-8
#: Below this log p, scipy's t.logsf loses precision (subnormal p) and the series takes over.
_LOG_P_FLOOR = -700.0
#: Most terms of the incomplete-beta series (it stops once converged; x^dof/2 < 1e-304 there).
_SERIES_TERMS = 100_000


def model_names(covariates: tuple[str, ...]) -> list[str]:
    """Models fitted: ``groups``, plus ``groupsAge`` when covariates are given."""
    return ["groups", "groupsAge"] if covariates else ["groups"]


@dataclass(frozen=True)
class Design:
    """A design matrix and what it is made of.

    Attributes
    ----------
    model : str
    matrix : numpy.ndarray
        ``(n_subjects, n_columns)`` float64.
    columns : list of str
        ``["R", "NR", <covariates>]``.
    participant_ids : list of str
        Rows of ``matrix``.
    n_per_group : dict
        ``{"R": n, "NR": n}``.
    covariate_means : dict
        Mean removed from each covariate column.
    coding : dict
        How each covariate became columns (:func:`covariate_columns`).
    """

    model: str
    matrix: np.ndarray
    columns: list[str]
    participant_ids: list[str]
    n_per_group: dict[str, int]
    covariate_means: dict[str, float]
    coding: dict = field(default_factory=dict)

    @property
    def dof(self) -> int:
        """Residual degrees of freedom."""
        return self.matrix.shape[0] - self.matrix.shape[1]

    def contrast(self, name: str) -> np.ndarray:
        """Contrast vector ``name`` padded with zeros for the covariates."""
        if name not in CONTRASTS:
            raise ValueError(f"Unknown contrast {name!r}; expected one of {sorted(CONTRASTS)}.")
        vector = np.zeros(len(self.columns))
        vector[: len(GROUPS)] = CONTRASTS[name]
        return vector

    def as_dict(self) -> dict:
        """JSON-ready description (columns, rows, group sizes)."""
        return {
            "Model": self.model,
            "Columns": self.columns,
            "Rows": self.participant_ids,
            "DesignMatrix": self.matrix.round(10).tolist(),
            "NPerGroup": self.n_per_group,
            "CovariateMeans": self.covariate_means,
            "Covariates": self.coding,
            "DegreesOfFreedom": self.dof,
        }


def _check_groups(subjects: pd.DataFrame, where: str) -> dict[str, int]:
    counts = {g: int((subjects["group"] == g).sum()) for g in GROUPS}
    for group, count in counts.items():
        if count < MIN_PER_GROUP:
            raise UserInputError(
                f"{where}: group {group} has {count} included participant(s), at least "
                f"{MIN_PER_GROUP} are needed; check --responder-threshold and subjects.tsv."
            )
    return counts


def _check_covariates(matrix: np.ndarray, columns: list[str], where: str) -> None:
    for j, name in enumerate(columns[len(GROUPS) :], start=len(GROUPS)):
        if np.ptp(matrix[:, j]) == 0:
            raise UserInputError(
                f"--covariates {name}: constant over the included participants ({where}); drop it."
            )
    scaled = matrix / np.linalg.norm(matrix, axis=0)
    singular = np.linalg.svd(scaled, compute_uv=False)
    if singular[-1] < _RANK_TOL * singular[0]:
        raise UserInputError(
            f"--covariates {' '.join(columns[len(GROUPS) :])}: collinear with the groups or with "
            f"each other ({where}); drop the redundant covariate."
        )


def is_categorical(values: pd.Series) -> bool:
    """Tell whether a covariate holds text levels (not numbers)."""
    return not pd.api.types.is_numeric_dtype(values)


def covariate_columns(
    subjects: pd.DataFrame, covariates, where: str = "subjects.tsv"
) -> tuple[np.ndarray, list[str], dict, dict]:
    """Code the covariates as mean-centred design columns.

    Parameters
    ----------
    subjects : pandas.DataFrame
        One row per participant, with the covariates (floats, or text levels).
    covariates : sequence of str
    where : str
        Context named in error messages.

    Returns
    -------
    matrix : numpy.ndarray
        ``(n, k)`` float64 columns, each mean-centred.
    names : list of str
        Column names: the covariate, or ``<covariate>[<level>]`` for an indicator.
    coding : dict
        Per covariate: ``Type`` (``numeric`` or ``categorical``), and for a categorical one its
        ``Levels``, ``Reference`` level and ``Columns``.
    means : dict
        The mean removed from each column (for an indicator, the fraction at its level).

    Raises
    ------
    UserInputError
        A categorical covariate with a single level among these participants.
    """
    parts, names, coding = [], [], {}
    for name in covariates:
        values = subjects[name]
        if not is_categorical(values):
            parts.append(values.to_numpy(dtype=float))
            names.append(name)
            coding[name] = {"Type": "numeric", "Coding": "mean-centred"}
            continue
        text = values.astype(str).to_numpy()
        levels = sorted(set(text))
        if len(levels) < 2:
            raise UserInputError(
                f"--covariates {name}: a single level ({', '.join(levels) or 'none'}) among the "
                f"included participants ({where}); drop it."
            )
        columns = [f"{name}[{level}]" for level in levels[1:]]
        parts += [(text == level).astype(float) for level in levels[1:]]
        names += columns
        coding[name] = {
            "Type": "categorical",
            "Levels": levels,
            "Reference": levels[0],
            "Columns": columns,
            "Coding": "indicator of each level but the reference, mean-centred",
        }
    if not parts:
        return np.zeros((len(subjects), 0)), [], coding, {}
    matrix = np.column_stack(parts)
    means = matrix.mean(axis=0)
    return matrix - means, names, coding, {n: float(m) for n, m in zip(names, means, strict=True)}


def design_matrix(
    subjects: pd.DataFrame, model: str, covariates: tuple[str, ...], where: str = "subjects.tsv"
) -> Design:
    """Build the design of ``model`` for the participants of ``subjects``.

    Parameters
    ----------
    subjects : pandas.DataFrame
        Included participants: ``participant_id``, ``group`` (``R``/``NR``) and the covariates.
    model : str
        ``"groups"`` or ``"groupsAge"``.
    covariates : tuple of str
        Covariate columns of ``groupsAge`` (mean-centred; text ones as indicator columns).
    where : str
        Context named in error messages (e.g. the seed).

    Returns
    -------
    Design

    Raises
    ------
    UserInputError
        A group has fewer than three participants, or a covariate is constant or collinear.
    """
    if model not in ("groups", "groupsAge"):
        raise ValueError(f"Unknown model {model!r}; expected 'groups' or 'groupsAge'.")
    counts = _check_groups(subjects, where)
    columns = list(GROUPS)
    parts = [(subjects["group"].to_numpy() == g).astype(float)[:, None] for g in GROUPS]
    means, coding = {}, {}
    if model == "groupsAge":
        coded, names, coding, means = covariate_columns(subjects, covariates, where)
        parts.append(coded)
        columns += names
    matrix = np.hstack(parts)
    _check_covariates(matrix, columns, where)
    ids = list(subjects["participant_id"])
    return Design(model, matrix, columns, ids, counts, means, coding)


@dataclass(frozen=True)
class OLSFit:
    """Least-squares fit of every voxel.

    Attributes
    ----------
    design : Design
    beta : numpy.ndarray
        ``(n_columns, n_voxels)`` float64.
    sigma2 : numpy.ndarray
        Residual variance (RSS / dof) per voxel, float64.
    std_resid : numpy.ndarray
        ``(n_subjects, n_voxels)`` float32 residuals divided by ``sqrt(sigma2)`` (0 where
        ``sigma2`` is 0), for the smoothness estimate.
    """

    design: Design
    beta: np.ndarray
    sigma2: np.ndarray
    std_resid: np.ndarray


def fit_ols(data: np.ndarray, design: Design) -> OLSFit:
    """Fit the equal-variance OLS model at every voxel.

    Parameters
    ----------
    data : numpy.ndarray
        ``(n_subjects, n_voxels)`` values, rows in the order of ``design.participant_ids``.
    design : Design

    Returns
    -------
    OLSFit
    """
    x = design.matrix
    y = np.asarray(data, dtype=np.float64)
    beta = np.linalg.pinv(x) @ y
    resid = y - x @ beta
    sigma2 = np.einsum("ij,ij->j", resid, resid) / design.dof
    scale = np.zeros_like(sigma2)
    np.divide(1.0, np.sqrt(sigma2), out=scale, where=sigma2 > 0)
    resid *= scale
    return OLSFit(design, beta, sigma2, resid.astype(np.float32))


def t_to_z(t: np.ndarray, dof: float) -> np.ndarray:
    """Convert t to the z of equal tail probability without saturating at extreme t.

    The tail probability of ``|t|`` is kept as a logarithm (``scipy.stats.t.logsf``) and
    inverted with ``scipy.special.ndtri_exp``, so z stays finite and accurate where ``p``
    would underflow or round to 1; the sign of ``t`` is restored by symmetry.
    """
    t = np.asarray(t, dtype=np.float64)
    log_p = stats.t.logsf(np.abs(t), dof)
    far = np.isfinite(t) & (log_p < _LOG_P_FLOOR)
    if far.any():
        log_p[far] = _log_t_tail(np.abs(t[far]), dof)
    return np.copysign(-special.ndtri_exp(log_p), t)


def _log_t_tail(t: np.ndarray, dof: float) -> np.ndarray:
    """Return log P(T > t) from the incomplete-beta series, for tails beyond float64 (p < 1e-304).

    Hand-written because scipy's ``t.logsf`` is ``log(sf)`` and reaches ``-inf`` near t = 1e22:
    P(T > t) = I_x(dof/2, 1/2) / 2 with x = dof / (dof + t^2), and
    I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * sum_n (a + b)_n / (a + 1)_n x^n.
    """
    a, b = dof / 2.0, 0.5
    x = dof / (dof + t * t)
    term, total = np.ones_like(x), np.ones_like(x)
    for n in range(_SERIES_TERMS):
        term = term * (a + b + n) / (a + 1 + n) * x
        total += term
        if np.all(term < 1e-17 * total):
            break
    log_front = a * np.log(x) + b * np.log1p(-x) - np.log(a) - special.betaln(a, b)
    return np.log(0.5) + log_front + np.log(total)


def hedges_correction(dof: float) -> float:
    """Small-sample factor J = 1 - 3 / (4 dof - 1) of Hedges' g (dof = n1 + n2 - 2)."""
    return 1.0 - 3.0 / (4.0 * dof - 1.0)


def contrast_maps(fit: OLSFit, contrast: str) -> dict[str, np.ndarray]:
    """Statistic maps of one contrast.

    Parameters
    ----------
    fit : OLSFit
    contrast : str
        ``"RgtNR"`` or ``"NRgtR"``.

    Returns
    -------
    dict
        float32 arrays ``effect`` (contrast of betas), ``t``, ``z``, ``p`` (one-sided, upper tail)
        and ``g`` (Hedges' g: effect over the residual standard deviation, times J; with covariates
        it is the covariate-adjusted standardised difference). Voxels with zero residual variance
        get t = z = g = 0 and p = 0.5.
    """
    design = fit.design
    vector = design.contrast(contrast)
    xtx_inv = np.linalg.pinv(design.matrix.T @ design.matrix)
    effect = vector @ fit.beta
    se = np.sqrt(fit.sigma2 * float(vector @ xtx_inv @ vector))
    sd = np.sqrt(fit.sigma2)
    t = np.zeros_like(effect)
    np.divide(effect, se, out=t, where=se > 0)
    g = np.zeros_like(effect)
    np.divide(effect, sd, out=g, where=sd > 0)
    return {
        "effect": effect.astype(np.float32),
        "t": t.astype(np.float32),
        "z": t_to_z(t, design.dof).astype(np.float32),
        "p": stats.t.sf(t, design.dof).astype(np.float32),
        "g": (g * hedges_correction(design.dof)).astype(np.float32),
    }
