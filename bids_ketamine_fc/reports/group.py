"""The group report, ``OUTPUT_DIR/group/group.html``: who, the design, and what each seed shows.

Self-contained (inline 2x PNGs). Sections: the analysis in brief; participants and group sizes
per model, R vs NR on motion, age and pain (``group_comparison.tsv``); the design matrices; per
seed, each group's mean map, then per model the z map of R vs NR (the surviving clusters, or the
unthresholded map with "no cluster survives") and the table of significant clusters; the
brain-behaviour correlation and leave-one-out estimate; the group ICA
(:mod:`.group_extra`); the methods.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import pandas as pd
from scipy import stats

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.group.inference import glm
from bids_ketamine_fc.group.maps import MapIndex, group_path
from bids_ketamine_fc.reports import group_extra, group_maps
from bids_ketamine_fc.reports.figures import embed
from bids_ketamine_fc.reports.style import STYLE, definition_list, fmt, page, table
from bids_ketamine_fc.utils.io import atomic_write_text

LOGGER = logging.getLogger(__name__)


def _summary(settings: Settings, subjects: pd.DataFrame) -> str:
    included = subjects[subjects["included"].astype(bool)]
    counts = included["group"].value_counts()
    inference = ", ".join(settings.inference)
    if {"permutation", "tfce"} & set(settings.inference):
        inference += f" ({settings.n_permutations:,} permutations)"
    items = {
        "Participants": f"{len(subjects)}, included {len(included)} (R {counts.get('R', 0)}, "
        f"NR {counts.get('NR', 0)})",
        "Responder": f"(pre - post) / pre >= {settings.responder_threshold:g} "
        f"({settings.pain_pre}, {settings.pain_post})",
        "Models": f"{', '.join(glm.model_names(settings.covariates))}; covariates "
        f"{', '.join(settings.covariates) or 'none'} (mean-centred)",
        "Height threshold": f"voxel p < {settings.voxel_p:g} (uncorrected, one-sided)",
        "Cluster threshold": f"p(FWE) < {settings.cluster_p:g}",
        "Inference": inference,
    }
    return definition_list(items)


def _participant_rows(subjects: pd.DataFrame, settings: Settings) -> list[dict]:
    rows = []
    for _, row in subjects.iterrows():
        record = {
            "participant": row["participant_id"],
            "group": row["group"],
            "pain pre": row.get("pain_pre"),
            "pain post": row.get("pain_post"),
            "improvement (%)": 100 * row["improvement"] if pd.notna(row["improvement"]) else None,
        }
        record.update({c: row.get(c) for c in settings.covariates})
        record.update(
            {
                "mean FD (mm)": row.get("mean_fd"),
                "scrubbed (%)": row.get("scrubbed_percent"),
                "included": "yes" if row["included"] else "no",
                "exclusion reason": row.get("exclusion_reason"),
            }
        )
        rows.append(record)
    return rows


def _sidecar(path: Path) -> dict:
    json_path = path.with_name(path.name.replace(".nii.gz", ".json"))
    return json.loads(json_path.read_text()) if json_path.exists() else {}


def _participants_section(settings, index, subjects, comparison) -> list[str]:
    parts = ["<h2>Participants</h2>"]
    sizes, designs = [], []
    for model in glm.model_names(settings.covariates):
        path = group_path(
            settings.output_dir,
            index,
            index.seeds[0],
            "boldmap.nii.gz",
            model=model,
            contrast="RgtNR",
            stat="t",
        )
        design = _sidecar(path).get("Design")
        if design:
            n = design["NPerGroup"]
            sizes.append(
                {
                    "model": model,
                    "R": n.get("R"),
                    "NR": n.get("NR"),
                    "total": sum(n.values()),
                    "dof": design["DegreesOfFreedom"],
                    "columns": ", ".join(design["Columns"]),
                }
            )
            designs.append(design)
    parts += [
        f"<h3>Group sizes per model (seed {html.escape(index.seeds[0])})</h3>",
        table(sizes, text_columns=["columns"]),
    ]
    if comparison is not None and not comparison.empty:
        parts += [
            "<h3>Responders vs non-responders: motion, covariates, pain</h3>",
            _comparison_table(comparison),
        ]
    parts += [
        "<h3>All participants</h3>",
        table(
            _participant_rows(subjects, settings),
            highlight=list(~subjects["included"].astype(bool)),
            text_columns=["exclusion reason"],
        ),
    ]
    if designs:
        parts.append("<h3>Design matrices</h3><div class='grid'>")
        for design in designs:
            parts.append(
                "<figure>"
                + embed(group_maps.design_figure(design), design["Model"], css_class="design")
                + "</figure>"
            )
        parts.append(
            "</div><p class='small'>Columns scaled to their largest absolute value (covariates "
            "are mean-centred: grey is the mean).</p>"
        )
    return parts


_READABLE = {
    "mean_fd": "mean framewise displacement (mm)",
    "scrubbed_percent": "scrubbed volumes (%)",
    "pain_pre": "pain before",
    "pain_post": "pain after",
}


def _comparison_table(comparison: pd.DataFrame) -> str:
    rows = [
        {
            "variable": _READABLE.get(r["variable"], r["variable"]),
            "R mean (SD)": f"{fmt(r['mean_R'])} ({fmt(r['sd_R'])}), n = {int(r['n_R'])}",
            "NR mean (SD)": f"{fmt(r['mean_NR'])} ({fmt(r['sd_NR'])}), n = {int(r['n_NR'])}",
            "Welch t": r["t"],
            "p (t)": r["p_t"],
            "p (Mann-Whitney)": r["p_mannwhitney"],
        }
        for _, r in comparison.iterrows()
    ]
    return table(rows, {"p (t)": "p", "p (Mann-Whitney)": "p"}, text_columns=["variable"])


def _cluster_rows(rows: pd.DataFrame) -> list[dict]:
    return [
        {
            "model": r["model"],
            "contrast": r["contrast"],
            "inference": r["inference"],
            "cluster": r["cluster"],
            "voxels": r["size_vox"],
            "mm³": r["size_mm3"],
            "peak (x, y, z mm)": f"{r['peak_x']:.0f}, {r['peak_y']:.0f}, {r['peak_z']:.0f}",
            "peak t": r["peak_stat"],
            "peak label": r["peak_label"],
            "p(FWE)": r["p_fwe"],
            "p(FDR)": r["p_fdr"],
            "p(unc)": r["p_unc"],
        }
        for _, r in rows.iterrows()
    ]


def significant(rows: pd.DataFrame, cluster_p: float) -> pd.DataFrame:
    """Rows of a cluster table with p(FWE) below ``cluster_p``."""
    return rows[pd.to_numeric(rows["p_fwe"], errors="coerce").to_numpy(float) < cluster_p]


def _seed_section(settings: Settings, index: MapIndex, seed: str, clusters: pd.DataFrame):
    height = float(stats.norm.isf(settings.voxel_p))
    out = settings.output_dir
    means = [
        group_path(out, index, seed, "boldmap.nii.gz", model="groups", contrast=g, stat="effect")
        for g in glm.GROUPS
    ]
    panels = []
    if all(p.exists() for p in means):
        vmax = max(max(group_maps._max_abs(group_maps.load_finite(p)) for p in means), 0.2)
        panels += [
            group_maps.mean_panel(p, f"{g} mean", vmax)
            for p, g in zip(means, glm.GROUPS, strict=True)
        ]
    rows = clusters[clusters["seed"] == seed]
    found = significant(rows, settings.cluster_p)
    notes = []
    for model in glm.model_names(settings.covariates):
        z_path = group_path(
            out, index, seed, "boldmap.nii.gz", model=model, contrast="RgtNR", stat="z"
        )
        masks = sorted(
            z_path.parent.glob(f"*_seed-{seed}_model-{model}_contrast-*_cluster-*_mask.nii.gz")
        )
        label = f"{model}: z, R > NR red, NR > R blue"
        panel, survives = group_maps.z_panel(z_path, masks, height, label)
        panels.append(panel)
        if survives:
            notes.append(
                f"<b>{model}</b>: z inside the {len(masks)} cluster mask(s) with "
                f"p(FWE) &lt; {settings.cluster_p:g} (|z| &gt; {height:.2f})."
            )
        else:
            notes.append(
                f"<b>{model}</b>: <span class='bad'>no cluster survives p(FWE) &lt; "
                f"{settings.cluster_p:g}</span>; the unthresholded z map is shown."
            )
    parts = [
        f"<h2>Seed {html.escape(seed)}</h2>",
        "<figure>",
        embed(group_maps.glass_figure(panels), f"seed {seed}", close=False),
        "<figcaption>Top: mean Fisher z of each group (|z| &lt; 0.1 not coloured). "
        + " ".join(notes)
        + "</figcaption></figure>",
    ]
    if found.empty:
        parts.append(
            f"<p>No cluster with p(FWE) &lt; {settings.cluster_p:g} "
            f"({len(rows)} clusters above the height threshold in clusters.tsv).</p>"
        )
    else:
        parts += [
            f"<h3>Clusters with p(FWE) &lt; {settings.cluster_p:g}</h3>",
            table(
                _cluster_rows(found),
                {"p(FWE)": "p", "p(FDR)": "p", "p(unc)": "p"},
                text_columns=["peak label"],
            ),
        ]
    return parts


def write_group_report(
    settings: Settings,
    index: MapIndex,
    subjects: pd.DataFrame,
    clusters: pd.DataFrame,
    comparison: pd.DataFrame | None = None,
    methods: str = "",
) -> Path:
    """Write ``OUTPUT_DIR/group/group.html``.

    Parameters
    ----------
    settings : Settings
    index : MapIndex
        The subject-level maps analysed (gives the seeds and the file names).
    subjects : pandas.DataFrame
        ``subjects.tsv``.
    clusters : pandas.DataFrame
        ``clusters.tsv``.
    comparison : pandas.DataFrame or None
        ``group_comparison.tsv``.
    methods : str
        The methods boilerplate (HTML).

    Returns
    -------
    Path
    """
    start = time.perf_counter()
    parts = [
        "<h1>Group level: responders (R) vs non-responders (NR)</h1>",
        _summary(settings, subjects),
    ]
    parts += _participants_section(settings, index, subjects, comparison)
    for seed in index.seeds:
        parts += _seed_section(settings, index, seed, clusters)
    n_sig = len(significant(clusters, settings.cluster_p))
    parts.append(f"<p>{n_sig} cluster(s) with p(FWE) &lt; {settings.cluster_p:g} in all.</p>")
    group = Path(settings.output_dir) / "group"
    parts += group_extra.brain_behaviour_section(settings, group)
    parts += group_extra.ica_section(settings, group)
    if methods:
        parts += ["<h2>Methods</h2>", methods]
    path = group / "group.html"
    atomic_write_text(path, page("Group report", STYLE, parts))
    LOGGER.info("Group report %s drawn in %.1f s.", path, time.perf_counter() - start)
    return path
