"""The participant report, ``OUTPUT_DIR/sub-<label>.html``: denoising QC and the seed maps."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.utils.io import atomic_write_text

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}img{max-width:100%}"
    "img.map{width:36em;image-rendering:pixelated}"
)


def png_base64(fig) -> str:
    """Return a matplotlib figure as a base64-encoded PNG for inline HTML."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def seed_montage(path: str, vmax: float = 1.0) -> str:
    """Return a base64 PNG of an axial, coronal and sagittal slice through a map's peak.

    The slices are colour-mapped and written with ``matplotlib.image.imsave`` (one pixel per voxel,
    scaled by the browser): a figure per seed with axes costs ~0.2 s, this a few milliseconds.
    """
    from matplotlib import colormaps
    from matplotlib.image import imsave

    img = nb.as_closest_canonical(nb.load(path))
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32), nan=0.0)
    peak = np.unravel_index(np.argmax(data), data.shape)
    slices = [data[:, :, peak[2]].T, data[:, peak[1], :].T, data[peak[0], :, :].T]
    height = max(piece.shape[0] for piece in slices)
    padded = [np.pad(piece, ((height - piece.shape[0], 0), (0, 2))) for piece in slices]
    montage = np.hstack(padded)[::-1]  # rows from superior/anterior down, as on screen
    rgba = colormaps["RdBu_r"]((np.clip(montage, -vmax, vmax) + vmax) / (2 * vmax))
    buffer = io.BytesIO()
    imsave(buffer, rgba, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def seed_table(maps: dict[str, str]) -> str:
    """Return an HTML table of the seeds: type, voxels and coverage by the brain mask (sidecars)."""
    rows = []
    for seed, path in maps.items():
        sidecar = Path(str(path).replace(".nii.gz", ".json"))
        definition = json.loads(sidecar.read_text()).get("Seed", {}) if sidecar.exists() else {}
        rows.append({
            "seed": seed,
            "type": definition.get("Type", "n/a"),
            "voxels": definition.get("NumberOfVoxels", "n/a"),
            "coverage by the brain mask": definition.get("Coverage", "n/a"),
        })  # fmt: skip
    return pd.DataFrame(rows).to_html(index=False, na_rep="n/a")


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
    noted = qc[qc["notes"].fillna("n/a") != "n/a"] if "notes" in qc else qc.iloc[:0]
    for _, row in noted.iterrows():
        parts.append(
            f"<p><b>Note:</b> {html.escape(str(row['run']))}: {html.escape(str(row['notes']))}</p>"
        )
    if maps:
        parts += [
            "<h2>Seed-to-voxel connectivity (subject level)</h2>",
            "<p>Fisher z (colour scale -1 to 1, red positive), axial, coronal and sagittal slices "
            "through each map's peak (neurological convention: the subject's left on the left).</p>",
            seed_table(maps),
        ]
        for seed, path in maps.items():
            parts.append(
                f"<figure><figcaption>{html.escape(seed)}</figcaption><img class='map' "
                f"alt='{html.escape(seed)}' src='data:image/png;base64,{seed_montage(path)}'>"
                "</figure>"
            )
    if settings_text:
        parts += ["<h2>Settings</h2>", f"<pre>{html.escape(settings_text)}</pre>"]
    parts.append("</body></html>")
    return atomic_write_text(Path(out_file), "\n".join(parts))
