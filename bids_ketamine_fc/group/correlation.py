"""Brain-behaviour correlation: mean Fisher z in a cluster (or an ROI) against pain improvement.

For every FWE-significant cluster of ``--correlation-model`` / ``--correlation-inference`` (and
for ``--roi`` read in the map of ``--roi-seed``) each participant's mean Fisher z is correlated
with the relative improvement ``(pre - post) / pre``: Pearson r with its p and 95 % Fisher
interval (``scipy.stats.pearsonr``), Spearman rho, a paired bootstrap interval of r
(``scipy.stats.bootstrap``, BCa, 10 000 resamples, seeded), the partial r controlling for the
covariates and r within R and within NR. A cluster of the R vs NR contrast was chosen with groups
made from the same improvement, so its r is circular (inflated): that is flagged, printed and
written, and :mod:`~bids_ketamine_fc.group.prediction` gives the leave-one-out estimate.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import glm, maps, prediction
from bids_ketamine_fc.reports import correlation as report

LOGGER = logging.getLogger(__name__)

#: Fewest participants with a value and an improvement for a correlation.
MIN_PARTICIPANTS = 5
#: Fewest participants of a group for the within-group r.
MIN_PER_GROUP = 3
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_METHOD = "BCa"
CONFIDENCE = 0.95
#: Largest difference (mm) between the ROI's affine and the maps' still counted as the same grid.
_AFFINE_TOL = 1e-3


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
    row["boot_ci_low"], row["boot_ci_high"] = bootstrap_ci(x, y, rng, n_resamples, method)
    row["partial_r"], row["partial_p"] = partial_correlation(x, y, covariates)
    return row | _within_groups(x, y, groups)


def region_columns(region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return a 3-D region as a boolean over the voxels of ``mask`` (``order="F"``, as the data)."""
    return np.asarray(region, bool).ravel(order="F")[np.asarray(mask, bool).ravel(order="F")]


def region_means(data: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Return each participant's mean of ``data[:, columns]`` (float64)."""
    return data[:, columns].mean(axis=1, dtype=np.float64)


def load_roi(path: Path, index: maps.MapIndex) -> np.ndarray:
    """Read ``--roi``: a 3-D mask (non-zero voxels) on the grid of the subject-level maps.

    Raises
    ------
    UserInputError
        The file is missing, unreadable, not 3-D, empty, or on another grid.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"--roi {path}: file not found.")
    try:
        img = nb.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise UserInputError(f"--roi {path}: cannot be read as NIfTI ({err}).") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(index.shape) or not np.allclose(
        img.affine, index.affine, atol=_AFFINE_TOL
    ):
        raise UserInputError(
            f"--roi {path}: grid {data.shape} with affine {np.round(img.affine[:3], 3).tolist()} "
            f"differs from the subject-level maps ({tuple(index.shape)}, "
            f"{np.round(index.affine[:3], 3).tolist()}); resample it onto a map, e.g. "
            "nilearn.image.resample_to_img(roi, map, interpolation='nearest')."
        )
    region = np.nan_to_num(np.asarray(data, dtype=float)) != 0
    if not region.any():
        raise UserInputError(f"--roi {path}: the mask has no non-zero voxel.")
    return region


def check_roi(settings: Settings, index: maps.MapIndex) -> np.ndarray | None:
    """Check ``--roi`` and ``--roi-seed`` together; return the ROI (3-D bool) or None.

    Raises
    ------
    UserInputError
        One option without the other, an unknown seed, or a bad mask (:func:`load_roi`).
    """
    if settings.roi is None and settings.roi_seed is None:
        return None
    if settings.roi is None or settings.roi_seed is None:
        given, missing = ("--roi", "--roi-seed") if settings.roi else ("--roi-seed", "--roi")
        raise UserInputError(f"{given} needs {missing}: give both (the mask and the seed map).")
    if settings.roi_seed not in index.files:
        raise UserInputError(
            f"--roi-seed {settings.roi_seed}: no subject-level maps of this seed; "
            f"use one of {', '.join(index.seeds)}."
        )
    return load_roi(settings.roi, index)


@dataclass(frozen=True)
class SeedData:
    """One seed's masked maps, the rows of its participants (same order) and the random root."""

    settings: Settings
    index: maps.MapIndex
    masked: maps.SeedMaps
    rows: pd.DataFrame
    entropy: int

    def rng(self, *key) -> np.random.Generator:
        """Random stream of one analysis, independent of the order the analyses run in."""
        tag = zlib.crc32("/".join(map(str, (self.masked.seed, *key))).encode())
        return np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=(tag,)))

    def path(self, suffix: str, **entities) -> Path:
        """Group-level file of this seed (:func:`maps.group_path`)."""
        return maps.group_path(
            self.settings.output_dir, self.index, self.masked.seed, suffix, **entities
        )


