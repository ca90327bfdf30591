"""The brain-behaviour step of the group level: which regions, their values, and the tables.

- Every FWE-significant cluster of ``--correlation-model`` / ``--correlation-inference`` is
  described: each participant's mean Fisher z in it (:mod:`.regions`) against the relative
  improvement (:mod:`.correlation`), r only, as the region was chosen by the R vs NR contrast;
- every pre-specified hypothesis of ``--prediction`` gets its leave-one-out test
  (:mod:`.prediction`), whether or not the full data gave a cluster, reported beside it;
- ``--roi`` read in the map of ``--roi-seed`` is an independent region: full inference.

:mod:`.tables` writes the results.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.config import DEFAULT_PREDICTION, Settings
from bids_ketamine_fc.exceptions import UsageError, UserInputError
from bids_ketamine_fc.group import maps
from bids_ketamine_fc.group.behaviour import prediction, tables
from bids_ketamine_fc.group.behaviour.correlation import correlate, pearson
from bids_ketamine_fc.group.behaviour.regions import check_roi, region_columns, region_means
from bids_ketamine_fc.group.inference import glm
from bids_ketamine_fc.utils.progress import progress_bar

LOGGER = logging.getLogger(__name__)


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
    """Correlate one region's values; add the rows to ``out``."""
    rows, settings = seed.rows, seed.settings
    improvement = rows["improvement"].to_numpy(float)
    where = f"seed {seed.masked.seed}, {keys['region']} {keys.get('cluster') or ''}".strip()
    # the partial r adjusts for the covariates of the region's model: none in 'groups'
    adjusted = [] if keys.get("model") == "groups" else list(settings.covariates)
    covariates = glm.covariate_columns(rows, adjusted, where)[0]  # text ones as indicators
    stats_row = correlate(
        values, improvement, rows["group"].to_numpy(), covariates,
        seed.rng(keys.get("contrast"), keys.get("cluster"), "bootstrap"), where,
        circular=bool(keys["circular"]),
    )  # fmt: skip
    out["correlation"].append({"seed": seed.masked.seed} | keys | stats_row)
    table = rows[["participant_id", "group", "improvement"]].assign(value=values)
    out["cluster_values"].append(table.assign(seed=seed.masked.seed, **keys))


def _prediction(seed: SeedData, folds: prediction.FoldValues, keys: dict, out: dict) -> None:
    """Evaluate the leave-one-out folds; add the rows to ``out``."""
    summary, table = prediction.loo_tables(seed.rows, folds)
    out["prediction"].append({"seed": seed.masked.seed} | keys | summary)
    out["folds"].append(table.assign(seed=seed.masked.seed, **keys))


def _cluster_mask(seed: SeedData, keys: dict, cluster: int) -> np.ndarray:
    entities = {k: keys[k] for k in ("model", "contrast", "inference")}
    path = seed.path("mask.nii.gz", cluster=cluster, **entities)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the cluster mask of clusters.tsv is missing.")
    return region_columns(np.asanyarray(nb.load(path).dataobj) > 0, seed.masked.mask)


def analyse_clusters(seed: SeedData, contrast: str, clusters: list[int], out: dict) -> None:
    """Correlate each significant cluster of one contrast (circular: r without p or intervals)."""
    keys = {"model": seed.settings.correlation_model, "contrast": contrast}
    keys["inference"] = seed.settings.correlation_inference
    for cluster in clusters:
        values = region_means(seed.masked.data, _cluster_mask(seed, keys, cluster))
        region = {"cluster": cluster, "region": "cluster", "circular": True}
        _correlation(seed, values, keys | region, out)


def _enough_per_group(seed: SeedData, what: str) -> bool:
    counts = seed.rows["group"].value_counts()
    if min(counts.get("R", 0), counts.get("NR", 0)) > glm.MIN_PER_GROUP:
        return True
    LOGGER.warning(
        "seed %s: no leave-one-out %s (needs %d per group).",
        seed.masked.seed, what, glm.MIN_PER_GROUP + 1,
    )  # fmt: skip
    return False


