"""The participant report, ``OUTPUT_DIR/sub-<label>.html``: the denoising story and the seed maps.

Self-contained (inline SVG figures, their images unsampled: sharp at any zoom). Drawn from
what the runs wrote: the QC rows, the report data of each run
(:func:`~bids_ketamine_fc.participant.qc.write_report_data`) and the subject-level maps with their
sidecars. Sections: summary; per run, the QC numbers, the motion, DVARS and carpet plot before
and after denoising, and the tSNR map; the seeds on the template with their coverage; the seeds'
maps (nilearn ``plot_stat_map``, one figure); the settings that shape the numbers; the methods
paragraph.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import stats

from bids_ketamine_fc.reports import qc_figures
from bids_ketamine_fc.reports.figures import (
    BACKGROUND,
    background,
    crop,
    embed,
    nonzero_box,
    pyplot,
)
from bids_ketamine_fc.reports.style import STYLE, definition_list, fmt, page, table
from bids_ketamine_fc.utils.io import atomic_write_text

LOGGER = logging.getLogger(__name__)

#: Colour scale of the seed maps: Fisher z from -VMAX to VMAX (r = +-0.76).
VMAX = 1.0
CMAP = "RdBu_r"
#: Cuts are placed at the strongest connection at least this far (mm) from the seed's centre.
MIN_DISTANCE_MM = 20.0
#: Two-sided p below which a voxel is coloured in the seed maps (uncorrected).
DISPLAY_P = 0.001


def _load(path: str | None) -> dict | None:
    if not path or not Path(path).is_file():
        return None
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def display_threshold(dof: int) -> float:
    """Return |Fisher z| at two-sided p = :data:`DISPLAY_P` for ``dof`` temporal dof (SE 1/sqrt(dof - 3))."""
    return float(stats.norm.isf(DISPLAY_P / 2) / np.sqrt(max(dof - 3, 1)))


def cut_coordinates(img: nb.Nifti1Image, centre: np.ndarray) -> tuple[float, float, float]:
    """Return where to cut a seed map: its strongest connection away from the seed.

    The voxel with the largest |z| averaged over its 3 x 3 x 3 neighbourhood (so that a lone
    noisy voxel does not win), at least :data:`MIN_DISTANCE_MM` from the seed's ``centre``.
    """
    from scipy import ndimage

    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    axes = [img.affine[k, k] * np.arange(n) + img.affine[k, 3] for k, n in enumerate(data.shape)]
    box = nonzero_box(data)  # the same neighbourhood means on fewer voxels
    if box is None:
        return tuple(float(img.affine[k, 3]) for k in range(3))
    data, axes = data[box], [values[b] for values, b in zip(axes, box, strict=True)]
    smoothed = ndimage.uniform_filter(np.abs(data), size=3, mode="constant")
    distance2 = sum(
        np.reshape((values - centre[k]) ** 2, [-1 if j == k else 1 for j in range(3)])
        for k, values in enumerate(axes)
    )  # the affine is diagonal here (maps are loaded RAS-diagonal by the caller)
    candidates = (distance2 >= MIN_DISTANCE_MM**2) & (data != 0)
    if not candidates.any():
        return tuple(float(img.affine[k, 3]) for k in range(3))
    best = np.unravel_index(np.argmax(np.where(candidates, smoothed, -1.0)), data.shape)
    return tuple(float(axes[k][best[k]]) for k in range(3))


def _thresholded_cmap(threshold: float):
    """Return the seed maps' colour map, grey where ``|z| <= threshold`` (as nilearn's bar)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    colours = colormaps[CMAP](np.linspace(0.0, 1.0, 256))
    colours[np.abs(np.linspace(-VMAX, VMAX, 256)) <= threshold] = (0.5, 0.5, 0.5, 1.0)
    return ListedColormap(colours)


def seed_maps_figure(seeds: list[tuple[str, str, nb.Nifti1Image]], bg, dof: int):
    """Draw subject-level seed maps, one row each (nilearn ``plot_stat_map``), one colour bar.

    One figure and one colour bar for all the seeds (they share the colour scale and the
    threshold): a figure and a colour bar per seed took a third more time (nine seeds).

    Parameters
    ----------
    seeds : list of (str, str, nibabel.Nifti1Image)
        Name, Fisher z map (path) and voxels (RAS image) of each seed.
    bg : nibabel.Nifti1Image
        The anatomical background.
    dof : int
        Temporal degrees of freedom of the maps (sets the display threshold).

    Returns
    -------
    matplotlib.figure.Figure, str
        The figure and its caption (HTML).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from nilearn import plotting

    plt = pyplot()
    threshold = display_threshold(dof)
    row = 2.6  # inches
    fig = plt.figure(figsize=(9.0, row * len(seeds)), facecolor="black")
    for k, (name, path, seed_img) in enumerate(seeds):
        img = nb.as_closest_canonical(nb.load(path))
        img = nb.Nifti1Image(np.nan_to_num(np.asarray(img.dataobj, np.float32)), img.affine)
        cut = cut_coordinates(img, qc_figures.centre_of(seed_img))
        box = nonzero_box(np.asarray(img.dataobj))
        if (
            box is not None
            and seed_img.shape == img.shape
            and np.allclose(seed_img.affine, img.affine)
        ):
            # nilearn checks and slices whole volumes: give it the brain's box only
            img, seed_img = crop(img, box), crop(seed_img, box)
        display = plotting.plot_stat_map(
            img, bg_img=bg, cut_coords=cut, threshold=threshold, vmax=VMAX, cmap=CMAP,
            figure=fig, axes=[0.0, 1.0 - (k + 1) / len(seeds), 0.93, 0.97 / len(seeds)],
            title=name, draw_cross=False, annotate=True, black_bg=True, dim=0,
            symmetric_cbar=True, colorbar=False, resampling_interpolation="nearest",
        )  # fmt: skip
        display.add_contours(seed_img, levels=[0.5], colors="lime", linewidths=0.8)
    top = 1.0 - 0.25 / len(seeds)
    bar_ax = fig.add_axes([0.945, top - 0.7 / len(seeds), 0.014, 0.7 / len(seeds)])
    mappable = ScalarMappable(Normalize(-VMAX, VMAX), _thresholded_cmap(threshold))
    bar = fig.colorbar(mappable, cax=bar_ax, ticks=[-VMAX, -threshold, 0, threshold, VMAX])
    bar.ax.set_yticklabels([f"{t:.2g}" for t in bar.get_ticks()])
    bar.ax.tick_params(labelsize=7, colors="white")
    bar.ax.set_title("Fisher z", color="white", fontsize=8, pad=4)
    caption = (
        f"Fisher z, coloured where |z| &gt; {threshold:.2f} (two-sided p &lt; {DISPLAY_P:g} "
        f"uncorrected at {dof} temporal degrees of freedom), one scale &plusmn;{VMAX:g} for "
        "every seed (colour bar at the top right; grey: below the threshold); each row is cut "
        f"at the seed's strongest connection &ge; {MIN_DISTANCE_MM:g} mm from the seed "
        "(coordinates in mm under the slices); seed outlined in green."
    )
    return fig, caption


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
