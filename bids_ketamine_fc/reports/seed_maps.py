"""The seed-map figure of the participant report: each seed's Fisher z map on the template.

One row per seed, sagittal, coronal and axial slices cut at the seed's strongest connection away
from the seed, thresholded at a two-sided uncorrected p, the seed outlined, one colour bar.

Drawn as the report's other brain figures are (:mod:`~bids_ketamine_fc.reports.qc_figures`): all
the slices as images in one frameless matplotlib axes, each at its world coordinates. nilearn's
``plot_stat_map`` drew the same rows, but nine seeds took 1.5 s that way (0.7 s of displays with
five matplotlib axes each, 0.3 s to import ``nilearn.plotting``) and take 0.5 s here, loading
the maps included, in a participant level of about 7 s for a 2 mm run.
"""

from __future__ import annotations

from statistics import NormalDist

import nibabel as nb
import numpy as np

from bids_ketamine_fc.reports import qc_figures
from bids_ketamine_fc.reports.figures import nonzero_box, plane, pyplot

#: Colour scale of the seed maps: Fisher z from -VMAX to VMAX (r = +-0.76).
VMAX = 1.0
CMAP = "RdBu_r"
#: Cuts are placed at the strongest connection at least this far (mm) from the seed's centre.
MIN_DISTANCE_MM = 20.0
#: Two-sided p below which a voxel is coloured in the seed maps (uncorrected).
DISPLAY_P = 0.001
#: Gap (mm) between the slices of a row, and the room for the coordinates under them.
_GAP_MM, _LABEL_MM = 6.0, 14.0


def display_threshold(dof: int) -> float:
    """Return |Fisher z| at two-sided p = :data:`DISPLAY_P` for ``dof`` temporal dof (SE 1/sqrt(dof - 3))."""
    return NormalDist().inv_cdf(1.0 - DISPLAY_P / 2) / float(np.sqrt(max(dof - 3, 1)))


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


def thresholded_cmap(threshold: float):
    """Return the seed maps' colour map, grey where ``|z| <= threshold`` (as nilearn's bar)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    colours = colormaps[CMAP](np.linspace(0.0, 1.0, 256))
    colours[np.abs(np.linspace(-VMAX, VMAX, 256)) <= threshold] = (0.5, 0.5, 0.5, 1.0)
    return ListedColormap(colours)


def _panels(bg: nb.Nifti1Image) -> list[tuple[int, float, float, float]]:
    """Return, per plane (sagittal, coronal, axial): axis, left edge, width and height in mm."""
    panels, left = [], 0.0
    for axis in (0, 1, 2):
        x0, x1, y0, y1 = plane(bg, axis, 0.0)[1]
        panels.append((axis, left, x1 - x0, y1 - y0))
        left += x1 - x0 + _GAP_MM
    return panels


def _image(ax, values, extent, clip, **kwargs) -> None:
    """Draw one slice (from :func:`plane`) at ``extent`` (mm), clipped to its panel."""
    image = ax.imshow(values, origin="lower", extent=extent, interpolation="nearest", **kwargs)
    image.set_clip_path(clip)


def _outline(ax, values, extent, clip) -> None:
    """Outline the voxels of a binary slice (contour at 0.5 through the voxel centres)."""
    if not values.max() > 0.5 > values.min():
        return
    rows, cols = values.shape
    xs = np.linspace(extent[0], extent[1], 2 * cols + 1)[1::2]
    ys = np.linspace(extent[2], extent[3], 2 * rows + 1)[1::2]
    contour = ax.contour(xs, ys, values, levels=[0.5], colors="lime", linewidths=0.8)
    contour.set_clip_path(clip)


def _seed_row(ax, images, cut, panels, bottom: float, threshold: float, grey: float) -> None:
    """Draw one seed's row: background, thresholded map and seed outline on each plane."""
    from matplotlib.patches import Rectangle

    bg, img, seed_img = images
    for axis, left, width, height in panels:
        clip = Rectangle((left, bottom), width, height, transform=ax.transData)
        x0, _, y0, _ = plane(bg, axis, 0.0)[1]
        for image, kind in ((bg, "bg"), (img, "map"), (seed_img, "seed")):
            values, (a, b, c, d) = plane(image, axis, cut[axis])
            extent = (a + left - x0, b + left - x0, c + bottom - y0, d + bottom - y0)
            if kind == "bg":
                _image(ax, values, extent, clip, cmap="gray", vmin=0, vmax=grey)
            elif kind == "map":
                shown = np.ma.masked_inside(values, -threshold, threshold)
                if shown.count():
                    _image(ax, shown, extent, clip, cmap=CMAP, vmin=-VMAX, vmax=VMAX)
            else:
                _outline(ax, values, extent, clip)
        ax.text(left + width / 2, bottom - 3, f"{'xyz'[axis]}={cut[axis]:.0f}", color="white",
                fontsize=7, ha="center", va="top")  # fmt: skip
        if axis:
            ax.text(left + 3, bottom + 3, "L", color="white", fontsize=7)
            ax.text(left + width - 3, bottom + 3, "R", color="white", fontsize=7, ha="right")