def analyse_hypothesis(seed: SeedData, model: str, contrast: str, found: list[int], out) -> None:
    """Run one pre-specified leave-one-out test, beside the full-data clusters ``found``."""
    settings = seed.settings
    name = f"{seed.masked.seed}:{model}:{contrast}"
    if not _enough_per_group(seed, f"test {name}"):
        return
    keys = {"model": model, "contrast": contrast, "inference": settings.correlation_inference}
    reference = np.zeros(seed.masked.data.shape[1], bool)
    for cluster in found:
        reference |= _cluster_mask(seed, keys, cluster)
    improvement = seed.rows["improvement"].to_numpy(float)
    circular_r = (
        pearson(region_means(seed.masked.data, reference), improvement)["r"] if found else np.nan
    )
    if settings.correlation_inference == "tfce":
        maps_count = len(seed.rows) * (settings.prediction_permutations * 3 + 1)
        LOGGER.warning(
            "Leave-one-out %s with --correlation-inference tfce enhances every fold map of every "
            "permutation (about %d maps): expect hours at 2 mm; rft or permutation are far faster.",
            name, maps_count,
        )  # fmt: skip
    start = time.monotonic()
    orders, _ = prediction.outcome_orders(
        len(seed.rows), settings.prediction_permutations, seed.rng(model, contrast, "permutation")
    )
    options = {
        "covariates": settings.covariates, "voxel_p": settings.voxel_p,
        "cluster_p": settings.cluster_p, "inference": settings.correlation_inference,
        "fold_null": settings.prediction_permutations, "n_jobs": settings.nprocs,
    }  # fmt: skip
    with progress_bar(len(orders) - 1, f"leave-one-out {name}", "relabelling") as bar:
        folds = prediction.loo_fold_values(
            seed.masked.data, seed.rows, seed.masked.mask, seed.masked.affine, (model, contrast),
            options, orders, seed.rng(model, contrast, "fold-null"), reference if found else None,
            progress=bar.update,
        )  # fmt: skip
    LOGGER.info(
        "Leave-one-out %s: %d folds x %d relabellings in %.1f s.",
        name, len(seed.rows), len(orders), time.monotonic() - start,
    )  # fmt: skip
    keys |= {"region": "folds", "full_data_clusters": len(found), "circular_r": circular_r}
    _prediction(seed, folds, keys, out)


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
    if _enough_per_group(seed, f"estimate in {name}"):
        orders, _ = prediction.outcome_orders(
            len(values), seed.settings.prediction_permutations, seed.rng(None, "permutation")
        )
        folds = prediction.fixed_region_values(values, orders)
        _prediction(seed, folds, {"region": name}, out)


def hypotheses(
    settings: Settings, seeds: list[str], warn: bool = True
) -> list[tuple[str, str, str]]:
    """Return the pre-specified leave-one-out tests of ``--prediction``: (seed, model, contrast).

    ``all`` gives every seed, model and contrast, ``none`` nothing. The default hypothesis is
    skipped with a warning when its seed has no maps (another seed set); a hypothesis given on
    the command line must name a seed with maps. ``warn=False`` checks without logging.

    Raises
    ------
    UsageError
        A malformed ``SEED:MODEL:CONTRAST``, an unknown model or contrast, ``groupsAge`` without
        covariates, or a named seed without maps.
    """
    models = glm.model_names(settings.covariates)
    if settings.prediction in (("all",), ("none",)):
        wanted = settings.prediction == ("all",)
        return [(s, m, c) for s in seeds for m in models for c in glm.CONTRASTS] if wanted else []
    found = []
    for spec in settings.prediction:
        parts = spec.split(":")
        if len(parts) != 3 or parts[1] not in models or parts[2] not in glm.CONTRASTS:
            raise UsageError(
                f"--prediction {spec}: expected SEED:MODEL:CONTRAST with MODEL one of "
                f"{', '.join(models)} and CONTRAST one of {', '.join(glm.CONTRASTS)} "
                "(or 'all', or 'none')."
            )
        if parts[0] in seeds:
            found.append(tuple(parts))
        elif spec != DEFAULT_PREDICTION:
            raise UsageError(
                f"--prediction {spec}: seed {parts[0]} has no subject-level maps; use one of "
                f"{', '.join(seeds)}."
            )
        elif warn:
            LOGGER.warning("No leave-one-out: seed %s has no maps (set --prediction).", parts[0])
    return found


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


