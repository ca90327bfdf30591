"""Figures of the brain-behaviour step, drawn from its tables.

PNG files under ``group/seed-<seed>/``: ``..._scatter.png`` per region (mean Fisher z against
pain improvement) and ``..._roc.png`` per leave-one-out estimate. They are drawn from the tables
:func:`~bids_ketamine_fc.group.behaviour.run.run_brain_behaviour` returns (the same rows as
``cluster_values.tsv``, ``correlation.tsv``, ``prediction.tsv`` and ``prediction_folds.tsv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bids_ketamine_fc.utils.io import atomic_write

_COLOURS = {"R": "#1f77b4", "NR": "#d62728"}


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=200, bbox_inches="tight"))
    plt.close(fig)
    return path


def _figure(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def scatter_plot(
    path: Path, table: pd.DataFrame, stats_row: dict, title: str, circular: bool
) -> Path:
    """Plot mean Fisher z against % improvement, coloured by group, with the OLS line.

    Parameters
    ----------
    path : Path
        PNG written (atomically).
    table : pandas.DataFrame
        ``improvement`` (fraction), ``value`` and ``group`` per participant.
    stats_row : dict
        ``r``, ``p`` and ``n`` shown in the title.
    title : str
    circular : bool
        The region was chosen by the R vs NR contrast: r is shown without a p value.

    Returns
    -------
    Path
    """
    fig, ax = _figure((4.8, 4.0))
    x, y = 100 * table["improvement"].to_numpy(float), table["value"].to_numpy(float)
    for group, colour in _COLOURS.items():
        chosen = table["group"].to_numpy() == group
        ax.scatter(x[chosen], y[chosen], c=colour, label=group, s=28, edgecolors="none")
    slope, intercept = np.polyfit(x, y, 1)
    grid = np.linspace(x.min(), x.max(), 50)
    ax.plot(grid, intercept + slope * grid, color="0.3", lw=1.2)
    ax.set_xlabel("pain improvement (% NRS reduction)")
    ax.set_ylabel("mean Fisher z")
    ax.legend(frameon=False, fontsize=8)
    tested = "circular: no p" if circular else f"p = {stats_row['p']:.2g}"
    ax.set_title(f"{title}\nr = {stats_row['r']:.2f} ({tested}), n = {stats_row['n']}", fontsize=9)
    return _save_figure(fig, path)


def roc_plot(path: Path, table: pd.DataFrame, summary: dict, title: str) -> Path:
    """Plot the ROC curve of the cross-validated decision scores (R positive).

    Parameters
    ----------
    path : Path
        PNG written (atomically).
    table : pandas.DataFrame
        ``group`` and ``score`` per participant (0 for a fold without region).
    summary : dict
        ``auc``, ``auc_p``, ``accuracy`` and ``n_folds_with_value`` for the title.
    title : str

    Returns
    -------
    Path
    """
    from sklearn.metrics import roc_curve

    fig, ax = _figure((4.0, 4.0))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    scored = table[np.isfinite(table["score"].to_numpy(float))]
    if scored["group"].nunique() == 2:
        fpr, tpr, _ = roc_curve(scored["group"] == "R", scored["score"].to_numpy(float))
        ax.plot(fpr, tpr, color=_COLOURS["R"], lw=1.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="1 - specificity (NR called R)")
    ax.set_ylabel("sensitivity (R called R)")
    ax.set_title(
        f"{title}\nAUC = {summary['auc']:.2f} (p = {summary['auc_p']:.2g}), accuracy "
        f"{summary['accuracy']:.2f}, cv r = {summary['cv_r']:.2f}, "
        f"{summary['n_folds_with_value']}/{summary['n']} folds with a region",
        fontsize=9,
    )
    return _save_figure(fig, path)


def _key(value):
    """Return a table cell as a file-name entity: None for n/a, whole numbers as int."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return value


def _rows_of(table: pd.DataFrame, row: pd.Series, keys: tuple[str, ...]) -> pd.DataFrame:
    """Rows of ``table`` whose ``keys`` equal those of ``row`` (n/a equal to n/a)."""
    chosen = np.ones(len(table), bool)
    for key in keys:
        wanted = _key(row[key])
        column = table[key].map(_key)
        chosen &= column.isna().to_numpy() if wanted is None else (column == wanted).to_numpy()
    return table[chosen]


def write_figures(output_dir: Path, index, written: dict) -> list[Path]:
    """Draw the scatter plot of every correlation row and the ROC plot of every prediction row.

    Parameters
    ----------
    output_dir : Path
        OUTPUT_DIR (figures go to ``group/seed-<seed>/``).
    index : bids_ketamine_fc.group.maps.MapIndex
        The subject-level maps (space and resolution of the file names).
    written : dict
        The tables of :func:`~bids_ketamine_fc.group.behaviour.run.run_brain_behaviour`.

    Returns
    -------
    list of Path
        The figures, scatter plots first.
    """
    from bids_ketamine_fc.group.maps import group_path

    figures = []
    region_keys = ("seed", "model", "contrast", "inference", "cluster", "region")
    for _, row in written["correlation"].iterrows():
        seed, entities = row["seed"], {k: _key(row[k]) for k in region_keys[1:5]}
        table = _rows_of(written["cluster_values"], row, region_keys)
        desc = None if entities["cluster"] is not None else "roi"
        path = group_path(output_dir, index, seed, "scatter.png", desc=desc, **entities)
        where = (entities["contrast"] or "ROI", row["region"], entities["cluster"] or "")
        title = f"{seed} " + " ".join(map(str, where))
        stats_row = {"r": row["r"], "p": row["p"], "n": int(row["n"])}
        figures.append(scatter_plot(path, table, stats_row, title, bool(row["circular"])))
    for _, row in written["prediction"].iterrows():
        seed, entities = row["seed"], {k: _key(row[k]) for k in region_keys[1:4]}
        table = _rows_of(written["folds"], row, (*region_keys[:4], "region"))
        desc = None if entities["contrast"] is not None else "roi"
        path = group_path(output_dir, index, seed, "roc.png", desc=desc, **entities)
        title = f"{seed} {entities['model'] or ''} {entities['contrast'] or 'ROI'}: leave-one-out"
        summary = dict(row) | {k: int(row[k]) for k in ("n", "n_folds_with_value")}
        figures.append(roc_plot(path, table, summary, title))
    return figures
