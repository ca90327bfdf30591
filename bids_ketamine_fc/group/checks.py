"""What the group level says before it analyses: who is left out, who enters, what belongs.

Nothing is dropped in silence: each participant left out is a warning with the reason
(:func:`report_exclusions`), the group sizes of each model are printed (:func:`report_models`),
and maps denoised with different strategies, repetition times or smoothing, or made from another
dataset, are flagged (:func:`check_provenance`). Options that cannot work are refused before any
file is read (:func:`check_settings`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import pandas as pd

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import NoUsableDataError, UsageError
from bids_ketamine_fc.group.ica.decompose import DUAL_REGRESSION_METHODS
from bids_ketamine_fc.group.inference import clusters, glm

LOGGER = logging.getLogger(__name__)
#: Most participants named in one warning.
_NAMED = 8


def _names(pids) -> str:
    pids = list(pids)
    more = f" and {len(pids) - _NAMED} more" if len(pids) > _NAMED else ""
    return ", ".join(pids[:_NAMED]) + more


def report_exclusions(subjects: pd.DataFrame, table: Path) -> None:
    """Warn about each participant left out, with the reason; refuse when nobody is left.

    Parameters
    ----------
    subjects : pandas.DataFrame
        ``subjects.tsv`` (``participant_id``, ``included``, ``exclusion_reason``).
    table : Path
        Where ``subjects.tsv`` is, for the messages.

    Raises
    ------
    NoUsableDataError
        No participant is included; the message counts the reasons.
    """
    excluded = subjects[~subjects["included"].astype(bool)]
    for pid, reason in zip(excluded["participant_id"], excluded["exclusion_reason"], strict=True):
        hint = " (maps from another dataset?)" if str(reason).startswith("not in ") else ""
        LOGGER.warning("%s left out of the group analysis: %s%s", pid, reason, hint)
    if len(excluded) < len(subjects) or subjects.empty:
        return
    by_reason = defaultdict(list)
    for pid, reason in zip(excluded["participant_id"], excluded["exclusion_reason"], strict=True):
        for part in str(reason).split("; "):
            by_reason[part].append(pid)
    common = sorted(by_reason.items(), key=lambda item: -len(item[1]))[:3]
    listed = "; ".join(f"{reason} ({len(pids)}: {_names(pids)})" for reason, pids in common)
    raise NoUsableDataError(
        f"no participant can enter the group analysis: all {len(subjects)} are left out "
        f"({listed}); see {table}."
    )


def report_models(included: pd.DataFrame, settings: Settings) -> None:
    """Check each model's design on the included participants and print its group sizes.

    Raises
    ------
    UserInputError
        A group is too small, or a covariate is constant or collinear (from the design).
    """
    for model in glm.model_names(settings.covariates):
        design = glm.design_matrix(included, model, settings.covariates, where="group/subjects.tsv")
        counts = design.n_per_group
        covariates = f"; covariates {', '.join(settings.covariates)}" if model != "groups" else ""
        LOGGER.info(
            "Model %s: %d R and %d NR participants%s.", model, counts["R"], counts["NR"], covariates
        )
        for name, coding in design.coding.items():
            if coding["Type"] == "categorical":
                LOGGER.info(
                    "Covariate %s is categorical: levels %s, reference %s (indicator columns %s).",
                    name,
                    ", ".join(coding["Levels"]),
                    coding["Reference"],
                    ", ".join(coding["Columns"]),
                )


def check_provenance(settings: Settings, index, participants: list[str]) -> None:
    """Warn when the participants' maps were made differently, or from another dataset.

    Parameters
    ----------
    settings : Settings
    index : maps.MapIndex
        The subject-level maps found.
    participants : list of str
        The participants entering the analysis.
    """
    seed = index.seeds[0] if index.seeds else None
    sidecars = {}
    for pid in participants:
        path = index.files.get(seed, {}).get(pid)
        try:
            sidecars[pid] = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
        except (OSError, TypeError, json.JSONDecodeError):
            continue
    labels = _strategy_labels({pid: s.get("DenoisingStrategy") for pid, s in sidecars.items()})
    found: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for pid, sidecar in sidecars.items():
        described = {
            "denoising strategy": labels.get(pid),
            "repetition time (s)": sidecar.get("RepetitionTime"),
            "smoothing FWHM (mm)": sidecar.get("SmoothingFWHM"),
        }
        for what, value in described.items():
            if value is not None:
                found[what][str(value)].append(pid)
    for what, values in found.items():
        if len(values) > 1:
            parts = sorted(values.items(), key=lambda item: -len(item[1]))
            listed = "; ".join(f"{value} ({len(pids)}: {_names(pids)})" for value, pids in parts)
            LOGGER.warning(
                "The participants entering the group level differ in %s: %s; the comparison "
                "mixes them (rerun the participant level alike, or select with "
                "--participant-label).",
                what,
                listed,
            )
    _check_source_dataset(settings)


def _strategy_labels(strategies: dict[str, dict | None]) -> dict[str, str]:
    """Name each participant's strategy; same-named strategies that differ get a short digest."""
    digests = {
        pid: json.dumps(strategy, sort_keys=True, default=str)
        for pid, strategy in strategies.items()
        if strategy
    }
    names = {pid: strategies[pid].get("name", "unnamed") for pid in digests}
    variants = defaultdict(set)
    for pid, digest in digests.items():
        variants[names[pid]].add(digest)
    labels = {}
    for pid, digest in digests.items():
        short = hashlib.sha1(digest.encode()).hexdigest()[:6]
        labels[pid] = names[pid] if len(variants[names[pid]]) == 1 else f"{names[pid]} ({short})"
    return labels