def _correlation(seed: SeedData, values: np.ndarray, keys: dict, out: dict) -> None:
    """Correlate one region's values; add the rows and the scatter plot to ``out``."""
    rows, settings = seed.rows, seed.settings
    improvement = rows["improvement"].to_numpy(float)
    where = f"seed {seed.masked.seed}, {keys['region']} {keys.get('cluster') or ''}".strip()
    stats_row = correlate(
        values, improvement, rows["group"].to_numpy(), rows[list(settings.covariates)].to_numpy(),
        seed.rng(keys.get("contrast"), keys.get("cluster"), "bootstrap"), where,
    )  # fmt: skip
    out["correlation"].append({"seed": seed.masked.seed} | keys | stats_row)
    table = rows[["participant_id", "group", "improvement"]].assign(value=values)
    out["cluster_values"].append(table.assign(seed=seed.masked.seed, **keys))
    entities = {k: keys.get(k) for k in ("model", "contrast", "inference", "cluster")}
    path = seed.path("scatter.png", desc=None if keys.get("cluster") else "roi", **entities)
    where_in = (keys.get("contrast", "ROI"), keys["region"], keys.get("cluster", ""))
    title = f"{seed.masked.seed} " + " ".join(map(str, where_in))
    out["figures"].append(report.scatter_plot(path, table, stats_row, title, keys["circular"]))


def _prediction(seed: SeedData, folds: prediction.FoldValues, keys: dict, out: dict) -> None:
    """Evaluate the leave-one-out folds; add the rows and the ROC plot to ``out``."""
    rng = seed.rng(keys.get("contrast"), "permutation")
    summary, table = prediction.loo_tables(seed.rows, folds, seed.settings.n_permutations, rng)
    out["prediction"].append({"seed": seed.masked.seed} | keys | summary)
    out["folds"].append(table.assign(seed=seed.masked.seed, **keys))
    entities = {k: keys.get(k) for k in ("model", "contrast", "inference")}
    path = seed.path("roc.png", desc=None if keys.get("contrast") else "roi", **entities)
    title = f"{seed.masked.seed} {keys.get('contrast') or 'ROI'}: leave-one-out"
    out["figures"].append(report.roc_plot(path, table, summary, title))


def _cluster_mask(seed: SeedData, keys: dict, cluster: int) -> np.ndarray:
    entities = {k: keys[k] for k in ("model", "contrast", "inference")}
    path = seed.path("mask.nii.gz", cluster=cluster, **entities)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the cluster mask of clusters.tsv is missing.")
    return region_columns(np.asanyarray(nb.load(path).dataobj) > 0, seed.masked.mask)


def analyse_clusters(seed: SeedData, contrast: str, clusters: list[int], out: dict) -> None:
    """Correlate each significant cluster of one contrast, then run the leave-one-out estimate."""
    settings = seed.settings
    keys = {"model": settings.correlation_model, "contrast": contrast}
    keys["inference"] = settings.correlation_inference
    union = np.zeros(seed.masked.data.shape[1], bool)
    for cluster in clusters:
        columns = _cluster_mask(seed, keys, cluster)
        union |= columns
        region = {"cluster": cluster, "region": "cluster", "circular": True}
        _correlation(seed, region_means(seed.masked.data, columns), keys | region, out)
    counts = seed.rows["group"].value_counts()
    if min(counts.get("R", 0), counts.get("NR", 0)) <= glm.MIN_PER_GROUP:
        need = glm.MIN_PER_GROUP + 1
        LOGGER.warning(
            "seed %s: no leave-one-out estimate (needs %d per group).", seed.masked.seed, need
        )
        return
    folds = prediction.loo_fold_values(
        seed.masked.data, seed.rows, seed.masked.mask, seed.masked.affine, keys["model"], contrast,
        settings.covariates, settings.voxel_p, settings.cluster_p, union, settings.nprocs,
    )  # fmt: skip
    circular = pearson(region_means(seed.masked.data, union), seed.rows["improvement"])["r"]
    _prediction(seed, folds, keys | {"region": "cluster", "circular_r": circular}, out)


