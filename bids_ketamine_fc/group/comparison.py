"""Responders vs non-responders on motion, age and pain: the table a reviewer asks for first.

``group/group_comparison.tsv`` (+ ``.json``): for each variable of ``subjects.tsv`` (the
covariates, mean framewise displacement, % scrubbed volumes, pain before and after), the mean and
standard deviation in R and in NR (included participants), Welch's t test and the Mann-Whitney U
test (two-sided). A group difference in motion can masquerade as a connectivity difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.group.phenotype import PAIN_POST, PAIN_PRE
from bids_ketamine_fc.utils.io import atomic_write_text, atomic_write_tsv

COLUMNS = {
    "variable": "Column of subjects.tsv compared.",
    "n_R": "Responders with a value.",
    "mean_R": "Mean in responders.",
    "sd_R": "Standard deviation in responders (n - 1).",
    "n_NR": "Non-responders with a value.",
    "mean_NR": "Mean in non-responders.",
    "sd_NR": "Standard deviation in non-responders (n - 1).",
    "t": "Welch's t (R minus NR).",
    "p_t": "Two-sided p of Welch's t test.",
    "p_mannwhitney": "Two-sided p of the Mann-Whitney U test.",
}


def _row(name: str, values_r: np.ndarray, values_nr: np.ndarray) -> dict:
    r, nr = values_r[np.isfinite(values_r)], values_nr[np.isfinite(values_nr)]
    row = {
        "variable": name,
        "n_R": r.size,
        "mean_R": r.mean() if r.size else np.nan,
        "sd_R": r.std(ddof=1) if r.size > 1 else np.nan,
        "n_NR": nr.size,
        "mean_NR": nr.mean() if nr.size else np.nan,
        "sd_NR": nr.std(ddof=1) if nr.size > 1 else np.nan,
        "t": np.nan,
        "p_t": np.nan,
        "p_mannwhitney": np.nan,
    }
    if r.size > 1 and nr.size > 1 and (np.ptp(r) > 0 or np.ptp(nr) > 0):
        test = stats.ttest_ind(r, nr, equal_var=False)
        row.update(t=float(test.statistic), p_t=float(test.pvalue))
        row["p_mannwhitney"] = float(stats.mannwhitneyu(r, nr, alternative="two-sided").pvalue)
    return row


def compare_groups(settings: Settings, subjects: pd.DataFrame) -> pd.DataFrame:
    """Write ``group/group_comparison.tsv`` and its sidecar; return the table.

    Parameters
    ----------
    settings : Settings
        Uses ``output_dir`` and ``covariates``.
    subjects : pandas.DataFrame
        The ``subjects.tsv`` table (only ``included`` rows are compared).

    Returns
    -------
    pandas.DataFrame
        One row per variable, columns :data:`COLUMNS`.
    """
    included = subjects[subjects["included"].astype(bool)]
    names = [*settings.covariates, "mean_fd", "scrubbed_percent", PAIN_PRE, PAIN_POST]
    rows = []
    for name in dict.fromkeys(names):
        if name not in included:
            continue
        values = pd.to_numeric(included[name], errors="coerce").to_numpy(float)
        groups = included["group"].to_numpy()
        rows.append(_row(name, values[groups == "R"], values[groups == "NR"]))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    path = Path(settings.output_dir) / "group" / "group_comparison.tsv"
    atomic_write_tsv(table, path)
    sidecar = {column: {"Description": text} for column, text in COLUMNS.items()}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return table
