"""The group ICA step of the group level: decompose, dual-regress, match, compare, write.

Steps: :mod:`.data` finds the participants' ``desc-reduced_bold`` files and the analysis mask,
:mod:`.decompose` runs the group ICA and the dual regression, :mod:`.match` matches components to
the Yeo-7 networks and :mod:`.compare` runs the R vs NR models of the selected (DMN) components.

Outputs under ``OUTPUT_DIR/group/ica/`` (``<p>`` = ``space-<S>[_res-<R>]``): ``<p>_desc-ica_
components.nii.gz``, ``<p>_desc-analysis_mask.nii.gz``, ``sub-<l>_<p>_desc-dualreg_components
.nii.gz``, ``components.tsv``, and per selected component ``k``: ``<p>_component-<k>_model-<m>
_contrast-<c>_stat-<s>_boldmap.nii.gz``, ``..._inference-rft_cluster-<n>_mask.nii.gz`` and the
rows of ``clusters.tsv`` (columns of ``group/clusters.tsv``, ``seed`` = ``component-<k>``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc import __version__
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UsageError
from bids_ketamine_fc.group import maps
from bids_ketamine_fc.group.ica import compare as ica_compare
from bids_ketamine_fc.group.ica import match as ica_match
from bids_ketamine_fc.group.ica.data import (
    ReducedIndex,
    analysis_mask,
    find_reduced_files,
    load_subject,
    volumes_kept,
)
from bids_ketamine_fc.group.ica.decompose import (
    MIGP_FACTOR,
    SUBJECT_PCA_FACTOR,
    GroupICA,
    dual_regression,
    group_ica,
)
from bids_ketamine_fc.group.inference import clusters
from bids_ketamine_fc.utils.derivatives import bids_uri, save_mask, set_header_space
from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write_text

LOGGER = logging.getLogger(__name__)


def _random_state(settings: Settings) -> int:
    if settings.random_seed is not None:
        return int(settings.random_seed)
    seed = int(np.random.SeedSequence().entropy % 2**31)
    LOGGER.info("Group ICA: no --random-seed; FastICA seeded with %d (in the sidecar).", seed)
    return seed


def _save_maps(values: np.ndarray, mask: np.ndarray, index, path: Path, meta: dict):
    """Write ``(n, n_mask_voxels)`` maps as a 4-D float32 image (NaN outside ``mask``) + JSON."""
    img = nb.Nifti1Image(np.stack([maps.unmask(v, mask) for v in values], axis=-1), index.affine)
    atomic_save_img(set_header_space(img, index.space), path)
    text = json.dumps(meta, indent=2, default=lambda o: o.tolist()) + "\n"
    atomic_write_text(path.with_name(path.name.replace(".nii.gz", ".json")), text)


_DUAL_REGRESSION_TEXT = {
    "fsl": "FSL dual_regression (des_norm 1): stage 1 and 2 on the participant's data as "
    "written (not variance-normalised), stage-2 time courses scaled to unit variance",
    "normalised": "dual regression on variance-normalised data (each voxel's series of unit "
    "norm, the input of the group ICA), stage-2 time courses of unit norm",
}


def _dual_regress_one(settings, path, mask, group_maps) -> tuple[np.ndarray, dict] | None:
    """Stage-2 maps of one participant and their sidecar (None: too few reduced volumes)."""
    fsl = settings.dual_regression == "fsl"
    data = load_subject(path, mask, normalise=not fsl)
    if data.shape[0] <= len(group_maps):
        LOGGER.warning(
            "Group ICA: %s left out of dual regression: %d reduced volumes for %d components.",
            path.name,
            data.shape[0],
            len(group_maps),
        )
        return None
    n_timepoints = volumes_kept(path) if fsl else None
    if fsl and n_timepoints is None:
        LOGGER.warning(
            "Group ICA: %s has no VolumesKept in its sidecar (older participant outputs): its "
            "stage-2 maps are scaled by sqrt(T - 1); rerun the participant level.",
            path.name,
        )
    meta = {
        "Description": "Dual regression stage 2: subject map of each group component.",
        "Method": _DUAL_REGRESSION_TEXT[settings.dual_regression],
        "Sources": [bids_uri(path, settings.output_dir)],
        "ReducedVolumes": int(data.shape[0]),
        "TimePoints": n_timepoints,
    }
    return dual_regression(data, group_maps, n_timepoints)[1], meta


def _dual_regress_all(settings, index, mask, group_maps, selected) -> tuple[list[str], np.ndarray]:
    """Dual-regress every participant, write their maps; return who and the selected maps."""
    used, kept = [], []
    for pid, path in index.files.items():
        done = _dual_regress_one(settings, path, mask, group_maps)
        if done is None:
            continue
        subject_maps, meta = done
        out = ica_compare.ica_path(
            settings.output_dir, index.prefix, "components.nii.gz", subject=pid, desc="dualreg"
        )
        _save_maps(subject_maps, mask, index, out, meta)
        kept.append(subject_maps[selected])
        used.append(pid)
    stacked = np.stack(kept, axis=1) if kept else np.zeros((len(selected), 0, int(mask.sum())))
    return used, stacked


def _components_meta(settings: Settings, index, result: GroupICA, seed: int) -> dict:
    from sklearn import __version__ as sklearn_version

    return {
        "Description": "Group ICA spatial components, z-scored over the analysis mask.",
        "NComponents": settings.ica_components,
        "Participants": list(index.files),
        "SubjectPCADimension": SUBJECT_PCA_FACTOR * settings.ica_components,
        "MIGPDimension": MIGP_FACTOR * settings.ica_components,
        "VoxelNormalisation": "unit norm (variance normalisation)",
        "Algorithm": "FastICA (scikit-learn), logcosh, parallel, unit-variance whitening",
        "RandomSeed": seed,
        "Iterations": result.n_iter,
        "Converged": result.converged,
        "ExplainedFraction": result.explained,
        "Software": {"bids_ketamine_fc": __version__, "scikit-learn": sklearn_version},
    }


def _decompose(settings: Settings, index: ReducedIndex) -> tuple[np.ndarray, GroupICA]:
    """Find the analysis mask, run the group ICA and write the mask and the components."""
    mask = analysis_mask(index)
    mask_path = ica_compare.ica_path(
        settings.output_dir, index.prefix, "mask.nii.gz", desc="analysis"
    )
    save_mask(
        mask_path, mask, index.affine, index.space,
        "Group ICA analysis mask: voxels valid in every participant's reduced data.",
        Sources=[bids_uri(p, settings.output_dir) for p in index.files.values()],
    )  # fmt: skip
    seed = _random_state(settings)
    subject_data = (load_subject(path, mask) for path in index.files.values())
    result = group_ica(subject_data, settings.ica_components, seed)
    path = ica_compare.ica_path(settings.output_dir, index.prefix, "components.nii.gz", desc="ica")
    _save_maps(result.maps, mask, index, path, _components_meta(settings, index, result, seed))
    return mask, result


def check_components(settings: Settings, participant_ids: list[str]) -> None:
    """Refuse, before any output, an ``--ica-components`` the participants' reduced data cannot give.

    A participant enters the dual regression only with more reduced dimensions than components;
    when none has, the group ICA would be computed for nothing.

    Raises
    ------
    UsageError
        Every participant's reduced data have at most ``--ica-components`` dimensions.
    """
    index = find_reduced_files(settings, participant_ids)
    if index is None:
        return
    largest = max(int(nb.load(path).shape[3]) for path in index.files.values())
    if settings.ica_components >= largest:
        raise UsageError(
            f"--ica-components {settings.ica_components}: the participants' reduced data hold at "
            f"most {largest} dimensions, so no participant could be dual-regressed; ask for fewer "
            f"than {largest} components, or rerun the participant level with a larger "
            "--reduced-dims."
        )


def run_group_ica(
    settings: Settings,
    subjects: pd.DataFrame,
    labeller: clusters.PeakLabeller,
    networks: tuple[str, ...] = ica_match.SELECTED_NETWORKS,
) -> pd.DataFrame:
    """Run the group ICA, dual regression, matching and R vs NR tests; write ``group/ica/``.

    Parameters
    ----------
    settings : Settings
        Uses ``output_dir``, ``task_id``, ``space``, ``ica_components``, ``random_seed``,
        ``dual_regression``, ``covariates``, ``voxel_p`` and ``cluster_p``.
    subjects : pandas.DataFrame
        Included participants: ``participant_id``, ``group`` and the covariates.
    labeller : clusters.PeakLabeller
        Names cluster peaks.
    networks : tuple of str
        Networks whose best-matching component is tested (default: the DMN, ``Default``).

    Returns
    -------
    pandas.DataFrame
        The rows of ``group/ica/clusters.tsv`` (columns of ``group/clusters.tsv``); empty, with
        a warning, when no participant has reduced data (participant outputs of an older version).

    Raises
    ------
    UserInputError
        Reduced data on different grids, or more components than the data have dimensions.
    """
    start = time.monotonic()
    index = find_reduced_files(settings, list(subjects["participant_id"]))
    if index is None:
        LOGGER.warning(
            "Group ICA skipped: no sub-<label>_task-%s_space-%s*_desc-reduced_bold.nii.gz in %s "
            "(participant outputs of an older version); rerun the participant level.",
            settings.task_id,
            settings.space,
            settings.output_dir,
        )
        return ica_compare.empty_clusters()
    missing = sorted(set(subjects["participant_id"]) - set(index.files))
    if missing:
        LOGGER.warning("Group ICA without %s (no reduced data).", ", ".join(missing))
    ica_compare.remove_stale(settings.output_dir)
    mask, result = _decompose(settings, index)
    masks = ica_match.network_masks(
        index.space, index.template_resolution, index.shape, index.affine
    )
    table = ica_match.components_table(result.maps, masks, mask, networks)
    table.insert(1, "explained", result.explained)
    ica_compare.write_components(settings, table, networks)
    selected = np.flatnonzero(table["selected"].to_numpy(dtype=bool))
    for _, row in table.iloc[selected].iterrows():
        LOGGER.info(
            "Group ICA: component %d is %s (r = %.2f).", *row[["component", "network", "r"]]
        )
    used, selected_maps = _dual_regress_all(settings, index, mask, result.maps, selected)
    rows = subjects.set_index("participant_id").loc[used].reset_index()
    found = ica_compare.compare_groups(settings, index, mask, table, selected_maps, rows, labeller)
    LOGGER.info(
        "Group ICA: %d components of %d participants, %d voxels, done in %.1f s.",
        settings.ica_components,
        len(index.files),
        int(mask.sum()),
        time.monotonic() - start,
    )
    return found
