"""Atomic file writing: outputs appear complete under their final name, or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nb
import pandas as pd


def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    Parameters
    ----------
    path : Path
        Final file name.
    writer : callable
        Writes the content to the temporary path it is given. The temporary name keeps the final
        suffixes so that writers choosing a format from the extension (nibabel) behave.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs follow the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_img(img: nb.Nifti1Image, path: Path) -> Path:
    """Save a NIfTI image; ``.nii.gz`` is compressed with ISA-L when it is installed.

    ISA-L (``isal.igzip``, level 2) compresses about five times faster than the standard library's
    zlib at nibabel's level 1, to the same size; the file is ordinary gzip. As nibabel's, its
    header holds no file name and a zero time stamp, so that the same image gives the same bytes.
    """
    path = Path(path)
    if path.name.endswith(".nii.gz"):
        try:
            from isal import igzip
        except ImportError:
            igzip = None
        if igzip is not None:
            with (
                open(path, "wb") as raw,
                igzip.IGzipFile("", "wb", compresslevel=2, fileobj=raw, mtime=0) as stream,
            ):
                img.to_stream(stream)
            return path
    nb.save(img, path)
    return path


def atomic_save_img(img: nb.spatialimages.SpatialImage, path: Path) -> Path:
    """Save a NIfTI image to ``path`` atomically (:func:`save_img`)."""
    return atomic_write(path, lambda tmp: save_img(img, tmp))


#: Format of the floating-point numbers in every TSV output (6 significant digits).
FLOAT_FORMAT = "%.6g"


def atomic_write_tsv(df: pd.DataFrame, path: Path, **kwargs) -> Path:
    """Write a data frame as a BIDS TSV (tab separated, ``n/a`` for missing) atomically.

    Floats are written with :data:`FLOAT_FORMAT` unless ``float_format`` is given.
    """
    kwargs.setdefault("index", False)
    kwargs.setdefault("float_format", FLOAT_FORMAT)
    return atomic_write(path, lambda tmp: df.to_csv(tmp, sep="\t", na_rep="n/a", **kwargs))