def analyse_roi(seed: SeedData, roi: np.ndarray, out: dict) -> None:
    """Correlate and predict from the mean Fisher z in an ROI given in advance (not circular)."""
    columns = region_columns(roi, seed.masked.mask)
    name = Path(seed.settings.roi).name
    if not columns.any():
        raise UserInputError(
            f"--roi {seed.settings.roi}: no voxel inside the analysis mask of seed "
            f"{seed.masked.seed} (voxels valid in every map); check the ROI's position."
        )
    values = region_means(seed.masked.data, columns)
    _correlation(seed, values, {"region": name, "circular": False}, out)
    _prediction(seed, prediction.fixed_region_values(values), {"region": name}, out)


def _chosen_clusters(settings: Settings, table: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``clusters.tsv`` that feed the correlation (model, inference, p(FWE) < alpha)."""
    for option, value, run in (
        ("--correlation-inference", settings.correlation_inference, settings.inference),
        ("--correlation-model", settings.correlation_model, glm.model_names(settings.covariates)),
    ):
        if value not in run:
            LOGGER.warning(
                "%s %s was not run (only %s): no cluster.", option, value, ", ".join(run)
            )
    chosen = (
        (table["model"] == settings.correlation_model)
        & (table["inference"] == settings.correlation_inference)
        & (table["p_fwe"].astype(float) < settings.cluster_p)
    )
    return table[chosen]


def run_brain_behaviour(
    settings: Settings, index: maps.MapIndex, subjects: pd.DataFrame, table: pd.DataFrame
) -> dict:
    """Correlate the significant clusters (and ``--roi``) with improvement; estimate it by LOO.

    Writes ``group/{cluster_values,correlation,prediction,prediction_folds}.tsv`` (+ JSON,
    headers even when empty), a scatter plot per region and a ROC plot per leave-one-out estimate.

    Parameters
    ----------
    settings : Settings
        Uses the correlation options, ``roi``/``roi_seed``, thresholds, covariates,
        ``n_permutations``, ``random_seed`` and ``nprocs``.
    index : maps.MapIndex
        The subject-level maps.
    subjects : pandas.DataFrame
        The ``subjects.tsv`` table (only ``included`` participants are used).
    table : pandas.DataFrame
        The ``clusters.tsv`` table; its cluster masks must have been written.

    Returns
    -------
    dict
        Tables written (``correlation``, ``cluster_values``, ``prediction``, ``folds``), figure
        paths (``figures``) and ``circular`` (whether the circularity note applies).

    Raises
    ------
    UserInputError
        A bad ``--roi``/``--roi-seed``, or too few participants with values.
    """
    roi = check_roi(settings, index)
    entropy = settings.random_seed
    entropy = np.random.SeedSequence().entropy if entropy is None else entropy
    chosen = _chosen_clusters(settings, table)
    included = subjects[subjects["included"].astype(bool)]
    out = {key: [] for key in ("correlation", "cluster_values", "prediction", "folds", "figures")}
    seeds = set(chosen["seed"]) | ({settings.roi_seed} if roi is not None else set())
    for name in sorted(seeds):
        seed_maps = maps.load_seed_maps(index, name, list(included["participant_id"]))
        rows = included.set_index("participant_id").loc[seed_maps.participant_ids].reset_index()
        seed = SeedData(settings, index, seed_maps, rows, int(entropy))
        for contrast, found in chosen[chosen["seed"] == name].groupby("contrast", sort=True):
            analyse_clusters(seed, str(contrast), sorted(found["cluster"].astype(int)), out)
        if roi is not None and name == settings.roi_seed:
            analyse_roi(seed, roi, out)
    if chosen.empty:
        what = (settings.cluster_p, settings.correlation_model, settings.correlation_inference)
        held = "only the ROI" if roi is not None else "headers only"
        LOGGER.warning(
            "No cluster with p(FWE) < %g (model %s, inference %s): tables hold %s.", *what, held
        )
    else:
        LOGGER.warning(report.CIRCULARITY_NOTE)
    return report.write_brain_behaviour(settings, out, int(entropy), circular=not chosen.empty)
