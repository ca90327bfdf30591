"""The participant report, ``OUTPUT_DIR/sub-<label>.html``: denoising QC and the seed maps."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.utils.io import atomic_write_text

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}img{max-width:100%}"
)


def png_base64(fig) -> str:
    """Return a matplotlib figure as a base64-encoded PNG for inline HTML."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def seed_montage(maps: dict[str, str]) -> str:
    """Plot one axial, coronal and sagittal slice through each map's peak; return a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), 3, figsize=(7, 2.2 * len(maps)), squeeze=False)
    for row, (seed, path) in enumerate(maps.items()):
        data = np.asarray(nb.load(path).dataobj, dtype=np.float32)
        finite = np.nan_to_num(data, nan=0.0)
        peak = np.unravel_index(np.argmax(finite), data.shape)
        slices = (finite[:, :, peak[2]], finite[:, peak[1], :], finite[peak[0], :, :])
        for col, image in enumerate(slices):
            ax = axes[row, col]
            ax.imshow(image.T, origin="lower", cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_axis_off()
        axes[row, 0].set_title(f"{seed} (Fisher z, peak slices)", loc="left", fontsize=9)
    fig.tight_layout()
    encoded = png_base64(fig)
    plt.close(fig)
    return encoded


def write_participant_report(
    subject: str, qc_rows: list[dict], maps: dict[str, str], out_file: Path, settings_text: str = ""
) -> Path:
    """Write the self-contained HTML report of one participant.

    Parameters
    ----------
    subject : str
        Label without ``sub-``.
    qc_rows : list of dict
        One denoising QC row per run (with a ``run`` key).
    maps : dict
        Seed name -> subject-level Fisher z map.
    out_file : Path
    settings_text : str
        The run's settings as JSON, shown at the end.

    Returns
    -------
    Path
    """
    qc = pd.DataFrame(qc_rows)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{html.escape(subject)}</title>",
        f"<style>{STYLE}</style></head><body><h1>sub-{html.escape(subject)}</h1>",
        "<h2>Denoising quality control</h2>",
        qc.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a"),
    ]
    excluded = qc[~qc["included"].astype(bool)] if "included" in qc else qc.iloc[:0]
    for _, row in excluded.iterrows():
        parts.append(
            f"<p><b>Excluded:</b> {html.escape(str(row['run']))}: "
            f"{html.escape(str(row['exclusion_reason']))}</p>"
        )
    if maps:
        parts += [
            "<h2>Seed-to-voxel connectivity (subject level)</h2>",
            f"<img alt='seed maps' src='data:image/png;base64,{seed_montage(maps)}'>",
        ]
    if settings_text:
        parts += ["<h2>Settings</h2>", f"<pre>{html.escape(settings_text)}</pre>"]
    parts.append("</body></html>")
    return atomic_write_text(Path(out_file), "\n".join(parts))
