"""The regressors of one run: fMRIPrep's confounds, CONN's own regressors, and the outliers.

:func:`read_run` does it all for :func:`~bids_ketamine_fc.participant.run.process_run`, reading
the BOLD once. :func:`prepare_confounds` reads what the confounds table gives (before the BOLD
is read, also in the command line's checks);
:func:`find_outliers` applies the strategy's scrubbing rule; :func:`conn_regressors` adds what
CONN computes itself: the ``Effect of rest`` with its derivative
(:mod:`~bids_ketamine_fc.participant.hrf`) and aCompCor from the tissue probability maps
(:mod:`~bids_ketamine_fc.participant.compcor`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.participant import confounds as cf
from bids_ketamine_fc.participant.art import ArtGlobalSignal, SpmGlobal, composite_motion
from bids_ketamine_fc.participant.bold import (
    BrainSeries,
    brain_voxel_index,
    read_brain_series,
)
from bids_ketamine_fc.participant.compcor import TissueMask, TissueSeries, conn_components
from bids_ketamine_fc.participant.denoising import lowpass_note
from bids_ketamine_fc.participant.hrf import central_difference, effect_of_rest
from bids_ketamine_fc.participant.strategy import CompCor, Strategy


@dataclass
class RunConfounds:
    """What the confounds table gives for the volumes kept.

    Attributes
    ----------
    regressors : numpy.ndarray (T, n)
        The table's columns the strategy asks for (derivatives recomputed as central differences
        when ``derivatives: conn``).
    names : list of str
        Their names.
    fd : numpy.ndarray (T,)
        Framewise displacement (0 where undefined).
    motion : numpy.ndarray (T, 6) or None
        The realignment parameters ``trans_x..z``, ``rot_x..z`` when the table has them.
    n_dummy : int
        Initial volumes dropped.
    compcor_source : str
        ``tissue maps`` (CONN's aCompCor, computed later), ``fMRIPrep confounds`` or ``none``.
    """

    regressors: np.ndarray
    names: list[str]
    fd: np.ndarray
    motion: np.ndarray | None
    n_dummy: int
    compcor_source: str


def prepare_confounds(
    confounds_file: Path, strategy: Strategy, dummy_scans: int | None, tissue_maps: bool = False
) -> RunConfounds:
    """Read a run's confounds for the volumes kept after dropping dummies.

    Parameters
    ----------
    confounds_file : Path
        fMRIPrep's ``desc-confounds_timeseries.tsv``.
    strategy : Strategy
    dummy_scans : int or None
        ``--dummy-scans``.
    tissue_maps : bool
        Whether the run's WM and CSF probability maps were found: with ``compcor.method: conn``
        they replace fMRIPrep's aCompCor columns (which are used otherwise).

    Returns
    -------
    RunConfounds

    Raises
    ------
    UserInputError
        When the table lacks a column the strategy needs (named, with the file).
    """
    table, metadata = cf.load_confounds_table(Path(confounds_file))
    if strategy.drop_non_steady_state or dummy_scans is not None:
        n_dummy = cf.non_steady_state_count(table, dummy_scans)
    else:
        n_dummy = 0
    counts = any(strategy.compcor.counts)
    own_compcor = counts and strategy.compcor.method == "conn" and tissue_maps
    selection = dataclasses.replace(strategy, compcor=CompCor()) if own_compcor else strategy
    selected = cf.select_confounds(table, metadata, selection, source=str(confounds_file))
    kept = table.iloc[n_dummy:]
    selected = selected.iloc[n_dummy:].copy()
    if strategy.derivatives == "conn":
        for name in selected.columns:
            base, _, power = name.partition("_derivative1")
            if base != name:
                selected[name] = central_difference(kept[base].to_numpy(float)) ** (
                    2 if power else 1
                )
    fd = (
        kept["framewise_displacement"].fillna(0.0).to_numpy(float)
        if "framewise_displacement" in kept
        else None
    )
    needs_fd = strategy.scrub is not None and strategy.scrub.detector != "art"
    if fd is None and needs_fd and strategy.scrub.fd_threshold:
        raise UserInputError(
            f"{confounds_file}: no framewise_displacement column, which scrubbing needs: "
            "use a strategy without scrubbing or restore fMRIPrep's confounds table"
        )
    motion = (
        kept[list(cf.MOTION_PARAMS)].to_numpy(float) if set(cf.MOTION_PARAMS) <= set(kept) else None
    )
    if motion is not None and np.isnan(motion).any():
        raise UserInputError(f"{confounds_file}: undefined (n/a) realignment parameters")
    if motion is None and strategy.scrub is not None and strategy.scrub.detector == "art":
        raise UserInputError(
            f"{confounds_file}: no trans_*/rot_* columns, which ART's composite motion needs; "
            "restore fMRIPrep's confounds table or choose 'scrub.detector: art-fd'"
        )
    source = "tissue maps" if own_compcor else "fMRIPrep confounds" if counts else "none"
    return RunConfounds(
        regressors=selected.to_numpy(float),
        names=list(selected.columns),
        fd=np.zeros(len(kept)) if fd is None else fd,
        motion=motion,
        n_dummy=n_dummy,
        compcor_source=source,
    )


def find_outliers(
    strategy: Strategy,
    confounds: RunConfounds,
    brain_global: np.ndarray,
    art_global: np.ndarray | None = None,
) -> np.ndarray:
    """Return the volumes the strategy scrubs.

    ``art`` uses ART's composite motion (from the realignment parameters) and ART's global signal
    (``art_global``); ``art-fd`` fMRIPrep's framewise displacement and the brain-masked mean
    (``brain_global``); ``fd`` the framewise displacement alone.
    """
    if strategy.scrub is not None and strategy.scrub.detector == "art":
        return cf.scrub_outliers(strategy, composite_motion(confounds.motion), art_global)
    return cf.scrub_outliers(strategy, confounds.fd, brain_global)


def conn_regressors(
    strategy: Strategy,
    confounds: RunConfounds,
    outliers: np.ndarray,
    tr: float,
    tissue: TissueSeries | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Return the regressors CONN computes itself, their names and the first level's weights.

    Parameters
    ----------
    strategy : Strategy
    confounds : RunConfounds
    outliers : numpy.ndarray of bool
        The scrubbed volumes (their spikes are covariates of CONN's aCompCor).
    tr : float
        Repetition time (s).
    tissue : TissueSeries or None
        The WM and CSF voxels' series, when aCompCor comes from the tissue maps.

    Returns
    -------
    regressors : numpy.ndarray (T, n)
        ``Effect of rest`` and its derivative (``effect_of_rest: true``), then the WM and CSF
        components (mean signal first).
    names : list of str
    weights : numpy.ndarray (T,) or None
        The ``Effect of rest`` when the strategy weights the first level (``weighting: hrf``).
    """
    n = confounds.regressors.shape[0]
    columns, names = [], []
    rest = effect_of_rest(n, tr) if strategy.effect_of_rest else None
    if rest is not None:
        columns += [rest, central_difference(rest)]
        names += ["effect_of_rest", "effect_of_rest_derivative1"]
    if tissue is not None:
        covariates = [np.linspace(-1.0, 1.0, n)[:, None]]
        if confounds.motion is not None and strategy.motion != "none":
            covariates.append(confounds.motion)
        if strategy.scrub is not None and strategy.scrub.method == "regress":
            covariates.append(cf.spike_regressors(outliers))
        if rest is not None:
            covariates.append(rest[:, None])
        wanted = {"WM": strategy.compcor.wm, "CSF": strategy.compcor.csf}
        for mask in tissue.masks:
            parts = conn_components(
                tissue.series(mask), mask.weight, np.hstack(covariates), wanted[mask.label],
                overwrite=True,
            )  # fmt: skip
            columns += list(parts.T)
            names += [f"{mask.label.lower()}_conn_{k:02d}" for k in range(parts.shape[1])]
    matrix = np.column_stack(columns) if columns else np.zeros((n, 0))
    weights = rest if strategy.weighting == "hrf" else None
    return matrix, names, weights


def tissue_masks_of_run(
    strategy: Strategy, probseg: dict | None, bold_affine, bold_shape
) -> list[TissueMask]:
    """Return the eroded WM and CSF masks on the BOLD grid.

    Empty when the strategy does not compute CONN's aCompCor or a map it needs was not found.
    """
    from bids_ketamine_fc.participant.compcor import tissue_mask

    labels = tissue_labels(strategy)
    if not labels or not set(labels) <= set(probseg or {}):
        return []
    return [tissue_mask(probseg[label], label, bold_affine, bold_shape) for label in labels]


def tissue_labels(strategy: Strategy) -> list[str]:
    """Return the tissue maps CONN's aCompCor needs for a strategy (``WM``, ``CSF``)."""
    if strategy.compcor.method != "conn":
        return []
    return [label for label, n in (("WM", strategy.compcor.wm), ("CSF", strategy.compcor.csf)) if n]


@dataclass
class RunData:
    """A run's brain series and everything its cleaning operator needs.

    Attributes
    ----------
    series : BrainSeries
    confounds : RunConfounds
    outliers : numpy.ndarray of bool
        The scrubbed volumes.
    regressors : numpy.ndarray (T, n)
        The confounds' columns, then CONN's own (``Effect of rest``, aCompCor).
    names : list of str
    weights : numpy.ndarray or None
        The first level's hrf weights.
    notes : list of str
        What differs from the strategy as written (for the QC table and the sidecars).
    """

    series: BrainSeries
    confounds: RunConfounds
    outliers: np.ndarray
    regressors: np.ndarray
    names: list[str]
    weights: np.ndarray | None
    notes: list[str]


def read_run(run: dict, strategy: Strategy, mask_img, dummy_scans: int | None) -> RunData:
    """Read a run's confounds and BOLD, find its outliers and build all its regressors.

    The BOLD file is read once: ART's global signal and the tissue voxels' series are gathered
    while the brain series is read.

    Parameters
    ----------
    run : dict
        As :func:`~bids_ketamine_fc.participant.run.process_run` takes it.
    strategy : Strategy
    mask_img : nibabel image
        The run's brain mask.
    dummy_scans : int or None
        ``--dummy-scans``.

    Returns
    -------
    RunData
    """
    mask = np.asarray(mask_img.dataobj) > 0
    masks = tissue_masks_of_run(strategy, run.get("probseg"), mask_img.affine, mask_img.shape)
    usable = bool(masks) and all(m.index.size for m in masks)
    confounds = prepare_confounds(run["confounds"], strategy, dummy_scans, usable)
    scrub = strategy.scrub
    own_global = scrub is not None and scrub.detector == "art" and scrub.gs_z_threshold is not None
    art = ArtGlobalSignal(brain_voxel_index(mask)) if own_global else None
    tissue = TissueSeries(masks) if usable else None
    observers = tuple(item for item in (art, tissue) if item is not None)
    series = read_brain_series(Path(run["bold"]), mask, confounds.n_dummy, observers)
    art_global = art.signal(series.data, series.global_signal) if art is not None else None
    if art is not None and art_global is None:  # ART's mask is too small: spm_global instead
        spm = SpmGlobal()
        one_voxel = np.zeros(mask.shape, bool)
        one_voxel.flat[np.flatnonzero(mask)[:1]] = True
        read_brain_series(Path(run["bold"]), one_voxel, confounds.n_dummy, (spm,))
        art_global = np.concatenate(spm.values)
    outliers = find_outliers(strategy, confounds, series.global_signal, art_global)
    extra, names, weights = conn_regressors(strategy, confounds, outliers, run["tr"], tissue)
    notes = [lowpass_note(strategy.filter.high if strategy.filter else None, run["tr"])]
    if tissue_labels(strategy) and any(strategy.compcor.counts) and not usable:
        found = "empty after erosion" if masks else "not found"
        notes.append(
            "aCompCor from fMRIPrep's confounds columns: the tissue probability maps "
            f"(label-WM/CSF probseg) of this run's space are {found}, so CONN's own aCompCor "
            "could not be computed"
        )
    return RunData(
        series=series,
        confounds=confounds,
        outliers=outliers,
        regressors=np.hstack([confounds.regressors, extra]),
        names=confounds.names + names,
        weights=weights,
        notes=[note for note in notes if note],
    )
