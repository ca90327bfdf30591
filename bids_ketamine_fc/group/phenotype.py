"""Participants, pain scores and covariates: who is a responder and who enters the group analysis.

The phenotype table is ``participants.tsv`` joined with every ``phenotype/*.tsv`` of the BIDS
dataset on ``participant_id`` (or the single file given with ``--phenotype``). From it
:func:`build_subjects_table` makes ``group/subjects.tsv``: one row per participant, with the pain
scores, the relative improvement ``(pre - post) / pre``, the group (``R`` when the improvement
reaches ``--responder-threshold``, else ``NR``), the covariates, the mean framewise displacement of
the participant-level runs, and whether the participant is included (with the reason when not).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import MissingInputError, UsageError, UserInputError

LOGGER = logging.getLogger(__name__)

#: Names of the pain columns in ``subjects.tsv`` (the source columns are in its JSON sidecar).
PAIN_PRE, PAIN_POST = "pain_pre", "pain_post"
#: Tolerance on the responder threshold so that e.g. (0.3 - 0.15) / 0.3 counts as 50 %.
_THRESHOLD_TOL = 1e-9


def _participant_id(value: str) -> str:
    value = str(value).strip()
    return value if value.startswith("sub-") else f"sub-{value}"


def _read_table(path: Path) -> pd.DataFrame:
    """Read one BIDS table (tab separated, ``n/a`` missing; ``.csv`` is comma separated)."""
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, na_values=["n/a", "N/A", "NA", ""])
    except pd.errors.EmptyDataError as err:
        raise UserInputError(
            f"{path}: the file is empty; write a tab-separated table with a participant_id "
            "column and one row per participant."
        ) from err
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: cannot be read as a table ({err}).") from err
    table.columns = [str(c).strip() for c in table.columns]
    if "participant_id" not in table.columns:
        raise UserInputError(
            f"{path}: no 'participant_id' column (columns: {', '.join(table.columns)}); "
            "add one with the BIDS participant labels."
        )
    if table.empty:
        raise UserInputError(
            f"{path}: a header and no participant (columns: {', '.join(table.columns)}); "
            "add one row per participant."
        )
    table["participant_id"] = table["participant_id"].map(_participant_id)
    duplicated = table["participant_id"][table["participant_id"].duplicated()]
    if len(duplicated):
        raise UserInputError(
            f"{path}: participant_id {duplicated.iloc[0]} appears more than once; "
            "keep one row per participant."
        )
    return table.set_index("participant_id")


def _phenotype_files(settings: Settings) -> list[Path]:
    if settings.phenotype is not None:
        path = Path(settings.phenotype)
        if not path.is_file():
            raise MissingInputError(f"--phenotype {path}: file not found.")
        return [path]
    bids_dir = Path(settings.bids_dir)
    files = [bids_dir / "participants.tsv"] if (bids_dir / "participants.tsv").is_file() else []
    files += sorted((bids_dir / "phenotype").glob("*.tsv"))
    if not files:
        raise MissingInputError(
            f"{bids_dir}: neither participants.tsv nor phenotype/*.tsv found; "
            "give the table of pain scores with --phenotype."
        )
    return files


def _differ(first: pd.Series, second: pd.Series) -> pd.Series:
    """Where both values are given and differ (as numbers when both are numbers, e.g. 30 = 30.0)."""
    as_numbers = pd.to_numeric(first, errors="coerce"), pd.to_numeric(second, errors="coerce")
    numeric = as_numbers[0].notna() & as_numbers[1].notna()
    differ = (first != second) & ~(numeric & (as_numbers[0] == as_numbers[1]))
    return differ & first.notna() & second.notna()


def read_phenotype(settings: Settings) -> tuple[pd.DataFrame, list[Path]]:
    """Read and join the phenotype tables on ``participant_id``.

    Parameters
    ----------
    settings : Settings
        Uses ``bids_dir`` and ``phenotype``.

    Returns
    -------
    table : pandas.DataFrame
        Indexed by ``participant_id`` (always with the ``sub-`` prefix), values as strings.
    files : list of Path
        The files read, in join order.

    Raises
    ------
    UserInputError
        A file is missing or unreadable, lacks ``participant_id``, lists a participant twice, or two
        files give different values for the same participant and column.
    """
    files = _phenotype_files(settings)
    table = None
    for path in files:
        part = _read_table(path)
        if table is None:
            table = part
            continue
        for column in part.columns.intersection(table.columns):
            clash = _differ(table[column].reindex(part.index), part[column])
            if clash.any():
                who = clash[clash].index[0]
                raise UserInputError(
                    f"{path}: column '{column}' of {who} differs from an earlier table "
                    f"({files[0].name}); keep one value per participant."
                )
        table = table.combine_first(part)
    return table, files


def _numeric_column(table: pd.DataFrame, column: str, option: str, source: str) -> pd.Series:
    """Return ``table[column]`` as floats (NaN where missing or not a number)."""
    if column not in table.columns:
        raise UsageError(
            f"{option} {column}: no such column in {source} "
            f"(columns: {', '.join(map(str, table.columns))})."
        )
    values = pd.to_numeric(table[column], errors="coerce")
    given = table[column].notna()
    if given.any() and values[given].isna().all():
        raise UserInputError(
            f"{option} {column}: column of {source} holds no numbers "
            f"(e.g. {table[column][given].iloc[0]!r}); code it numerically."
        )
    return values.astype(float)


def _check_pain_scale(values: pd.Series, column: str, pain_max: float, source: str) -> None:
    """Refuse a rating below 0 or above ``pain_max`` (a typo or another scale, e.g. 0-100)."""
    outside = values[(values < 0) | (values > pain_max)]
    if len(outside):
        pid, value = outside.index[0], outside.iloc[0]
        raise UserInputError(
            f"{source}: {pid} has {column} = {value:g}, outside the pain scale 0-{pain_max:g}; "
            "correct the rating, or set --pain-max to the top of the scale used."
        )


def _covariate_column(table: pd.DataFrame, column: str, source: str) -> tuple[pd.Series, dict]:
    """Return a covariate's values and the participants whose value is unusable.

    A column whose given values are mostly numbers is numeric (floats; a text value there, e.g.
    ``abc`` in ``age``, is unusable and named); otherwise it is categorical (its text levels,
    coded as indicator columns by :func:`~.inference.glm.covariate_columns`).

    Returns
    -------
    values : pandas.Series
        Floats (NaN where missing or unusable), or strings (None where missing).
    unusable : dict
        ``{participant_id: reason}``.
    """
    if column not in table.columns:
        raise UsageError(
            f"--covariates {column}: no such column in {source} "
            f"(columns: {', '.join(map(str, table.columns))})."
        )
    raw = table[column].map(lambda v: v.strip() if isinstance(v, str) else v)
    numbers = pd.to_numeric(raw, errors="coerce")
    given = raw.notna() & (raw != "")
    if given.any() and numbers[given].notna().mean() < 0.5:
        return raw.where(given, None), {}
    bad = given & numbers.isna()
    return numbers.astype(float), {
        pid: f"covariate {column} {raw[pid]!r} is not a number" for pid in bad[bad].index
    }


def _reasons(
    table: pd.DataFrame, values: dict[str, pd.Series], settings: Settings, unusable: dict
) -> pd.Series:
    """One ``'; '``-joined exclusion reason per participant (empty string when included).

    ``unusable`` maps ``(covariate, participant_id)`` to why a given value cannot be used.
    """
    reasons: dict[str, list[str]] = {pid: [] for pid in values["pre"].index}
    for key, column in (("pre", settings.pain_pre), ("post", settings.pain_post)):
        for pid in values[key].index[values[key].isna()]:
            raw = table[column].get(pid) if column in table.columns else None
            what = "missing" if raw is None or pd.isna(raw) else f"non-numeric ({raw!r})"
            reasons[pid].append(f"pain score {column} {what}")
    for pid in values["pre"].index[values["pre"] == 0]:
        reasons[pid].append(f"{settings.pain_pre} is 0 (improvement undefined)")
    for covariate in settings.covariates:
        for pid in values[covariate].index[values[covariate].isna()]:
            reasons[pid].append(unusable.get((covariate, pid), f"missing covariate {covariate}"))
    return pd.Series({pid: "; ".join(r) for pid, r in reasons.items()}, dtype=str)


def build_subjects_table(
    settings: Settings,
    phenotype: pd.DataFrame,
    with_maps: Iterable[str],
    source: str = "the phenotype table",
) -> pd.DataFrame:
    """Make the ``subjects.tsv`` table: groups, scores, covariates, inclusion.

    Parameters
    ----------
    settings : Settings
        Uses ``pain_pre``, ``pain_post``, ``pain_max``, ``responder_threshold``, ``covariates``,
        ``participant_label``, ``output_dir``, ``task_id`` and ``session_label``.
    phenotype : pandas.DataFrame
        From :func:`read_phenotype`.
    with_maps : iterable of str
        Participant ids (``sub-<label>``) with at least one usable subject-level map.
    source : str
        How to name the phenotype table in error messages.

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id``, ``group``, ``pain_pre``, ``pain_post``, ``improvement``, the
        covariates, ``included``, ``exclusion_reason``, ``mean_fd`` and ``scrubbed_percent``; one
        row per participant of the phenotype table or with maps (restricted to
        ``--participant-label`` when given).

    Raises
    ------
    UserInputError
        A pain or covariate column is missing or not numeric, or a rating lies outside
        ``0..pain_max``.
    """
    with_maps = set(with_maps)
    wanted = sorted(set(phenotype.index) | with_maps)
    if settings.participant_label:
        labels = {_participant_id(label) for label in settings.participant_label}
        wanted = [pid for pid in wanted if pid in labels]
    table = phenotype.reindex(wanted)
    values = {
        "pre": _numeric_column(table, settings.pain_pre, "--pain-pre", source),
        "post": _numeric_column(table, settings.pain_post, "--pain-post", source),
    }
    unusable = {}
    for covariate in settings.covariates:
        values[covariate], bad = _covariate_column(table, covariate, source)
        unusable.update({(covariate, pid): why for pid, why in bad.items()})
    pre, post = values["pre"], values["post"]
    _check_pain_scale(pre, settings.pain_pre, settings.pain_max, source)
    _check_pain_scale(post, settings.pain_post, settings.pain_max, source)
    improvement = ((pre - post) / pre.where(pre != 0)).astype(float)
    group = np.where(
        improvement.isna(),
        None,
        np.where(improvement >= settings.responder_threshold - _THRESHOLD_TOL, "R", "NR"),
    )
    reasons = _reasons(table, values, settings, unusable)
    absent = [pid for pid in wanted if pid not in phenotype.index]
    for pid in absent:
        reasons[pid] = f"not in {source}"
    for pid in wanted:
        if pid not in with_maps:
            reasons[pid] = "; ".join(filter(None, ["no usable subject-level map", reasons[pid]]))
    subjects = pd.DataFrame(
        {
            "participant_id": wanted,
            "group": group,
            PAIN_PRE: pre.to_numpy(),
            PAIN_POST: post.to_numpy(),
            "improvement": improvement.to_numpy(),
            **{cov: values[cov].to_numpy() for cov in settings.covariates},
            "included": (reasons == "").to_numpy(),
            "exclusion_reason": reasons.replace("", None).to_numpy(),
        }
    )
    subjects["mean_fd"] = mean_fd(settings, wanted)
    subjects["scrubbed_percent"] = scrubbed_percent(settings, wanted)
    return subjects


def _qc_files(settings: Settings, participant_id: str) -> list[Path]:
    folder = Path(settings.output_dir) / participant_id
    pattern = f"{participant_id}_*task-{settings.task_id}_*desc-denoising_qc.tsv"
    files = sorted(folder.rglob(pattern))
    if settings.session_label:
        sessions = {f"_ses-{s.removeprefix('ses-')}_" for s in settings.session_label}
        files = [f for f in files if any(s in f.name for s in sessions)]
    return files


def mean_fd(settings: Settings, participant_ids: list[str]) -> np.ndarray:
    """Mean framewise displacement per participant from the participant-level QC tables.

    Parameters
    ----------
    settings : Settings
        Uses ``output_dir``, ``task_id`` and ``session_label``.
    participant_ids : list of str
        ``sub-<label>`` ids.

    Returns
    -------
    numpy.ndarray
        The mean over runs of the QC ``mean_fd`` (over the runs marked ``included`` when the QC
        table has that column and some run is included); NaN when no QC table is found.
    """
    out = np.full(len(participant_ids), np.nan)
    for i, pid in enumerate(participant_ids):
        qc = _included_qc(settings, pid, "mean_fd")
        if qc is not None:
            out[i] = pd.to_numeric(qc["mean_fd"], errors="coerce").mean()
    return out


def _included_qc(settings: Settings, participant_id: str, column: str) -> pd.DataFrame | None:
    """Return the QC rows of the included runs (all runs if none is); None without QC."""
    files = _qc_files(settings, participant_id)
    rows = [pd.read_csv(f, sep="\t", na_values=["n/a"]) for f in files]
    rows = [r for r in rows if column in r.columns and len(r)]
    if not rows:
        return None
    qc = pd.concat(rows, ignore_index=True)
    if "included" in qc.columns:
        kept = qc["included"].astype(str).str.lower().isin(["true", "1", "1.0", "yes"])
        qc = qc[kept] if kept.any() else qc
    return qc


def scrubbed_percent(settings: Settings, participant_ids: list[str]) -> np.ndarray:
    """Percent of the volumes after the dummy scans that were scrubbed, over the included runs.

    NaN when no QC table with ``n_scrubbed``, ``n_volumes`` and ``n_dummy`` is found.
    """
    out = np.full(len(participant_ids), np.nan)
    for i, pid in enumerate(participant_ids):
        qc = _included_qc(settings, pid, "n_scrubbed")
        if qc is None or not {"n_volumes", "n_dummy"} <= set(qc.columns):
            continue
        counts = qc[["n_scrubbed", "n_volumes", "n_dummy"]].apply(pd.to_numeric, errors="coerce")
        usable = (counts["n_volumes"] - counts["n_dummy"]).sum()
        out[i] = 100.0 * counts["n_scrubbed"].sum() / usable if usable > 0 else np.nan
    return out


def column_descriptions(settings: Settings) -> dict:
    """BIDS sidecar for ``subjects.tsv``: what each column holds and where it comes from."""
    described = {
        "participant_id": {"Description": "BIDS participant label."},
        "group": {
            "Description": "R (responder) when improvement >= threshold, else NR.",
            "Levels": {"R": "responder", "NR": "non-responder"},
            "Threshold": settings.responder_threshold,
        },
        PAIN_PRE: {"Description": f"Pain before treatment (column '{settings.pain_pre}')."},
        PAIN_POST: {"Description": f"Pain after treatment (column '{settings.pain_post}')."},
        "improvement": {"Description": "Relative pain reduction (pre - post) / pre (fraction)."},
        "included": {"Description": "Whether the participant enters the group analysis."},
        "exclusion_reason": {"Description": "Why the participant is excluded (n/a if included)."},
        "mean_fd": {
            "Description": "Mean framewise displacement over the participant-level runs.",
            "Units": "mm",
        },
        "scrubbed_percent": {
            "Description": "Scrubbed volumes, in % of the volumes after the dummy scans, over "
            "the participant-level runs.",
            "Units": "%",
        },
    }
    for covariate in settings.covariates:
        described[covariate] = {
            "Description": f"Covariate (column '{covariate}'): mean-centred when numeric; when "
            "text, one indicator column per level but the first (the reference), mean-centred "
            "(the group statistic maps' sidecars give the coding)."
        }
    return described
