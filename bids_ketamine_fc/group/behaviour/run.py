"""The brain-behaviour step of the group level: which regions, their values, and the tables.

For every FWE-significant cluster of ``--correlation-model`` / ``--correlation-inference`` (and
for ``--roi`` read in the map of ``--roi-seed``) each participant's mean Fisher z
(:mod:`.regions`) is correlated with the relative improvement (:mod:`.correlation`), and the
leave-one-out estimate is computed (:mod:`.prediction`); :mod:`.tables` writes the results.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import maps
from bids_ketamine_fc.group.behaviour import prediction, tables
from bids_ketamine_fc.group.behaviour.correlation import correlate, pearson
from bids_ketamine_fc.group.behaviour.regions import check_roi, region_columns, region_means
from bids_ketamine_fc.group.inference import glm

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
    stats_row = correlate(
        values, improvement, rows["group"].to_numpy(), rows[adjusted].to_numpy(),
        seed.rng(keys.get("contrast"), keys.get("cluster"), "bootstrap"), where,
    )  # fmt: skip
    out["correlation"].append({"seed": seed.masked.seed} | keys | stats_row)
    table = rows[["participant_id", "group", "improvement"]].assign(value=values)
    out["cluster_values"].append(table.assign(seed=seed.masked.seed, **keys))


def _prediction(seed: SeedData, folds: prediction.FoldValues, keys: dict, out: dict) -> None:
    """Evaluate the leave-one-out folds; add the rows to ``out``."""
    rng = seed.rng(keys.get("contrast"), "permutation")
    summary, table = prediction.loo_tables(seed.rows, folds, seed.settings.n_permutations, rng)
    out["prediction"].append({"seed": seed.masked.seed} | keys | summary)
    out["folds"].append(table.assign(seed=seed.masked.seed, **keys))


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
    headers even when empty); the figures are drawn by the report from these tables.

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
        Tables written (``correlation``, ``cluster_values``, ``prediction``, ``folds``) and
        ``circular`` (whether the circularity note applies).

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
    out = {key: [] for key in ("correlation", "cluster_values", "prediction", "folds")}
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
        LOGGER.warning(tables.CIRCULARITY_NOTE)
    return tables.write_brain_behaviour(settings, out, int(entropy), circular=not chosen.empty)
