"""Figure helpers shared by the reports: sharp embedded figures, the anatomical background, slices.

Figures are embedded (:func:`embed`) as PNG drawn at twice their display size (:data:`DPI`
against the CSS width), so they stay sharp on high-density screens and when zoomed, or as SVG
with their images unsampled (``svg=True``, the participant report). The anatomical background
is loaded once per process (:func:`background`): the MNI152 template that nilearn ships (ICBM
2009a nonlinear symmetric, 1 mm, taken every second voxel), always available offline and close
enough to MNI152NLin2009cAsym and MNI152NLin6Asym for display (the maps are not resampled).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from functools import lru_cache

import nibabel as nb
import numpy as np

LOGGER = logging.getLogger(__name__)

#: Resolution of the embedded PNGs; shown at half their pixel size (2x for sharpness).
DPI = 200
#: CSS pixels per inch of figure (the browser's 96, rounded).
CSS_PER_INCH = 100
#: zlib level of the embedded PNGs: 3 encodes the report's figures about 2x faster than the
#: default 6, for files about 10 % larger.
PNG_COMPRESSION = 3


def pyplot():
    """Return ``matplotlib.pyplot`` with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def embed(fig, alt: str, css_class: str = "fig", close: bool = True, svg: bool = False) -> str:
    """Return a figure as an ``<img>`` tag with an inline 2x PNG or SVG (and close it).

    With ``svg``, an SVG: text, lines, contours and colour bars are vectors, and every image
    is written unsampled, its voxels as they are, which the browser draws pixelated at any zoom
    (:func:`_write_svg`). As sharp as a 2x PNG, and faster to write for figures made of brain
    slices (nine seed maps: 0.2 s instead of 0.95 s), as nothing is resampled to the figure's
    pixels; images with more samples than pixels (a carpet plot) are better thinned first.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    alt : str
        Text alternative (escaped here).
    css_class : str
        CSS class of the image.
    close : bool
        Close the figure (False for a figure drawn again, such as a glass-brain canvas).
    svg : bool
        Write an SVG with its images unsampled (modifies the figure's images and colour bars).

    Returns
    -------
    str
    """
    buffer = io.BytesIO()
    if svg:
        _write_svg(fig, buffer)
    else:
        fig.savefig(
            buffer,
            format="png",
            dpi=DPI,
            facecolor=fig.get_facecolor(),
            pil_kwargs={"compress_level": PNG_COMPRESSION},
        )
    if close:
        pyplot().close(fig)
    width = fig.get_figwidth() * CSS_PER_INCH
    mime = "image/svg+xml" if svg else "image/png"
    return (
        f"<img class='{css_class}' style='width:{width:.0f}px' alt='{html.escape(alt)}' "
        f"src='data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
    )


def _write_svg(fig, buffer) -> None:
    """Write ``fig`` as SVG with its images unsampled (``interpolation="none"``, not composited)."""
    import matplotlib

    for ax in fig.axes:
        for image in ax.get_images():
            image.set_interpolation("none")
        for collection in ax.collections:
            if collection.get_rasterized():  # a colour bar's solids: vectors, without seams
                collection.set_rasterized(False)
                collection.set_edgecolor("face")
    settings = {"image.composite_image": False, "svg.fonttype": "path", "svg.hashsalt": "fig"}
    with matplotlib.rc_context(settings):
        fig.savefig(buffer, format="svg", facecolor=fig.get_facecolor(), metadata={"Date": None})


#: Where the background comes from, for the captions.
BACKGROUND = "MNI152 template (ICBM 2009a, shipped with nilearn), 2 mm"


@lru_cache(maxsize=1)
def background() -> nb.Nifti1Image:
    """Return the anatomical background: a float32 RAS T1-weighted image at 2 mm (cached).

    Cropped to the head (half the voxels of the template's box: every figure handles fewer
    voxels).
    """
    img = nb.as_closest_canonical(nb.load(_nilearn_template()))
    step = max(1, int(round(2.0 / float(min(img.header.get_zooms()[:3])))))
    data = np.asarray(img.dataobj, dtype=np.float32)[::step, ::step, ::step]
    affine = img.affine.copy()
    affine[:3, :3] *= step
    img = nb.Nifti1Image(data, affine)
    box = nonzero_box(data, margin=2)
    return img if box is None else crop(img, box)


def _nilearn_template() -> str:
    """Return the path of nilearn's MNI152 T1 (``nilearn.datasets.MNI152_FILE_PATH``).

    Found among nilearn's package data: importing ``nilearn.datasets`` for the constant costs
    0.3 s (it imports nilearn.image, scikit-learn and more), a tenth of the report.
    """
    from importlib.resources import files

    path = (
        files("nilearn") / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    )
    if path.is_file():
        return str(path)
    from nilearn.datasets import MNI152_FILE_PATH  # another layout of the package

    return str(MNI152_FILE_PATH)


def nonzero_box(data: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Return the box of the non-zero voxels of a 3-D array, ``margin`` voxels wider, or None."""
    nonzero = data != 0
    inside = [
        np.flatnonzero(nonzero.any(axis=tuple(j for j in range(3) if j != k))) for k in range(3)
    ]
    if not inside[0].size:
        return None
    return tuple(slice(max(i[0] - margin, 0), i[-1] + 1 + margin) for i in inside)


def crop(img: nb.Nifti1Image, box: tuple[slice, ...]) -> nb.Nifti1Image:
    """Return the part of an image inside ``box`` (a contiguous array), with its affine."""
    affine = img.affine.copy()
    affine[:3, 3] = nb.affines.apply_affine(img.affine, [b.start for b in box])
    return nb.Nifti1Image(np.ascontiguousarray(np.asarray(img.dataobj)[box]), affine)


def world_extent(affine: np.ndarray, shape: tuple[int, ...], axes: tuple[int, int]) -> list:
    """Return the ``imshow`` extent (left, right, bottom, top) in mm of a RAS image's plane."""
    lo = affine[:3, 3] - 0.5 * np.diag(affine)[:3]
    hi = lo + np.diag(affine)[:3] * np.asarray(shape[:3])
    return [lo[axes[0]], hi[axes[0]], lo[axes[1]], hi[axes[1]]]


def plane(img: nb.Nifti1Image, axis: int, coordinate: float) -> tuple[np.ndarray, list]:
    """Return the slice of a RAS image nearest to a world coordinate, and its extent in mm.

    The slice is transposed for ``imshow(origin="lower")``.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A RAS image with a diagonal affine (:func:`nibabel.as_closest_canonical`).
    axis : int
        0 (sagittal), 1 (coronal) or 2 (axial).
    coordinate : float
        World coordinate (mm) of the slice.

    Returns
    -------
    numpy.ndarray, list
    """
    index = int(round((coordinate - img.affine[axis, 3]) / img.affine[axis, axis]))
    index = int(np.clip(index, 0, img.shape[axis] - 1))
    data = np.asanyarray(img.dataobj)[(slice(None),) * axis + (index,)]  # a view, not a copy
    kept = tuple(a for a in range(3) if a != axis)
    return data.T, world_extent(img.affine, img.shape, kept)
