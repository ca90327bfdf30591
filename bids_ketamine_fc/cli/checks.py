"""Checks of the options and of the output folders, before any work.

Impossible values raise :class:`~bids_ketamine_fc.exceptions.UsageError` (exit 64); values that work
but are unusual for a resting-state study give one warning each, so nothing is left half-written by
a late refusal and nothing odd passes in silence. An output or work folder that cannot be written
raises :class:`~bids_ketamine_fc.exceptions.OutputError` (exit 73) before the first file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from pathlib import Path

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import OutputError, UsageError

LOGGER = logging.getLogger("bids_ketamine_fc")

#: Smoothing above this (mm) is refused: wider than the brain, and scipy's filter would take hours.
MAX_FWHM = 50.0
#: Smoothing above this (mm) is unusual for seed-based connectivity (the study used 8 mm).
PLAUSIBLE_FWHM = 20.0
#: Framewise displacement thresholds (mm) outside this range scrub almost all or almost nothing.
PLAUSIBLE_FD = (0.1, 2.0)
#: Fewer permutations give coarse family-wise p values (resolution 1 / n).
PLAUSIBLE_PERMUTATIONS = 1000
#: Largest seed of the random number generators (scikit-learn's FastICA takes 32-bit seeds).
MAX_RANDOM_SEED = 2**32 - 1


def default_work_dir(output_dir: Path) -> Path:
    """Return a work folder outside every dataset, the same for each run on ``output_dir``.

    ``<temporary folder>/bids_ketamine_fc-<user id>-<hash of OUTPUT_DIR>``, as fMRIPrep keeps its
    work folder out of the derivatives.
    """
    digest = hashlib.sha1(str(Path(output_dir).absolute()).encode()).hexdigest()[:10]
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"bids_ketamine_fc-{user}-{digest}"


def check_options(settings: Settings) -> None:
    """Refuse impossible option values and warn about implausible ones.

    Raises
    ------
    UsageError
        Naming the option, its value and the accepted range.
    """
    _check_range("--smoothing-fwhm", settings.smoothing_fwhm, 0.0, MAX_FWHM, "mm")
    if settings.smoothing_fwhm > PLAUSIBLE_FWHM:
        LOGGER.warning(
            "--smoothing-fwhm %g mm is wider than usual for seed-based connectivity "
            "(4-12 mm; the study used 8 mm).",
            settings.smoothing_fwhm,
        )
    if settings.fd_threshold is not None:
        _check_range("--fd-threshold", settings.fd_threshold, 0.0, math.inf, "mm", low_open=True)
        low, high = PLAUSIBLE_FD
        if not low <= settings.fd_threshold <= high:
            LOGGER.warning(
                "--fd-threshold %g mm scrubs %s (usual values: 0.2-0.9 mm).",
                settings.fd_threshold,
                "most volumes" if settings.fd_threshold < low else "almost nothing",
            )
    if settings.mem_gb is not None:
        _check_range("--mem-gb", settings.mem_gb, 0.0, math.inf, "GB", low_open=True)
    if settings.random_seed is not None:
        _check_range("--random-seed", settings.random_seed, 0, MAX_RANDOM_SEED, "")
    cpus = os.cpu_count() or 1
    if settings.nprocs > cpus:
        LOGGER.warning("--nprocs %d is more than the %d CPUs here.", settings.nprocs, cpus)
    if settings.analysis_level == "group":
        _check_group(settings)


def _check_group(settings: Settings) -> None:
    from bids_ketamine_fc.group.checks import check_settings

    check_settings(settings)
    _check_range("--responder-threshold", settings.responder_threshold, 0.0, 1.0, "", low_open=True)
    permuting = {"permutation", "tfce"} & set(settings.inference)
    if permuting and settings.n_permutations < PLAUSIBLE_PERMUTATIONS:
        smallest = 1.0 / settings.n_permutations
        consequence = (
            f"no p(FWE) can fall below --cluster-p {settings.cluster_p:g}: nothing can be significant"
            if smallest >= settings.cluster_p
            else f"p(FWE) values are multiples of {smallest:.2g}"
        )
        LOGGER.warning(
            "--n-permutations %d: %s; use at least %d (the default is 5000).",
            settings.n_permutations,
            consequence,
            PLAUSIBLE_PERMUTATIONS,
        )
    if "rft" in settings.inference and settings.voxel_p > 0.001:
        LOGGER.warning(
            "--voxel-p %g: random field theory cluster inference with a cluster-forming threshold "
            "above p = 0.001 gives inflated false-positive rates (Eklund et al. 2016).",
            settings.voxel_p,
        )
    if settings.cluster_p > 0.05:
        LOGGER.warning("--cluster-p %g is above the usual 0.05.", settings.cluster_p)


def _check_range(option, value, low, high, unit, low_open=False) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"above {low:g}" if low_open else f"from {low:g}"
        top = "" if math.isinf(high) else f" to {high:g}"
        raise UsageError(
            f"{option} {value}: give a finite value {bound}{top}{' ' + unit if unit else ''}."
        )


def check_writable(path: Path, what: str) -> None:
    """Refuse a folder that cannot be created or written (tried with a temporary file).

    Parameters
    ----------
    path : Path
        The folder; it may not exist yet (then its nearest existing parent is tried).
    what : str
        How the message names it (``"OUTPUT_DIR"``, ``"-w/--work-dir"``).

    Raises
    ------
    OutputError
        A file stands where a folder should be, or nothing can be written there.
    """
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"{what} {path}: {existing} is a file, not a folder; move it or choose another {what}."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OutputError(
            f"{what} {path}: cannot write in {existing} ({err.strerror or err}); "
            f"choose a writable {what} or fix its permissions."
        ) from err
