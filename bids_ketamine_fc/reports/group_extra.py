"""Sections of the group report read back from the files of the later analyses.

- :func:`brain_behaviour_section`: ``correlation.tsv`` (with the circularity note), the scatter
  plots, the leave-one-out estimate (``prediction.tsv``) and its ROC curves;
- :func:`ica_section`: ``ica/components.tsv``, every component as a glass brain with its matched
  network and r, and the R vs NR maps and clusters of the selected (default-mode) component.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd
from scipy import stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.group.ica.compare import component_label
from bids_ketamine_fc.group.inference import glm
from bids_ketamine_fc.reports import group_maps
from bids_ketamine_fc.reports.figures import embed
from bids_ketamine_fc.reports.style import fmt, table

_P = "p"


def _read_tsv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t", na_values=["n/a"]) if path.exists() else None


def png_file(path: Path, width: int = 420) -> str:
    """Return a PNG file (drawn at 2x) as an inline ``<img>`` shown ``width`` CSS pixels wide."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return (
        f"<img class='fig' style='width:{width}px' alt='{html.escape(path.name)}' "
        f"src='data:image/png;base64,{encoded}'>"
    )


def _where(row) -> str:
    keys = [str(row[k]) for k in ("model", "contrast", "inference") if pd.notna(row.get(k))]
    cluster = row.get("cluster")
    return " ".join(keys) + (f" cluster {int(cluster)}" if pd.notna(cluster) else " ROI")


def _correlation_rows(correlation: pd.DataFrame) -> list[dict]:
    return [
        {
            "seed": r["seed"],
            "region": _where(r),
            "n": r["n"],
            "r": r["r"],
            "95% CI": f"{fmt(r.get('ci_low'), 2)} to {fmt(r.get('ci_high'), 2)}",
            "p": r["p"],
            "circular": "yes" if str(r.get("circular")).lower() == "true" else "no",
            "Spearman rho": r.get("spearman_rho"),
            "partial r": r.get("partial_r"),
            "r in R": r.get("r_R"),
            "r in NR": r.get("r_NR"),
        }
        for _, r in correlation.iterrows()
    ]


def _prediction_rows(prediction: pd.DataFrame) -> list[dict]:
    return [
        {
            "seed": r["seed"],
            "region": _where(r),
            "n": r["n"],
            "full-data clusters": r.get("full_data_clusters"),
            "folds with a cluster": f"{fmt(r.get('n_folds_with_value'))} / {fmt(r.get('n'))}",
            "circular r": r.get("circular_r"),
            "cross-validated r": r.get("cv_r"),
            "p (r)": r.get("cv_r_p"),
            "AUC": r.get("auc"),
            "p (AUC)": r.get("auc_p"),
            "accuracy": r.get("accuracy"),
            "p (accuracy)": r.get("accuracy_p"),
        }
        for _, r in prediction.iterrows()
    ]


def brain_behaviour_section(settings: Settings, group: Path) -> list[str]:
    """Return the brain-behaviour section (empty when the step did not run)."""
    correlation = _read_tsv(group / "correlation.tsv")
    prediction = _read_tsv(group / "prediction.tsv")
    if correlation is None and prediction is None:
        return []
    parts = ["<h2>Brain-behaviour correlation</h2>"]
    if correlation is None or correlation.empty:
        parts.append(
            f"<p>No cluster to correlate: none with p(FWE) &lt; {settings.cluster_p:g} in the "
            f"model {html.escape(settings.correlation_model)} under "
            f"{html.escape(settings.correlation_inference)} inference (--correlation-model, "
            "--correlation-inference), and no --roi.</p>"
        )
    else:
        circular = correlation.get("circular", pd.Series(dtype=str)).astype(str).str.lower()
        if circular.eq("true").any():
            parts.append(
                "<p class='note'><b>Circular:</b> a cluster chosen by the R vs NR contrast gives "
                "an inflated r, because R and NR are defined from the same pain change "
                "(Kriegeskorte et al. 2009; Vul et al. 2009): on pure noise such clusters still "
                "give large r. Its r is shown as a description; its p value and confidence "
                "intervals are not computed (n/a). The pre-specified leave-one-out test below is "
                "the test of the brain-behaviour relation.</p>"
            )
        parts.append(table(_correlation_rows(correlation), {"p": _P}))
        scatter = sorted(group.glob("seed-*/*_scatter.png"))
        parts.append("<div class='grid'>" + "".join(png_file(p) for p in scatter) + "</div>")
    if prediction is not None and not prediction.empty:
        rocs = sorted(group.glob("seed-*/*_roc.png"))
        parts += [
            "<h3>Pre-specified leave-one-out test</h3>",
            "<p>Each hypothesis of --prediction, run whether or not the full data gave a cluster: "
            "every fold's model, threshold and clusters are redone under each permutation of the "
            "outcomes (on generated null data the share of p &lt; 0.05 was 1-5 %, see the "
            "documentation); a fold without a surviving cluster scores 0 (no information).</p>",
            table(_prediction_rows(prediction), {"p (r)": _P, "p (AUC)": _P, "p (accuracy)": _P}),
            "<div class='grid'>" + "".join(png_file(p, 380) for p in rocs) + "</div>",
        ]
    return parts


