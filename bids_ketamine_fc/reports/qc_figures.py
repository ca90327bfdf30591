"""Figures of one run's denoising, drawn from what the run wrote (:mod:`~bids_ketamine_fc.participant.qc`).

- :func:`denoising_figure`: framewise displacement with the scrubbed volumes, DVARS before and
  after denoising, and the carpet plot before and after (the same voxels, same order);
- :func:`tsnr_figure`: the tSNR map on the template, axial slices;
- :func:`seeds_figure`: each seed's voxels on the template, through the seed's centre.
"""

from __future__ import annotations

import numpy as np

from bids_ketamine_fc.reports.figures import DPI, plane, pyplot

#: Carpet colour range: +-this many % of each voxel's mean signal.
CARPET_RANGE_PCT = 2.0
_SCRUB_COLOUR = "#d62728"
_SEED_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf")


def _percent_change(series: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Return ``(n_voxels, T)`` linearly detrended series in % of each voxel's mean."""
    t = np.arange(series.shape[0], dtype=np.float64)
    design = np.column_stack([np.ones_like(t), t - t.mean()])
    beta = np.linalg.lstsq(design, series, rcond=None)[0]
    resid = series - design @ beta
    return (100.0 * resid / np.where(means > 0, means, 1.0)).T


def denoising_figure(data: dict, fd_threshold: float | None):
    """Return the denoising figure of one run.

    Parameters
    ----------
    data : dict
        The arrays of :func:`~bids_ketamine_fc.participant.qc.write_report_data`.
    fd_threshold : float or None
        The scrubbing threshold (mm), drawn as a line.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = pyplot()
    fd, outliers, n_dummy = data["fd"], data["outliers"].astype(bool), int(data["n_dummy"])
    volumes = n_dummy + np.arange(fd.size)
    carpets = "carpet_before" in data
    heights = [0.9, 0.9, 1.9, 1.9] if carpets else [0.9]  # inches
    gap, top, bottom = 0.12, 0.1, 0.5
    total = sum(heights) + gap * (len(heights) - 1) + top + bottom
    fig = plt.figure(figsize=(10.5, total))
    axes, y = [], total - top
    for height in heights:
        y -= height
        axes.append(
            fig.add_axes([0.075, y / total, 0.85, height / total], sharex=axes[0] if axes else None)
        )
        y -= gap
    axes = np.array(axes)
    spans = _spans(volumes[outliers])
    for ax in axes[:2] if carpets else axes:  # one collection per axes: an axvspan each was slow
        ax.broken_barh(spans, (0, 1), transform=ax.get_xaxis_transform(), color=_SCRUB_COLOUR,
                       alpha=0.25, lw=0)  # fmt: skip
    axes[0].plot(volumes, fd, color="0.15", lw=0.8)
    if fd_threshold:
        axes[0].axhline(fd_threshold, color=_SCRUB_COLOUR, lw=0.8, ls="--")
    axes[0].set_ylabel("FD (mm)", fontsize=8)
    label = f"{outliers.sum()} scrubbed (red)" + (
        f", FD > {fd_threshold:g} mm dashed" if fd_threshold else ""
    )
    axes[0].text(0.995, 0.93, label, transform=axes[0].transAxes, ha="right", va="top", fontsize=7)
    if carpets:
        _dvars_axis(axes[1], data, volumes)
        rows = n_dummy + data["after_rows"]
        means = data["carpet_before"].mean(axis=0)
        before = _percent_change(data["carpet_before"], means)
        after = 100.0 * data["carpet_after"].T / np.where(means > 0, means, 1.0)[:, None]
        pixels = int(heights[2] * DPI)
        for ax, values, x, title in (
            (axes[2], before, volumes, "before denoising (detrended)"),
            (axes[3], after, rows, "after denoising"),
        ):
            shown = values[
                np.round(np.linspace(0, len(values) - 1, min(len(values), pixels))).astype(int)
            ]  # rows the figure can show: at most one per pixel
            image = ax.imshow(
                shown, aspect="auto", cmap="gray", interpolation="nearest",
                vmin=-CARPET_RANGE_PCT, vmax=CARPET_RANGE_PCT,
                extent=(x[0] - 0.5, x[-1] + 0.5, values.shape[0], 0),
            )  # fmt: skip
            ax.set_ylabel(f"voxels\n{title}", fontsize=8)
            ax.set_yticks([])
        position = axes[3].get_position()
        bar_ax = fig.add_axes([0.935, position.y0, 0.01, axes[2].get_position().y1 - position.y0])
        bar = fig.colorbar(image, cax=bar_ax)
        bar.set_label("% of voxel mean", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("volume (0 = first volume of the run)", fontsize=8)
    axes[-1].set_xlim(-0.5, n_dummy + fd.size - 0.5)
    for ax in axes:
        ax.tick_params(labelsize=7)
        if n_dummy:
            ax.axvspan(-0.5, n_dummy - 0.5, color="0.8", lw=0)
    return fig


def _spans(volumes: np.ndarray) -> list[tuple[float, float]]:
    """Return (start, width) of each run of consecutive volumes, a volume 1 wide."""
    if not volumes.size:
        return []
    breaks = np.flatnonzero(np.diff(volumes) > 1)
    starts = np.r_[volumes[0], volumes[breaks + 1]]
    stops = np.r_[volumes[breaks], volumes[-1]]
    return [(float(a) - 0.5, float(b - a) + 1.0) for a, b in zip(starts, stops, strict=True)]


def _dvars_axis(ax, data: dict, volumes: np.ndarray) -> None:
    """DVARS before (grey) and after (blue) denoising, in % of the mean brain signal."""
    rows = int(data["n_dummy"]) + data["after_rows"]
    before, after = data["dvars_before"], data["dvars_after"]
    ax.plot(volumes[1:], before[1:], color="0.45", lw=0.8, label="before")
    ax.plot(rows[1:], after[1:], color="#1f77b4", lw=0.8, label="after")
    ax.set_ylabel("DVARS (%)", fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=2)
    ax.set_ylim(0, max(np.percentile(before[1:], 99.5), np.percentile(after[1:], 99.5)) * 1.15)


def _volume(values: np.ndarray, mask_index: np.ndarray, shape, affine):
    import nibabel as nb

    volume = np.zeros(int(np.prod(shape)), np.float32)
    volume[mask_index] = values
    img = nb.Nifti1Image(volume.reshape(shape, order="F"), affine)
    return nb.as_closest_canonical(img)


def _panel(ax, img, axis: int, coordinate: float, offset, masked: bool = False, **kwargs):
    """Draw the slice of ``img`` at ``coordinate`` into a mosaic axes, shifted by ``offset`` (mm).

    ``masked`` leaves the voxels <= 0 transparent. Returns the ``AxesImage``.
    """
    values, (left, right, bottom, top) = plane(img, axis, coordinate)
    if masked:
        values = np.ma.masked_less_equal(values, 0)
    extent = (left + offset[0], right + offset[0], bottom + offset[1], top + offset[1])
    return ax.imshow(values, origin="lower", extent=extent, interpolation="nearest", **kwargs)


def _mosaic_axes(fig, rect: list[float], width: float, height: float):
    """Return one axes without frame holding a mosaic of ``width`` x ``height`` mm.

    All the panels of a figure go into one axes (one matplotlib axes per panel cost about as
    much as the drawing itself).
    """
    ax = fig.add_axes(rect)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def tsnr_figure(data: dict, bg, n_slices: int = 7):
    """Return axial slices of the tSNR map (before denoising) over the template."""
    plt = pyplot()
    img = _volume(data["tsnr"], data["mask_index"], data["shape"], data["affine"])
    values = np.asarray(img.dataobj)
    inside = np.nonzero(values.any(axis=(0, 1)))[0]
    zs = np.linspace(inside[0], inside[-1], n_slices + 2)[1:-1] if inside.size else []
    vmax = float(np.percentile(values[values > 0], 98)) if (values > 0).any() else 1.0
    fig = plt.figure(figsize=(10.5, 1.9), facecolor="black")
    left, right, bottom, top = plane(bg, 2, 0.0)[1]
    step, height = right - left, top - bottom
    ax = _mosaic_axes(fig, [0.01, 0.02, 0.92, 0.9], n_slices * step, height + 14)
    image = None
    for k, index in enumerate(zs):
        z = float(img.affine[2, 3] + img.affine[2, 2] * round(index))
        offset = (k * step - left, -bottom)
        _panel(ax, bg, 2, z, offset, cmap="gray")
        image = _panel(ax, img, 2, z, offset, True, cmap="inferno", vmin=0, vmax=vmax)
        ax.text(k * step + step / 2, height + 7, f"z = {z:.0f}", color="white", fontsize=7,
                ha="center", va="center")  # fmt: skip
    ax.text(4, 4, "L", color="white", fontsize=8)
    ax.text(step - 4, 4, "R", color="white", fontsize=8, ha="right")
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_axes([0.945, 0.12, 0.008, 0.7]))
        bar.set_label("tSNR", color="white", fontsize=7)
        bar.ax.tick_params(labelsize=6, colors="white")
    return fig


def seed_images(data: dict) -> list:
    """Return each seed's voxels (inside the brain mask) as a RAS image on the run's grid."""
    images, start = [], 0
    for count in data["seed_counts"]:
        positions = data["seed_voxels"][start : start + count]
        images.append(
            _volume(np.ones(count, np.float32), data["mask_index"][positions], data["shape"],
                    data["affine"])
        )  # fmt: skip
        start += count
    return images


def centre_of(img) -> np.ndarray:
    """Return the world coordinates (mm) of the centre of mass of a binary image."""
    ijk = np.argwhere(np.asarray(img.dataobj) > 0).mean(axis=0)
    return img.affine[:3, :3] @ ijk + img.affine[:3, 3]


def seeds_figure(data: dict, bg, labels: dict[str, str]):
    """Return each seed in colour on the template: coronal and axial slices through its centre.

    Parameters
    ----------
    data : dict
        Report data of the run (seed voxels, mask, grid, seed names).
    bg : nibabel.Nifti1Image
        The template (RAS).
    labels : dict
        Caption of each seed (name, voxels, coverage), by seed name.
    """
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    names = [str(name) for name in data["seed_names"]]
    images = seed_images(data)
    per_row = 3
    n_rows = -(-len(images) // per_row)
    (x0, x1, y0, y1), (_, _, z0, z1) = plane(bg, 2, 0.0)[1], plane(bg, 1, 0.0)[1]
    width, height = x1 - x0 + 8, max(y1 - y0, z1 - z0) + 24  # gaps, titles and labels
    fig = plt.figure(figsize=(10.5, 1.9 * n_rows), facecolor="black")
    ax = _mosaic_axes(fig, [0.01, 0.01, 0.98, 0.98], 2 * per_row * width, n_rows * height)
    for k, (img, name) in enumerate(zip(images, names, strict=True)):
        centre = centre_of(img)
        colour = _SEED_COLOURS[k % len(_SEED_COLOURS)]
        row_bottom = (n_rows - 1 - k // per_row) * height
        for j, axis in enumerate((1, 2)):
            left = (2 * (k % per_row) + j) * width
            low = z0 if axis == 1 else y0
            offset = (left - x0, row_bottom + 14 - low)
            _panel(ax, bg, axis, centre[axis], offset, cmap="gray")
            _panel(ax, img, axis, centre[axis], offset, True, cmap=ListedColormap([colour]))
            ax.text(left + (x1 - x0) / 2, row_bottom + height - 4, f"{'xyz'[axis]} = "
                    f"{centre[axis]:.0f}", color="0.8", fontsize=6, ha="center", va="top")  # fmt: skip
        ax.text((2 * (k % per_row) + 1) * width - 4, row_bottom + 4, labels.get(name, name),
                color=colour, fontsize=7, ha="center", va="bottom")  # fmt: skip
    return fig