def _check_source_dataset(settings: Settings) -> None:
    """Warn when OUTPUT_DIR says its participant outputs come from another BIDS dataset."""
    description = Path(settings.output_dir) / "dataset_description.json"
    try:
        raw = json.loads(description.read_text()).get("DatasetLinks", {}).get("raw")
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    ours = Path(settings.bids_dir).absolute().as_uri()
    if isinstance(raw, str) and raw.startswith("file://") and raw != ours:
        LOGGER.warning(
            "%s says the participant outputs come from %s, not from BIDS_DIR %s: check that "
            "the phenotype belongs to the participants of OUTPUT_DIR.",
            description,
            raw,
            settings.bids_dir,
        )


def check_settings(settings: Settings) -> None:
    """Refuse group options that cannot work (before any file is read).

    Raises
    ------
    UserInputError
        Unknown inference, probabilities outside (0, 1), or a non-positive permutation count.
    """
    unknown = sorted(set(settings.inference) - set(clusters.INFERENCES))
    if unknown or not settings.inference:
        raise UsageError(
            f"--inference {' '.join(unknown)}: expected one or more of "
            f"{', '.join(clusters.INFERENCES)}."
        )
    for option, value in (("--voxel-p", settings.voxel_p), ("--cluster-p", settings.cluster_p)):
        if not 0 < value < 1:
            raise UsageError(f"{option} {value}: must lie strictly between 0 and 1.")
    if not 0 < settings.responder_threshold <= 1:
        raise UsageError(
            f"--responder-threshold {settings.responder_threshold}: must lie in (0, 1]."
        )
    if not settings.pain_max > 0:
        raise UsageError(f"--pain-max {settings.pain_max}: must be positive (e.g. 10 for NRS).")
    if settings.dual_regression not in DUAL_REGRESSION_METHODS:
        raise UsageError(
            f"--dual-regression {settings.dual_regression}: expected one of "
            f"{', '.join(DUAL_REGRESSION_METHODS)}."
        )
    for option, value in (
        ("--n-permutations", settings.n_permutations),
        ("--prediction-permutations", settings.prediction_permutations),
    ):
        if value < 1:
            raise UsageError(f"{option} {value}: must be positive.")
    if len(set(settings.covariates)) != len(settings.covariates):
        raise UsageError(f"--covariates {' '.join(settings.covariates)}: listed twice.")
