"""Denoising strategies and the selection of regressors from fMRIPrep confounds tables.

A strategy is data: the presets are YAML files in ``bids_ketamine_fc/data/denoise/`` that users
read, copy and pass back with ``--denoise-strategy FILE`` (``conn.yml`` documents every key).
This module validates them, reads fMRIPrep's ``desc-confounds_timeseries.tsv`` and its JSON
sidecar, selects the regressors a strategy asks for (fMRIPrep >= 21 and older layouts), and
finds outlier volumes as CONN's ART does.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bids_ketamine_fc.exceptions import MissingInputError, UsageError, UserInputError
from bids_ketamine_fc.participant.strategy import CompCor, Strategy

LOGGER = logging.getLogger(__name__)

MOTION_PARAMS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_SUFFIXES = {
    "none": (), "basic": ("",), "derivatives": ("", "_derivative1"), "power2": ("", "_power2"),
    "full": ("", "_derivative1", "_power2", "_derivative1_power2"),
}  # fmt: skip
_COMPCOR_RE = re.compile(r"^([acw])_comp_cor_(\d+)$")
_NSS_RE = re.compile(r"^non_steady_state_outlier_?\d+$")
_COSINE_RE = re.compile(r"^cosine_?\d+$")
_MASKS = {"WM": ("w", "white-matter"), "CSF": ("c", "CSF"), "combined": ("a", "combined")}


def load_confounds_table(tsv: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read an fMRIPrep confounds TSV (``n/a`` read as NaN) and the JSON sidecar beside it.

    Parameters
    ----------
    tsv : str or Path
        ``..._desc-confounds_timeseries.tsv`` (or the older ``..._desc-confounds_regressors.tsv``).

    Returns
    -------
    table : pandas.DataFrame
        One float column per confound, one row per volume.
    metadata : dict
        The sidecar's content, or ``{}`` when there is none.
    """
    tsv = Path(tsv)
    if not tsv.is_file():
        raise MissingInputError(
            f"confounds file {tsv} not found; fMRIPrep writes it beside the BOLD"
        )
    try:
        table = pd.read_csv(tsv, sep="\t", na_values=["n/a"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserInputError(f"confounds file {tsv} is not a readable TSV table: {err}") from err
    if table.empty:
        raise UserInputError(f"confounds file {tsv} has no rows")
    table.columns = [str(c) for c in table.columns]
    # Only columns pandas did not read as numbers need converting (column by column is slow).
    text = [c for c, dtype in table.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    numeric = table.copy()
    for column in text:
        numeric[column] = pd.to_numeric(table[column], errors="coerce")
    numeric = numeric.astype(float)
    bad = [c for c in text if (numeric[c].isna() & table[c].notna()).any()]
    if bad:
        raise UserInputError(f"confounds file {tsv}: non-numeric values in column(s) {bad}")
    sidecar = tsv.with_name(tsv.name.removesuffix(".tsv") + ".json")
    if not sidecar.is_file():
        return numeric, {}
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UserInputError(f"confounds sidecar {sidecar} is not valid JSON: {err}") from err
    if not isinstance(metadata, dict):
        raise UserInputError(f"confounds sidecar {sidecar} must hold a JSON object")
    return numeric, metadata


def select_confounds(
    table: pd.DataFrame, metadata: dict, strategy: Strategy, source: str
) -> pd.DataFrame:
    """Return the regressor columns a strategy asks for, without NaN.

    Parameters
    ----------
    table, metadata
        As returned by :func:`load_confounds_table`.
    strategy : Strategy
        The denoising strategy.
    source : str
        The confounds file's name, for error messages.

    Returns
    -------
    pandas.DataFrame
        Motion, WM/CSF, global-signal, aCompCor (the first N of each mask, as CONN and XCP-D)
        and cosine columns, in that order. The first row of derivatives, undefined in fMRIPrep's
        output, takes the second row's value (as nilearn's ``load_confounds``).

    Raises
    ------
    UserInputError
        Columns the strategy needs are absent (all are named), or the aCompCor masks cannot be
        told apart without the JSON sidecar.
    """
    columns = _expand(MOTION_PARAMS, strategy.motion)
    columns += _expand(("csf", "white_matter"), strategy.wm_csf)
    columns += _expand(("global_signal",), strategy.global_signal)
    missing = [c for c in columns if c not in table.columns]
    compcor, missing_compcor = _compcor_selection(table, metadata, strategy.compcor, source)
    columns, missing = columns + compcor, missing + missing_compcor
    if strategy.cosine:
        cosines = sorted((c for c in table.columns if _COSINE_RE.match(c)), key=_index)
        if not cosines:
            LOGGER.warning("%s: no cosine* high-pass regressors (run under 128 s?)", source)
        columns += cosines
    if missing:
        raise UserInputError(
            f"{source}: missing confound column(s) {', '.join(missing)} needed by denoising "
            f"strategy '{strategy.name}'; choose another --denoise-strategy or re-run fMRIPrep"
        )
    selected = table[columns].astype(float)
    if len(selected) > 1:
        selected.iloc[0] = selected.iloc[0].fillna(selected.iloc[1])
    undefined = selected.columns[selected.isna().any()].tolist()
    if undefined:
        raise UserInputError(f"{source}: undefined (n/a) values in confound column(s) {undefined}")
    return selected


def _compcor_selection(
    table: pd.DataFrame, metadata: dict, compcor: CompCor, source: str
) -> tuple[list[str], list[str]]:
    """Return the first N aCompCor columns of each mask asked for, and the missing ones."""
    columns, missing = [], []
    for mask, count in zip(_MASKS, compcor.counts, strict=True):
        found = _acompcor_columns(table, metadata, mask, source)[:count] if count else []
        prefix, label = _MASKS[mask]
        if count and not found:
            missing.append(f"{prefix}_comp_cor_* ({label} aCompCor)")
        elif len(found) < count:
            LOGGER.warning("%s: %d %s aCompCor components, fewer than the %d asked for",
                           source, len(found), label, count)  # fmt: skip
        columns += found
        missing += [c for c in found if c not in table.columns]
    return columns, missing


def _expand(bases: tuple[str, ...], level: str) -> list[str]:
    return [f"{base}{suffix}" for base in bases for suffix in _SUFFIXES[level]]


def _index(name: str) -> int:
    return int(re.findall(r"\d+", name)[-1])


def _acompcor_columns(table: pd.DataFrame, metadata: dict, mask: str, source: str) -> list[str]:
    """Return the aCompCor components of one mask, in component order (most variance first).

    The sidecar's ``Mask`` decides whenever it describes the components (fMRIPrep >= 1.4);
    otherwise the fMRIPrep >= 21 prefixes do (``w_``: WM, ``c_``: CSF, and ``a_``: combined
    when ``w_``/``c_`` columns exist).
    """
    prefix = _MASKS[mask][0]
    described = [
        name for name, meta in metadata.items()
        if _COMPCOR_RE.match(name) and isinstance(meta, dict) and meta.get("Method") == "aCompCor"
        and meta.get("Retained", True) is not False
    ]  # fmt: skip
    if described:
        names = [name for name in described if metadata[name].get("Mask") == mask]
        return sorted(names, key=lambda name: (not name.startswith(prefix), _index(name)))
    found = {
        p: [c for c in table.columns if (m := _COMPCOR_RE.match(c)) and m[1] == p] for p in "acw"
    }
    if found["a"] and not (found["w"] or found["c"]):
        raise UserInputError(
            f"{source}: the a_comp_cor_* columns cannot be assigned to the WM, CSF or combined "
            "mask without the confounds JSON sidecar (each component's 'Mask'); put the sidecar "
            "fMRIPrep wrote beside the TSV, or choose a strategy without compcor"
        )
    return sorted(found[prefix], key=_index)


def non_steady_state_count(table: pd.DataFrame, dummy_scans: int | None) -> int:
    """Return the number of initial volumes to drop.

    Parameters
    ----------
    table : pandas.DataFrame
        The run's confounds table.
    dummy_scans : int or None
        The user's ``--dummy-scans``; when None, the leading volumes fMRIPrep flagged in its
        ``non_steady_state_outlier*`` columns are counted.

    Returns
    -------
    int
    """
    n_volumes = len(table)
    if dummy_scans is not None:
        integer = isinstance(dummy_scans, (int, np.integer)) and not isinstance(dummy_scans, bool)
        if not integer or not 0 <= dummy_scans < n_volumes:
            raise UsageError(
                f"--dummy-scans {dummy_scans!r}: must be an integer from 0 to {n_volumes - 1} "
                f"for a run of {n_volumes} volumes"
            )
        return int(dummy_scans)
    columns = [c for c in table.columns if _NSS_RE.match(c)]
    flagged = table[columns].fillna(0).to_numpy().astype(bool).any(axis=1)
    return n_volumes if flagged.all() else int(np.argmin(flagged))


def global_signal_z(global_signal: np.ndarray) -> np.ndarray:
    """Return ART's robust z-score of the scan-to-scan change in global signal.

    As CONN's ``art.m``: ``d = [0, diff(g)]``, ``z = (d - median(d)) / (0.7413 * IQR(d))``,
    the quartiles computed as MATLAB's ``prctile`` (numpy's "hazen" method) over all of ``d``
    including its leading 0, an IQR of 0 replaced by 1, and the first volume's z set to 0.

    Parameters
    ----------
    global_signal : numpy.ndarray
        Mean BOLD signal per volume (fMRIPrep's ``global_signal``; ART averages its own mask).

    Returns
    -------
    numpy.ndarray
        One z value per volume.
    """
    change = np.diff(np.asarray(global_signal, dtype=float), prepend=np.nan)
    change[0] = 0.0
    q25, q75 = np.percentile(change, [25, 75], method="hazen")
    sigma = max(0.7413 * (q75 - q25) or 1.0, np.finfo(float).eps)
    z = (change - np.median(change)) / sigma
    z[0] = 0.0
    return z


def art_outliers(
    motion: np.ndarray,
    global_signal: np.ndarray | None,
    motion_threshold: float | None,
    gs_z_threshold: float | None,
) -> np.ndarray:
    """Return the outlier volumes ART finds (scan-to-scan motion or global-signal change).

    A change between volumes t-1 and t above a threshold flags both volumes, as ``art.m`` does
    with CONN's "use diff" settings; the z threshold is rounded to one decimal, as ``art.m`` does.
    ``motion`` is ART's composite motion (:func:`~bids_ketamine_fc.participant.art.composite_motion`,
    detector ``art``) or fMRIPrep's framewise displacement (Power et al. 2012: summed absolute
    parameter changes, rotations on a 50 mm sphere; detector ``art-fd``), which is of similar
    size but not equal.

    Parameters
    ----------
    motion : numpy.ndarray
        Scan-to-scan motion per volume in mm (NaN read as 0).
    global_signal : numpy.ndarray or None
        Global signal per volume; needed when ``gs_z_threshold`` is set.
    motion_threshold, gs_z_threshold : float or None
        Thresholds in mm and in robust z (:func:`global_signal_z`); None turns one off.

    Returns
    -------
    numpy.ndarray of bool
        True for outlier volumes.
    """
    change = np.nan_to_num(np.asarray(motion, dtype=float), nan=0.0) > (motion_threshold or np.inf)
    if gs_z_threshold is not None:
        threshold = np.floor(gs_z_threshold * 10 + 0.5) / 10  # art.m: 0.1*round(z*10)
        change |= np.abs(global_signal_z(global_signal)) > threshold
    outliers = change.copy()
    outliers[:-1] |= change[1:]
    return outliers


def scrub_outliers(
    strategy: Strategy, motion: np.ndarray, global_signal: np.ndarray | None = None
) -> np.ndarray:
    """Return the volumes a strategy scrubs (bool, one per volume; none without scrubbing).

    ``detector: art`` and ``art-fd`` apply :func:`art_outliers` to ``motion`` (ART's composite
    motion for ``art``, fMRIPrep's framewise displacement for ``art-fd``) and ``global_signal``
    (ART's own for ``art``, the mean of the brain-masked BOLD for ``art-fd``); ``detector: fd``
    flags only the volumes whose framewise displacement exceeds the threshold (XCP-D's
    censoring). Pass the series of the kept volumes (non-steady-state volumes dropped).
    """
    motion = np.nan_to_num(np.asarray(motion, dtype=float), nan=0.0)
    scrub = strategy.scrub
    if scrub is None:
        return np.zeros(motion.shape, dtype=bool)
    if scrub.detector == "fd":
        return motion > (scrub.fd_threshold or np.inf)
    if scrub.gs_z_threshold is not None and global_signal is None:
        raise ValueError(f"strategy '{strategy.name}' needs the global signal for scrubbing")
    return art_outliers(motion, global_signal, scrub.fd_threshold, scrub.gs_z_threshold)


def spike_regressors(outliers: np.ndarray) -> np.ndarray:
    """Return one regressor per outlier volume (1 there, 0 elsewhere), shape T x n_outliers."""
    volumes = np.flatnonzero(np.asarray(outliers, dtype=bool))
    spikes = np.zeros((np.size(outliers), volumes.size))
    spikes[volumes, np.arange(volumes.size)] = 1.0
    return spikes