def seed_maps_figure(seeds: list[tuple[str, str, nb.Nifti1Image]], bg, dof: int):
    """Draw subject-level seed maps, one row of three slices each, and one colour bar.

    Parameters
    ----------
    seeds : list of (str, str, nibabel.Nifti1Image)
        Name, Fisher z map (path) and voxels (RAS image) of each seed.
    bg : nibabel.Nifti1Image
        The anatomical background (RAS, diagonal affine).
    dof : int
        Temporal degrees of freedom of the maps (sets the display threshold).

    Returns
    -------
    matplotlib.figure.Figure, str
        The figure and its caption (HTML).
    """
    threshold = display_threshold(dof)
    panels = _panels(bg)
    width = panels[-1][1] + panels[-1][2]
    row = max(height for *_, height in panels) + _LABEL_MM + 12.0  # slices, coordinates, name
    fig_width = 9.3
    fig_height = fig_width * 0.93 / width * row * len(seeds)
    fig = pyplot().figure(figsize=(fig_width, fig_height), facecolor="black")
    ax = qc_figures._mosaic_axes(fig, [0.0, 0.0, 0.93, 1.0], width, row * len(seeds))
    grey = float(np.percentile(np.asarray(bg.dataobj), 99.5))
    for k, (name, path, seed_img) in enumerate(seeds):
        img = nb.as_closest_canonical(nb.load(path))
        img = nb.Nifti1Image(np.nan_to_num(np.asarray(img.dataobj, np.float32)), img.affine)
        cut = cut_coordinates(img, qc_figures.centre_of(seed_img))
        bottom = (len(seeds) - 1 - k) * row + _LABEL_MM
        ax.text(2, bottom + row - _LABEL_MM - 2, name, color="white", fontsize=9, va="top")
        _seed_row(ax, (bg, img, seed_img), cut, panels, bottom, threshold, grey)
    _colour_bar(fig, threshold, 1.0 - 0.25 / len(seeds), 0.7 / len(seeds))
    return fig, _caption(threshold, dof)


def _colour_bar(fig, threshold: float, top: float, height: float) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar_ax = fig.add_axes([0.945, top - height, 0.014, height])
    mappable = ScalarMappable(Normalize(-VMAX, VMAX), thresholded_cmap(threshold))
    bar = fig.colorbar(mappable, cax=bar_ax, ticks=[-VMAX, -threshold, 0, threshold, VMAX])
    bar.ax.set_yticklabels([f"{t:.2g}" for t in bar.get_ticks()])
    bar.ax.tick_params(labelsize=7, colors="white")
    bar.ax.set_title("Fisher z", color="white", fontsize=8, pad=4)


def _caption(threshold: float, dof: int) -> str:
    return (
        f"Fisher z, coloured where |z| &gt; {threshold:.2f} (two-sided p &lt; {DISPLAY_P:g} "
        f"uncorrected at {dof} temporal degrees of freedom), one scale &plusmn;{VMAX:g} for "
        "every seed (colour bar at the top right; grey: below the threshold); each row is cut "
        f"at the seed's strongest connection &ge; {MIN_DISTANCE_MM:g} mm from the seed "
        "(coordinates in mm under the slices); seed outlined in green."
    )