def _component_maps(settings: Settings, ica: Path, label: str) -> list[str]:
    """Return the R vs NR z maps of one component, one panel per model."""
    height = float(stats.norm.isf(settings.voxel_p))
    panels, notes = [], []
    for model in glm.model_names(settings.covariates):
        found = sorted(
            ica.glob(f"*_component-{label}_model-{model}_contrast-RgtNR_stat-z_boldmap.nii.gz")
        )
        if not found:
            continue
        masks = sorted(
            ica.glob(f"*_component-{label}_model-{model}_contrast-*_cluster-*_mask.nii.gz")
        )
        panel, survives = group_maps.z_panel(found[0], masks, height, f"{model}: z, R > NR red")
        panels.append(panel)
        notes.append(
            f"<b>{model}</b>: "
            + (
                f"clusters with p(FWE) &lt; {settings.cluster_p:g} shown"
                if survives
                else "<span class='bad'>no cluster survives</span>; unthresholded z map shown"
            )
            + "."
        )
    if not panels:
        return []
    return [
        "<figure>",
        embed(group_maps.glass_figure(panels), f"component {label} R vs NR", close=False),
        f"<figcaption>{' '.join(notes)}</figcaption></figure>",
    ]


def ica_section(settings: Settings, group: Path) -> list[str]:
    """Return the group ICA section (empty when the ICA did not run)."""
    ica = group / "ica"
    components = _read_tsv(ica / "components.tsv")
    if components is None:
        return []
    parts = ["<h2>Group ICA</h2>"]
    shown = components[[c for c in components.columns if not c.startswith("r_")]]
    selected = components["selected"].astype(str).str.lower().eq("true")
    parts.append(table(shown.to_dict("records"), highlight=list(selected)))
    maps = sorted(ica.glob("*_desc-ica_components.nii.gz"))
    if maps:
        panels = group_maps.component_panels(maps[0], components)
        parts.append("<figure>")
        for start in range(0, len(panels), 4):
            parts.append(
                embed(group_maps.glass_figure(panels[start : start + 4]), "components", close=False)
            )
        parts.append(
            "<figcaption>Every group component (z, |z| &gt; 2.3), with the Yeo-7 network it "
            "matches best and their spatial correlation r.</figcaption></figure>"
        )
    for _, row in components[selected].iterrows():
        label = component_label(int(row["component"]), len(components))
        parts += [
            f"<h3>Component {int(row['component'])} ({html.escape(str(row['network']))}): "
            "R vs NR</h3>",
            *_component_maps(settings, ica, label),
        ]
    clusters = _read_tsv(ica / "clusters.tsv")
    if clusters is not None:
        found = clusters[pd.to_numeric(clusters["p_fwe"], errors="coerce") < settings.cluster_p]
        parts.append(
            f"<p>{len(found)} cluster(s) with p(FWE) &lt; {settings.cluster_p:g} in the selected "
            f"components ({len(clusters)} above the height threshold in ica/clusters.tsv).</p>"
        )
    return parts