def _significant(settings: Settings, table: pd.DataFrame, seed: str, model: str, contrast: str):
    chosen = (
        (table["seed"] == seed) & (table["model"] == model) & (table["contrast"] == contrast)
        & (table["inference"] == settings.correlation_inference)
        & (table["p_fwe"].astype(float) < settings.cluster_p)
    )  # fmt: skip
    return sorted(table.loc[chosen, "cluster"].astype(int))


def run_brain_behaviour(
    settings: Settings, index: maps.MapIndex, subjects: pd.DataFrame, table: pd.DataFrame
) -> dict:
    """Correlate the significant clusters (and ``--roi``); run the pre-specified LOO tests.

    Writes ``group/{cluster_values,correlation,prediction,prediction_folds}.tsv`` (+ JSON,
    headers even when empty); the figures are drawn by the report from these tables.

    Parameters
    ----------
    settings : Settings
        Uses the correlation and prediction options, ``roi``/``roi_seed``, thresholds,
        covariates, ``random_seed`` and ``nprocs``.
    index : maps.MapIndex
        The subject-level maps.
    subjects : pandas.DataFrame
        The ``subjects.tsv`` table (only ``included`` participants are used).
    table : pandas.DataFrame
        The ``clusters.tsv`` table; its cluster masks must have been written.

    Returns
    -------
    dict
        Tables written (``correlation``, ``cluster_values``, ``prediction``, ``folds``) and
        ``circular`` (whether the circularity note applies).

    Raises
    ------
    UserInputError
        A bad ``--roi``/``--roi-seed`` or ``--prediction``, or too few participants with values.
    """
    roi = check_roi(settings, index)
    tests = hypotheses(settings, list(index.seeds))
    entropy = settings.random_seed
    entropy = np.random.SeedSequence().entropy if entropy is None else entropy
    chosen = _chosen_clusters(settings, table)
    included = subjects[subjects["included"].astype(bool)]
    out = {key: [] for key in ("correlation", "cluster_values", "prediction", "folds")}
    seeds = set(chosen["seed"]) | {t[0] for t in tests}
    seeds |= {settings.roi_seed} if roi is not None else set()
    for name in sorted(seeds):
        seed_maps = maps.load_seed_maps(index, name, list(included["participant_id"]))
        rows = included.set_index("participant_id").loc[seed_maps.participant_ids].reset_index()
        seed = SeedData(settings, index, seed_maps, rows, int(entropy))
        for contrast, found in chosen[chosen["seed"] == name].groupby("contrast", sort=True):
            analyse_clusters(seed, str(contrast), sorted(found["cluster"].astype(int)), out)
        for _, model, contrast in (t for t in tests if t[0] == name):
            found = _significant(settings, table, name, model, contrast)
            analyse_hypothesis(seed, model, contrast, found, out)
        if roi is not None and name == settings.roi_seed:
            analyse_roi(seed, roi, out)
    if chosen.empty:
        what = (settings.cluster_p, settings.correlation_model, settings.correlation_inference)
        LOGGER.warning("No cluster with p(FWE) < %g (model %s, inference %s).", *what)
    else:
        LOGGER.warning(tables.CIRCULARITY_NOTE)
    return tables.write_brain_behaviour(settings, out, int(entropy), circular=not chosen.empty)
