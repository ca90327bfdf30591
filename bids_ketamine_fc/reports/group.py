"""The group report, ``OUTPUT_DIR/group/group.html``: participants, z maps and cluster tables.

Self-contained (figures embedded as PNG): the subjects table, per seed and model a glass brain of
the ``RgtNR`` z map (positive: R > NR, negative: NR > R) thresholded at the height threshold, and
the clusters of that seed.
"""

from __future__ import annotations

import base64
import html
import logging
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.group.inference import glm
from bids_ketamine_fc.group.maps import MapIndex, group_path
from bids_ketamine_fc.reports.participant import STYLE, png_base64
from bids_ketamine_fc.utils.io import atomic_write_text

LOGGER = logging.getLogger(__name__)

#: Highlighted rows: significant clusters, excluded participants.
_SIG_STYLE = "tr.sig td{background:#fde0c5}"


def glass_brain(z_map: Path, threshold: float, title: str) -> str:
    """Plot a two-sided glass brain of a z map; return it as a base64 PNG.

    Parameters
    ----------
    z_map : Path
        The z map.
    threshold : float
        Absolute z below which voxels are not shown.
    title : str

    Returns
    -------
    str
        Base64-encoded PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    img = nb.load(z_map)
    finite = nb.Nifti1Image(np.nan_to_num(np.asanyarray(img.dataobj, np.float32)), img.affine)
    fig = plt.figure(figsize=(9, 2.6))
    with warnings.catch_warnings():  # nilearn warns "empty mask" when nothing passes the threshold
        warnings.filterwarnings("ignore", message="empty mask")
        plotting.plot_glass_brain(
            finite,
            threshold=threshold,
            plot_abs=False,
            colorbar=True,
            cmap="RdBu_r",
            display_mode="ortho",
            title=title,
            figure=fig,
        )
    encoded = png_base64(fig)
    plt.close(fig)
    return encoded


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if np.isnan(value) else f"{value:.3g}"
    return "n/a" if value is None else html.escape(str(value))


def html_table(table: pd.DataFrame, highlight: np.ndarray | None = None) -> str:
    """Return ``table`` as an HTML table, rows where ``highlight`` is true with class ``sig``."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for i, row in enumerate(table.itertuples(index=False)):
        marked = " class='sig'" if highlight is not None and highlight[i] else ""
        rows.append(f"<tr{marked}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _seed_section(settings: Settings, index: MapIndex, seed: str, table: pd.DataFrame) -> list:
    parts = [f"<h2>Seed {html.escape(seed)}</h2>"]
    for model in glm.model_names(settings.covariates):
        z_map = group_path(
            settings.output_dir,
            index,
            seed,
            "boldmap.nii.gz",
            model=model,
            contrast="RgtNR",
            stat="z",
        )
        threshold = float(stats.norm.isf(settings.voxel_p))
        title = f"{seed}, {model}: z (R > NR red, NR > R blue), |z| > {threshold:.2f}"
        parts.append(
            f"<img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{glass_brain(z_map, threshold, title)}'>"
        )
    rows = table[table["seed"] == seed].drop(columns="seed")
    significant = rows[rows["p_fwe"].to_numpy(dtype=float) < settings.cluster_p]
    parts.append(
        f"<h3>Clusters with p(FWE) &lt; {settings.cluster_p:g}</h3>"
        f"<p>{len(significant)} of the {len(rows)} clusters above the height threshold "
        "(all are in clusters.tsv).</p>"
    )
    if not significant.empty:
        parts.append(html_table(significant))
    return parts


def _summary(settings: Settings, subjects: pd.DataFrame) -> str:
    included = subjects[subjects["included"].astype(bool)]
    counts = included["group"].value_counts()
    items = [
        f"Participants: {len(subjects)}, included {len(included)} "
        f"(R {counts.get('R', 0)}, NR {counts.get('NR', 0)}).",
        f"Responder: (pre - post) / pre &ge; {settings.responder_threshold:g} "
        f"({html.escape(settings.pain_pre)} / {html.escape(settings.pain_post)}).",
        f"Models: {', '.join(glm.model_names(settings.covariates))}; covariates "
        f"{html.escape(', '.join(settings.covariates) or 'none')} (mean-centred).",
        f"Height threshold p &lt; {settings.voxel_p:g} (uncorrected), cluster p(FWE) &lt; "
        f"{settings.cluster_p:g}; inference {', '.join(settings.inference)}"
        + (
            f" ({settings.n_permutations} permutations)"
            if {"permutation", "tfce"} & set(settings.inference)
            else ""
        )
        + ".",
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _read_tsv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t") if path.exists() else None


def _png_file(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{encoded}'>"


def _brain_behaviour_section(group: Path) -> list[str]:
    """Correlation and leave-one-out tables and plots, read back from the files just written."""
    correlation = _read_tsv(group / "correlation.tsv")
    if correlation is None:
        return []
    parts = ["<h2>Brain-behaviour correlation</h2>"]
    if correlation.empty:
        parts.append("<p>No significant cluster: nothing to correlate.</p>")
    else:
        if correlation.get("circular", pd.Series(dtype=bool)).astype(bool).any():
            parts.append(
                "<p><b>Circular:</b> a cluster chosen by the R vs NR contrast gives an inflated r "
                "(the groups come from the same pain change; on pure noise such clusters still "
                "give large r). Its r is shown as a description; its p value and confidence "
                "intervals are not computed (n/a). The pre-specified leave-one-out test below is "
                "the test of the brain-behaviour relation.</p>"
            )
        parts.append(html_table(correlation))
        parts += [_png_file(p) for p in sorted(group.glob("seed-*/*_scatter.png"))]
    prediction = _read_tsv(group / "prediction.tsv")
    if prediction is not None and not prediction.empty:
        parts += [
            "<h3>Pre-specified leave-one-out test</h3>",
            "<p>Each hypothesis of --prediction, run whether or not the full data gave a "
            "cluster (full_data_clusters): every fold's model, threshold and clusters are redone "
            "under each permutation of the outcomes (on generated null data the share of p < "
            ".05 was 1-5 %, docs/group.rst); a fold without a surviving cluster scores 0 (no "
            "information).</p>",
            html_table(prediction),
        ]
        parts += [_png_file(p) for p in sorted(group.glob("seed-*/*_roc.png"))]
    return parts


def _ica_section(group: Path) -> list[str]:
    """Group ICA: the components table and the R vs NR clusters of the selected components."""
    components = _read_tsv(group / "ica" / "components.tsv")
    if components is None:
        return []
    parts = ["<h2>Group ICA</h2>", html_table(components, components["selected"].to_numpy(bool))]
    clusters = _read_tsv(group / "ica" / "clusters.tsv")
    if clusters is not None:
        parts += ["<h3>R vs NR in the selected components (RFT)</h3>", html_table(clusters)]
    return parts


def write_group_report(
    settings: Settings, index: MapIndex, subjects: pd.DataFrame, table: pd.DataFrame
) -> Path:
    """Write ``OUTPUT_DIR/group/group.html``.

    Parameters
    ----------
    settings : Settings
    index : MapIndex
        The subject-level maps analysed (gives the seeds and the file names).
    subjects : pandas.DataFrame
        The ``subjects.tsv`` table.
    table : pandas.DataFrame
        The ``clusters.tsv`` table.

    Returns
    -------
    Path
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Group report</title>",
        f"<style>{STYLE}{_SIG_STYLE}</style></head><body>",
        "<h1>Group level: responders (R) vs non-responders (NR)</h1>",
        _summary(settings, subjects),
        "<h2>Participants</h2>",
        html_table(subjects, ~subjects["included"].to_numpy(dtype=bool)),
    ]
    for seed in index.seeds:
        parts += _seed_section(settings, index, seed, table)
    n_sig = int(np.sum(table["p_fwe"].to_numpy(dtype=float) < settings.cluster_p))
    parts.append(f"<p>{n_sig} cluster(s) with p(FWE) &lt; {settings.cluster_p:g} in all.</p>")
    group = Path(settings.output_dir) / "group"
    parts += _brain_behaviour_section(group) + _ica_section(group)
    parts.append("</body></html>")
    path = Path(settings.output_dir) / "group" / "group.html"
    LOGGER.info("Writing the group report %s.", path)
    return atomic_write_text(path, "\n".join(parts))
