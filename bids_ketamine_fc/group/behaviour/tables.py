"""Tables of the brain-behaviour step and their sidecars.

``group/correlation.tsv``, ``cluster_values.tsv``, ``prediction.tsv`` and ``prediction_folds.tsv``,
each with a JSON sidecar describing its columns, written with every column even when there is no
row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.group.behaviour import correlation, prediction
from bids_ketamine_fc.utils.io import atomic_write_text, atomic_write_tsv

CIRCULARITY_NOTE = (
    "Circular analysis: the cluster was selected by the R vs NR contrast, and R/NR is defined "
    "from the same pain improvement it is correlated with here, so this r is inflated "
    "(Kriegeskorte et al., 2009, Nat Neurosci 12:535; Vul et al., 2009, Perspect Psychol Sci "
    "4:274): on pure noise the clusters such a contrast selects still give large r. The r is kept "
    "as a description; its p value and confidence intervals are not computed (n/a), nor those of "
    "Spearman's rho and the partial r. The pre-specified leave-one-out test (prediction.tsv, "
    "--prediction) and an independent region (--roi with --roi-seed) are the tests of the "
    "brain-behaviour relation."
)
KEYS = ("seed", "model", "contrast", "inference")
CORRELATION_COLUMNS = (
    *("seed", "model", "contrast", "cluster", "n", "r", "p", "ci_low", "ci_high"),  # SPEC §3
    *("inference", "region", "circular", "spearman_rho", "spearman_p", "boot_ci_low"),
    *("boot_ci_high", "partial_r", "partial_p", "n_R", "r_R", "p_R", "n_NR", "r_NR", "p_NR"),
)
VALUE_COLUMNS = (*KEYS, "cluster", "region", "participant_id", "group", "improvement", "value")
PREDICTION_COLUMNS = (
    *KEYS,
    *("region", "full_data_clusters", "circular_r", "n", "n_R", "n_NR", "n_folds_no_cluster"),
    *("n_folds_with_value", "cv_r", "cv_r_p", "auc", "auc_p", "accuracy", "accuracy_p"),
    *("balanced_accuracy", "balanced_accuracy_p", "n_permutations", "exhaustive", "smallest_p"),
    *("fold_null_permutations", "mean_dice"),
)
FOLD_COLUMNS = (
    *KEYS,
    *("region", "participant_id", "group", "improvement", "value", "centred", "threshold"),
    *("direction", "score", "predicted", "n_clusters", "size_vox", "dice"),
)
_DESCRIPTIONS = {
    "seed": "Seed whose subject-level maps were read.",
    "model": "Second-level model of the cluster, or of the leave-one-out test (n/a for an ROI).",
    "contrast": "RgtNR or NRgtR: the contrast of the cluster or of the leave-one-out test (n/a "
    "for an ROI).",
    "inference": "Cluster inference of the cluster, or of the leave-one-out folds (n/a for an "
    "ROI).",
    "participant_id": "Participant.",
    "group": "R (responder) or NR (non-responder).",
    "improvement": "Pain improvement (pre - post) / pre, a fraction.",
    "n": "Participants with a value.",
    "spearman_p": "Two-sided p of spearman_rho; n/a for a circular region.",
    "partial_p": "Two-sided p of partial_r (t test, n - 2 - covariates dof); n/a for a circular "
    "region.",
    "n_R": "Responders with a value.",
    "p_R": "Two-sided p of r_R.",
    "n_NR": "Non-responders with a value.",
    "p_NR": "Two-sided p of r_NR.",
    "region": "'cluster' (significant cluster of the contrast), 'folds' (leave-one-out test: "
    "each fold's own region) or the --roi file name.",
    "cluster": "Cluster number of clusters.tsv (n/a for an ROI).",
    "r": "Pearson r of value and improvement.",
    "p": "Two-sided p of r (t test, n - 2 dof); n/a for a circular region.",
    "ci_low": "Lower 95 % bound of r (Fisher z transform); n/a for a circular region.",
    "ci_high": "Upper 95 % bound of r (Fisher z transform); n/a for a circular region.",
    "circular": "True when the region was selected by the R vs NR contrast (r inflated; its "
    "p values and intervals are n/a, see Circularity).",
    "spearman_rho": "Spearman rank correlation of value and improvement.",
    "boot_ci_low": "Lower 95 % bound of r, paired bootstrap (participants resampled); n/a for a "
    "circular region.",
    "boot_ci_high": "Upper 95 % bound of r, paired bootstrap; n/a for a circular region.",
    "partial_r": "Partial r controlling for the covariates of the model (n/a for the model "
    "groups, which has none).",
    "r_R": "Pearson r within responders (n/a with fewer than 3).",
    "r_NR": "Pearson r within non-responders (n/a with fewer than 3).",
    "circular_r": "Pearson r in the full-data region (union of its significant clusters; "
    "n/a without one): circular, a description only.",
    "full_data_clusters": "Significant clusters of the same seed, model, contrast and inference "
    "in the full data (0: the test ran all the same, as pre-specified).",
    "cv_r": "Pearson r of the centred left-out values and improvement over all folds.",
    "cv_r_p": "Permutation p of |cv_r| (folds re-run under every permutation).",
    "auc": "ROC AUC of the cross-validated decision scores against R/NR (ties count half).",
    "auc_p": "One-sided permutation p of auc (folds re-run under every permutation).",
    "accuracy": "Fraction of folds predicting R/NR right (a fold without region counts half).",
    "accuracy_p": "One-sided permutation p of accuracy.",
    "balanced_accuracy": "Mean of sensitivity (R) and specificity (NR).",
    "balanced_accuracy_p": "One-sided permutation p of balanced_accuracy.",
    "n_folds_no_cluster": "Folds where no cluster survived: score 0 (no information).",
    "n_folds_with_value": "Folds with a region (the others count as described).",
    "n_permutations": "Relabellings of the outcomes, the observed one included.",
    "exhaustive": "True when every distinct permutation of the outcomes was used once.",
    "smallest_p": "Smallest attainable p: 1 / n_permutations.",
    "fold_null_permutations": "Relabellings of each fold's own null (--correlation-inference "
    "permutation or tfce; 0 for rft).",
    "mean_dice": "Mean Dice overlap of the folds' regions with the full-data region.",
    "value": "Mean Fisher z of the participant's subject-level map in the region (for a fold: "
    "the left-out participant in the fold's region; n/a without region).",
    "centred": "Left-out value minus the training participants' mean in the same region (0 "
    "without region).",
    "threshold": "Midpoint of the training R and NR means in the fold's region.",
    "direction": "+1 when training R > NR in the fold's region, else -1.",
    "score": "direction * (value - threshold); > 0 predicts R; 0 for a fold without region.",
    "predicted": "R or NR; n/a for a fold without region.",
    "n_clusters": "Significant clusters of the fold.",
    "size_vox": "Voxels of the fold's region (union of its significant clusters).",
    "dice": "Dice overlap of the fold's region with the full-data region.",
}


def plain_text(docstring: str) -> str:
    """Return a docstring without reStructuredText markup (roles and literals), for a sidecar."""
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`", r"\1", docstring or "")
    return text.replace("``", "").strip()


def _frame(rows: list, columns: tuple[str, ...]) -> pd.DataFrame:
    parts = [pd.DataFrame([r]) if isinstance(r, dict) else r for r in rows]
    parts = [p for p in parts if not p.empty]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return table.reindex(columns=list(columns))


def _sidecar(columns: tuple[str, ...], extra: dict) -> str:
    described = {c: {"Description": _DESCRIPTIONS[c]} for c in columns if c in _DESCRIPTIONS}
    return json.dumps(described | extra, indent=2, default=str) + "\n"


def write_brain_behaviour(settings: Settings, out: dict, entropy: int, circular: bool) -> dict:
    """Write the four tables and their sidecars under ``OUTPUT_DIR/group``.

    Parameters
    ----------
    settings : Settings
    out : dict
        Lists of rows (dicts or data frames) under ``correlation``, ``cluster_values``,
        ``prediction`` and ``folds``.
    entropy : int
        Root seed of the bootstrap and permutations (recorded for reproduction).
    circular : bool
        Whether the circularity note applies (some region came from the R vs NR contrast).

    Returns
    -------
    dict
        The written tables (data frames) under the keys of ``out``, and ``circular``.
    """
    group_dir = Path(settings.output_dir) / "group"
    random = {
        "RandomSeed": entropy,
        "Streams": "numpy.random.default_rng(SeedSequence(RandomSeed, spawn_key=(crc32(key),))), "
        "key = '<seed>/<contrast>/<cluster>/bootstrap', '<seed>/<model>/<contrast>/permutation' "
        "(outcome permutations of a leave-one-out test), '<seed>/<model>/<contrast>/fold-null' "
        "(each fold's own null) or '<seed>/None/permutation' (ROI)",
    }
    circularity = {
        "Note": CIRCULARITY_NOTE,
        "NotComputed": list(correlation.CIRCULAR_NA),
        "Kept": "r, spearman_rho and partial_r as descriptions; the within-group r and p (the "
        "region depends on the maps and the labels only, and within a group the improvement "
        "carries no information about the maps when brain and outcome are unrelated).",
    }
    note = {"Circularity": circularity} if circular else {}
    bootstrap = {
        "Method": correlation.BOOTSTRAP_METHOD,
        "Resamples": correlation.BOOTSTRAP_RESAMPLES,
        "ConfidenceLevel": correlation.CONFIDENCE,
    }
    loo = {
        "Procedure": prediction.PROCEDURE,
        "Hypotheses": list(settings.prediction),
        "FoldInference": settings.correlation_inference,
        "HeightThreshold": {"VoxelP": settings.voxel_p},
        "ClusterP": settings.cluster_p,
        "Permutations": settings.prediction_permutations,
    }
    specs = {
        "correlation": (
            "correlation.tsv",
            CORRELATION_COLUMNS,
            note | {"Bootstrap": bootstrap},
        ),
        "cluster_values": ("cluster_values.tsv", VALUE_COLUMNS, {}),
        "prediction": ("prediction.tsv", PREDICTION_COLUMNS, {"LeaveOneOut": loo}),
        "folds": ("prediction_folds.tsv", FOLD_COLUMNS, {"LeaveOneOut": loo}),
    }
    written = {"circular": circular}
    for key, (name, columns, extra) in specs.items():
        table = _frame(out[key], columns)
        atomic_write_tsv(table, group_dir / name)
        sidecar = _sidecar(columns, extra | {"RandomStream": random})
        atomic_write_text((group_dir / name).with_suffix(".json"), sidecar)
        written[key] = table
    return written
