"""The participant report, ``OUTPUT_DIR/sub-<label>.html``: the denoising story and the seed maps.

Self-contained (inline SVG figures, their images unsampled: sharp at any zoom). Drawn from
what the runs wrote: the QC rows, the report data of each run
(:func:`~bids_ketamine_fc.participant.qc.write_report_data`) and the subject-level maps with their
sidecars. Sections: summary; per run, the QC numbers, the motion, DVARS and carpet plot before
and after denoising, and the tSNR map; the seeds on the template with their coverage; the seeds'
maps (one figure, :mod:`~bids_ketamine_fc.reports.seed_maps`); the settings that shape the
numbers; the methods paragraph.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import numpy as np

from bids_ketamine_fc.reports import qc_figures
from bids_ketamine_fc.reports.figures import BACKGROUND, background, embed
from bids_ketamine_fc.reports.seed_maps import seed_maps_figure
from bids_ketamine_fc.reports.style import STYLE, definition_list, fmt, page, table
from bids_ketamine_fc.utils.io import atomic_write_text

LOGGER = logging.getLogger(__name__)


def _load(path: str | None) -> dict | None:
    if not path or not Path(path).is_file():
        return None
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def _run_section(row: dict, data: dict | None, bg, fd_threshold: float | None) -> list[str]:
    name = html.escape(str(row["run"]))
    included = bool(row.get("included", True))
    status = (
        "<span class='ok'>included</span>"
        if included
        else f"<span class='bad'>excluded: {html.escape(str(row.get('exclusion_reason')))}</span>"
    )
    items = {
        "Volumes": f"{row['n_volumes']} ({row['n_dummy']} dummy, {row['n_scrubbed']} scrubbed, "
        f"{row['n_kept']} kept)",
        "Mean framewise displacement": f"{fmt(row['mean_fd'], 3)} mm",
        "Median tSNR (before denoising)": fmt(row["tsnr_median"], 3),
        "Regressors": f"{row.get('n_regressors', 'n/a')} ({row.get('n_confounds', 'n/a')} "
        f"confounds, {row['n_scrubbed'] if row.get('n_regressors') else 0} spikes, constant "
        "and trends)",
        "Temporal degrees of freedom left": fmt(row.get("dof"), 3),
    }
    if row.get("notes") not in (None, "n/a"):
        items["Notes"] = str(row["notes"])
    parts = [f"<h3>{name} &middot; {status}</h3>", definition_list(items)]
    if data is not None:
        parts.append(
            "<figure>"
            + embed(qc_figures.denoising_figure(data, fd_threshold), f"{name} denoising", svg=True)
            + "<figcaption>Framewise displacement (scrubbed volumes red, dummy scans grey), "
            "DVARS before and after denoising, and the carpet plot of "
            f"{data['carpet_before'].shape[1] if 'carpet_before' in data else 0} brain voxels "
            "(evenly spaced, ordered by mean intensity: white matter at the top, CSF at the "
            "bottom; evenly spaced rows of them drawn, one per pixel at twice the display size) "
            "before and after denoising, in % of each voxel's mean.</figcaption></figure>"
        )
        if "tsnr" in data:
            parts.append(
                "<figure>" + embed(qc_figures.tsnr_figure(data, bg), f"{name} tSNR", svg=True)
                + "<figcaption>Temporal signal-to-noise ratio before denoising (mean over "
                "standard deviation in time), brain mask of the run.</figcaption></figure>"
            )  # fmt: skip
    return parts


def _seed_rows(maps: dict[str, str]) -> tuple[list[dict], dict]:
    rows, sidecars = [], {}
    for seed, path in maps.items():
        sidecar_path = Path(str(path).replace(".nii.gz", ".json"))
        sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
        sidecars[seed] = sidecar
        definition = sidecar.get("Seed", {})
        if definition.get("Type") == "sphere":
            centre = ", ".join(f"{float(c):g}" for c in definition.get("CenterMNI", []))
            where = f"sphere of {float(definition.get('RadiusMM', 0)):g} mm at MNI ({centre})"
        elif definition.get("Type") == "atlas":
            source = definition.get("Source") or f"label {definition.get('Label')}"
            where = f"{source} (TemplateFlow atlas-{definition.get('Atlas')})"
        else:
            where = f"mask {Path(str(definition.get('MaskFile', 'n/a'))).name}"
        rows.append({
            "seed": seed, "definition": where, "voxels": definition.get("NumberOfVoxels"),
            "coverage": definition.get("Coverage"),
        })  # fmt: skip
    return rows, sidecars


def _seeds_section(maps: dict[str, str], data: dict | None, bg) -> list[str]:
    rows, sidecars = _seed_rows(maps)
    parts = ["<h2>Seeds</h2>", table(rows, {"coverage": "{:.0%}"}, text_columns=["definition"])]
    seed_imgs = {}
    if data is not None and "seed_counts" in data:
        names = [str(n) for n in data["seed_names"]]
        seed_imgs = dict(zip(names, qc_figures.seed_images(data), strict=True))
        labels = {
            r["seed"]: f"{r['seed']}: {r['voxels']} vox, {fmt(100 * (r['coverage'] or 0), 3)} %"
            for r in rows
        }
        parts.append(
            "<figure>" + embed(qc_figures.seeds_figure(data, bg, labels), "seeds", svg=True)
            + "<figcaption>Each seed's voxels inside the brain mask (coverage: fraction of the "
            "seed inside the mask), coronal and axial slices through its centre.</figcaption>"
            "</figure>"
        )  # fmt: skip
    parts.append("<h2>Seed-to-voxel connectivity</h2>")
    by_dof: dict[int, list] = {}  # one figure per threshold (the seeds of a subject share one)
    for seed, path in maps.items():
        if seed in seed_imgs:
            dof = int(sidecars[seed].get("DegreesOfFreedom") or 0)
            by_dof.setdefault(dof, []).append((seed, path, seed_imgs[seed]))
    for dof, seeds in by_dof.items():
        fig, caption = seed_maps_figure(seeds, bg, dof)
        names = ", ".join(seed for seed, _, _ in seeds)
        parts.append(
            f"<figure>{embed(fig, f'seed maps: {names}', svg=True)}<figcaption>{caption}</figcaption>"
            "</figure>"
        )
    return parts


def settings_that_matter(settings: dict) -> dict:
    """Return the participant-level settings that shape the numbers, without machine paths."""

    def name(value):
        return Path(str(value)).name if value and ("/" in str(value)) else value

    return {
        "Denoising strategy": name(settings.get("denoise_strategy")),
        "Scrubbing threshold (--fd-threshold)": settings.get("fd_threshold") or "strategy's",
        "Dummy scans (--dummy-scans)": settings.get("dummy_scans") or "fMRIPrep's",
        "Smoothing FWHM": f"{settings.get('smoothing_fwhm')} mm",
        "Seeds": name(settings.get("seeds")),
        "Minimum seed coverage": settings.get("min_seed_coverage"),
        "Minimum volumes kept": settings.get("min_volumes"),
        "Space": settings.get("space"),
        "Task": settings.get("task_id"),
        "Reduced dimensions (group ICA input)": settings.get("reduced_dims"),
    }


def write_participant_report(
    subject: str,
    runs: list[dict],
    maps: dict[str, str],
    out_file: Path,
    settings_text: str = "",
    methods: str = "",
) -> Path:
    """Write the self-contained HTML report of one participant.

    Parameters
    ----------
    subject : str
        Label without ``sub-``.
    runs : list of dict
        Per run: ``run`` (file-name prefix), ``qc`` (its QC row) and ``report`` (the report
        data ``.npz``, or None).
    maps : dict
        Seed name -> subject-level Fisher z map.
    out_file : Path
    settings_text : str
        The level's settings as JSON.
    methods : str
        The methods paragraph (HTML), shown at the end.

    Returns
    -------
    Path
    """
    start = time.perf_counter()
    settings = json.loads(settings_text) if settings_text else {}
    strategy_fd = settings.get("fd_threshold")
    bg = background()
    datas = [_load(run.get("report")) for run in runs]
    included = [row for row in runs if row["qc"].get("included", True)]
    summary = {
        "Runs": f"{len(runs)} ({len(included)} included)",
        "Space": settings.get("space", "n/a"),
        "Seeds": len(maps),
        "Figure background": BACKGROUND,
    }
    parts = [f"<h1>sub-{html.escape(subject)}</h1>", definition_list(summary), "<h2>Denoising</h2>"]
    for run, data in zip(runs, datas, strict=True):
        row = dict(run["qc"], run=run["run"])
        parts += _run_section(row, data, bg, strategy_fd)
    first = next((d for d in datas if d is not None and "seed_counts" in d), None)
    if maps:
        parts += _seeds_section(maps, first, bg)
    else:
        parts.append("<p class='bad'>No subject-level map: every run was excluded.</p>")
    if settings:
        parts += ["<h2>Settings</h2>", definition_list(settings_that_matter(settings))]
    if methods:
        parts += ["<h2>Methods</h2>", methods]
    path = atomic_write_text(Path(out_file), page(f"sub-{subject}", STYLE, parts))
    LOGGER.info("Report %s drawn in %.1f s.", path.name, time.perf_counter() - start)
    return path
