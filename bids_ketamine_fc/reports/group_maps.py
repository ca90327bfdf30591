"""Brain figures of the group report: group means, R vs NR z maps, ICA components, design.

Every map is drawn as a nilearn glass brain (left, top and right views, L/R marked) with its
colour bar and units; the outlines are drawn once and reused (:class:`GlassCanvas`). A z map
without a surviving cluster is drawn unthresholded, on its own scale, and the caption says that
nothing survives: never an empty panel.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_ketamine_fc.reports.figures import pyplot


def load_finite(path: Path) -> nb.Nifti1Image:
    """Load a map with NaN outside its mask set to 0 (nilearn draws 0 as empty)."""
    img = nb.load(path)
    return nb.Nifti1Image(np.nan_to_num(np.asarray(img.dataobj, np.float32)), img.affine)


def _max_abs(img: nb.Nifti1Image) -> float:
    return float(np.max(np.abs(np.asarray(img.dataobj)))) if img.shape else 0.0


class GlassCanvas:
    """Glass-brain panels drawn once and reused: each new map replaces the previous overlay.

    nilearn's glass-brain outlines are a few hundred patches a view, the slow part of
    ``plot_glass_brain``; they are drawn once per canvas (``plot_glass_brain(None)``), and each
    map is then added with ``add_overlay`` and the figure saved. Each panel has its own colour
    bar (units on its left; grey over the thresholded range).

    Parameters
    ----------
    n_panels : int
        Panels of the figure, two a row.
    """

    def __init__(self, n_panels: int):
        from nilearn import plotting

        rows = -(-n_panels // 2)
        self.figure = pyplot().figure(figsize=(11.0, 2.35 * rows))
        self.panels = []
        for k in range(n_panels):
            row, col = divmod(k, 2)
            height, bottom = 0.84 / rows, 1 - (row + 1) / rows + 0.03 / rows
            ax = self.figure.add_axes([0.005 + 0.5 * col, bottom, 0.43, height])
            display = plotting.plot_glass_brain(
                None, display_mode="lzr", figure=self.figure, axes=ax, plot_abs=False,
                black_bg=False, annotate=True, colorbar=False,
            )  # fmt: skip
            rect = [0.447 + 0.5 * col, bottom + 0.1 * height, 0.008, 0.8 * height]
            title = ax.set_title("", loc="left", fontsize=9, pad=2)
            self.panels.append((display, self.figure.add_axes(rect), title))

    def draw(self, panels: list[dict]):
        """Draw ``panels`` (``img``, ``threshold``, ``vmax``, ``label``, ``units``); return the figure."""
        for k, (display, bar, title) in enumerate(self.panels):
            for axes in display.axes.values():
                for image in list(axes.ax.images):
                    image.remove()
                axes.ax.set_visible(k < len(panels))
            bar.clear()
            bar.set_visible(k < len(panels))
            title.set_text(panels[k]["label"] if k < len(panels) else "")
            if k < len(panels):
                self._overlay(display, bar, **panels[k])
        return self.figure

    @staticmethod
    def _overlay(display, bar, img, threshold, vmax, units, label=None) -> None:
        from matplotlib import colorbar, colors

        with warnings.catch_warnings():  # nilearn warns when nothing passes the threshold
            warnings.simplefilter("ignore")
            display.add_overlay(
                img, threshold=threshold or 1e-6, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                colorbar=False,
            )  # fmt: skip
        colorbar.ColorbarBase(bar, cmap="RdBu_r", norm=colors.Normalize(-vmax, vmax))
        if threshold:
            bar.axhspan(-threshold, threshold, color="0.85")
        bar.tick_params(labelsize=7)
        bar.set_ylabel(units, fontsize=8, labelpad=1)
        bar.yaxis.set_label_position("left")


@lru_cache(maxsize=4)
def canvas(n_panels: int) -> GlassCanvas:
    """Return the canvas of ``n_panels`` glass brains (built once per process)."""
    return GlassCanvas(n_panels)


def glass_figure(panels: list[dict]):
    """Return a figure of two-sided glass brains, two a row (:class:`GlassCanvas`).

    Parameters
    ----------
    panels : list of dict
        ``img``, ``threshold`` (None: unthresholded), ``vmax``, ``label`` and ``units``.
    """
    return canvas(2 * (-(-len(panels) // 2))).draw(panels)


def z_panel(z_path: Path, masks: list[Path], height: float, label: str) -> tuple[dict, bool]:
    """Return the glass-brain panel of one model's z map and whether a cluster survives.

    With surviving clusters, the z map is shown inside them (above the height threshold);
    without, unthresholded on its own scale.
    """
    img = load_finite(z_path)
    if masks:
        inside = np.zeros(img.shape, bool)
        for mask in masks:
            inside |= np.asarray(nb.load(mask).dataobj) > 0
        data = np.where(inside, np.asarray(img.dataobj), 0.0).astype(np.float32)
        shown = nb.Nifti1Image(data, img.affine)
        vmax = max(_max_abs(shown), height * 1.2)
        return {"img": shown, "threshold": height, "vmax": vmax, "label": label, "units": "z"}, True
    vmax = max(_max_abs(img), 1.0)
    panel = {"img": img, "threshold": None, "vmax": vmax, "label": label, "units": "z"}
    return panel, False


def mean_panel(path: Path, label: str, vmax: float) -> dict:
    """Return the glass-brain panel of a group's mean Fisher z map (|z| < 0.1 not coloured)."""
    return {
        "img": load_finite(path),
        "threshold": 0.1,
        "vmax": vmax,
        "label": label,
        "units": "mean Fisher z",
    }


def design_figure(design: dict):
    """Return the design matrix as an image: participants in rows, columns R, NR, covariates."""
    plt = pyplot()
    matrix = np.asarray(design["DesignMatrix"], float)
    columns, rows = design["Columns"], design["Rows"]
    fig, ax = plt.subplots(figsize=(0.55 * len(columns) + 1.6, 0.16 * len(rows) + 0.9))
    scaled = matrix / np.maximum(np.abs(matrix).max(axis=0), 1e-12)
    ax.imshow(scaled, cmap="gray", aspect="auto", interpolation="nearest", vmin=-1, vmax=1)
    ax.set_xticks(range(len(columns)), columns, fontsize=8, rotation=0)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.xaxis.tick_top()
    ax.set_title(design["Model"], fontsize=9, pad=14)
    fig.tight_layout()
    return fig


def component_panels(components: Path, table) -> list[dict]:
    """Return a panel per group ICA component (z, |z| > 2.3) labelled with its network and r."""
    img = nb.load(components)
    data = np.nan_to_num(np.asarray(img.dataobj, np.float32))
    data = data[..., None] if data.ndim == 3 else data
    records = table.set_index("component") if table is not None else None
    panels = []
    for k in range(data.shape[3]):
        volume = nb.Nifti1Image(data[..., k], img.affine)
        label = f"component {k + 1}"
        if records is not None and (k + 1) in records.index:
            info = records.loc[k + 1]
            label += f": {info['network']}, r = {float(info['r']):.2f}"
            label += " (selected)" if str(info["selected"]).lower() == "true" else ""
        vmax = max(_max_abs(volume), 3.0)
        panels.append({"img": volume, "threshold": 2.3, "vmax": vmax, "label": label, "units": "z"})
    return panels
