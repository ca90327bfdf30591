"""Reading inputs with errors that name the file, and atomic writing of outputs.

Outputs appear complete under their final name, or not at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nb
import pandas as pd

from bids_ketamine_fc.exceptions import MissingInputError, UserInputError


def load_nifti(path: Path, what: str = "image", fix: str = "restore the file"):
    """Open a NIfTI image (its header; the data are read later) or name the file in the error.

    Parameters
    ----------
    path : Path
    what : str
        What the file is, for the message (``"brain mask"``, ``"BOLD run"``...).
    fix : str
        What would fix it.

    Raises
    ------
    MissingInputError
        The file does not exist or cannot be opened.
    UserInputError
        It is not a readable NIfTI file (random bytes, a truncated header).
    """
    try:
        return nb.load(path)
    except (FileNotFoundError, PermissionError) as err:
        raise MissingInputError(
            f"{path}: the {what} cannot be opened ({err.strerror}); {fix}."
        ) from err
    except MemoryError:
        raise
    except Exception as err:  # nibabel raises many types for corrupt files
        detail = " ".join(str(err).split()) or type(err).__name__
        raise UserInputError(
            f"{path}: the {what} is not a readable NIfTI file ({detail}); {fix}."
        ) from err


def read_failure(path: Path, what: str, err: Exception, fix: str) -> UserInputError:
    """Return the error for a file whose data cannot be read (truncated, corrupt gzip)."""
    detail = " ".join(str(err).split()) or type(err).__name__
    return UserInputError(
        f"{path}: the {what} cannot be read ({detail}): the file is truncated or corrupt; {fix}."
    )


#: Marks the temporary name of a file being written (hidden, beside the final name).
PARTIAL = ".partial-"


def remove_partial(folder: Path) -> int:
    """Remove the temporary files a killed writer left under ``folder``; return how many."""
    removed = 0
    for path in Path(folder).rglob(f".*{PARTIAL}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


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
        prefix=f".{path.name.split('.')[0]}{PARTIAL}", suffix=suffix, dir=path.parent
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
