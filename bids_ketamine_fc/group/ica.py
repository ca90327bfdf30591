"""Group ICA of the denoised data, dual regression, network matching and R vs NR tests.

Input, per participant: ``OUTPUT_DIR/sub-<l>/func/sub-<l>_task-<t>_space-<S>[_res-<R>]_desc-reduced_
bold.nii.gz``, whose ``k`` volumes are the coefficients ``X`` (``k x V``) of the denoised, smoothed
BOLD series (runs concatenated) on an orthonormal temporal basis ``Q`` (``T x k``, ``Q'Q = I``):
the series are ``Q X``, so inner products between voxels are those of the series. The series are
zero-mean, so ``X`` is never centred over ``k``. Method (GIFT/MELODIC temporal concatenation):

1. each voxel's series is scaled to unit norm (MELODIC's variance normalisation);
2. subject PCA to ``min(k, 2 n)`` dimensions (``n = --ica-components``), uncentred;
3. group PCA to ``n`` by MIGP (MELODIC's incremental group PCA, Smith et al. 2014), the stack of
   subject blocks cut to its top ``10 n`` rows whenever longer (bounded memory);
4. spatial FastICA (scikit-learn, seeded with ``--random-seed``); maps z-scored over voxels,
   signed so that the largest absolute value is positive, ordered by explained variance;
5. dual regression (FSL's, variance-normalised time courses) on ``X``: exact, as ``Q'Q = I``
   (:func:`dual_regression`);
6. matching to the Yeo-7 networks (:mod:`.ica_match`) and, for the selected (DMN) components, the
   R vs NR models of the seed maps with random-field cluster inference (:mod:`.ica_compare`).

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
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc import __version__
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import clusters, ica_compare, ica_match, maps
from bids_ketamine_fc.group.ica_data import (
    ReducedIndex,
    analysis_mask,
    find_reduced_files,
    load_subject,
)
from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write_text

LOGGER = logging.getLogger(__name__)

#: The MIGP stack keeps this many times ``n_components`` rows.
MIGP_FACTOR = 10
#: Subject PCA keeps this many times ``n_components`` dimensions (GIFT's usual choice).
SUBJECT_PCA_FACTOR = 2
ICA_MAX_ITER = 1000
ICA_TOL = 1e-4
#: Voxels per chunk of the float64 cross products.
_CHUNK = 65536


def _cross(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Return ``a @ b.T`` in float64, summed over chunks of voxels (bounded memory)."""
    b = a if b is None else b
    out = np.zeros((a.shape[0], b.shape[0]))
    for start in range(0, a.shape[1], _CHUNK):
        cols = slice(start, start + _CHUNK)
        out += a[:, cols].astype(np.float64) @ b[:, cols].astype(np.float64).T
    return out


def top_components(data: np.ndarray, n: int) -> np.ndarray:
    """Top ``n`` uncentred principal components of the rows of ``data`` (``(rows, n_voxels)``).

    Returns
    -------
    numpy.ndarray
        ``(min(n, rows), n_voxels)`` float32 rows ``s_j v_j'`` (singular value times right
        singular vector), from the eigenvectors of the small Gram matrix ``data data'``. Rows
        are not centred: a temporal basis has no mean to remove.
    """
    values, vectors = np.linalg.eigh(_cross(data))
    order = np.argsort(values)[::-1][:n]
    return vectors[:, order].T.astype(np.float32) @ np.asarray(data, dtype=np.float32)


def migp(blocks: Iterable[np.ndarray], keep: int) -> np.ndarray:
    """MELODIC's incremental group PCA (Smith et al. 2014) of stacked subject blocks.

    Hand-written: scikit-learn's IncrementalPCA centres the rows, which is wrong for a temporal
    basis. Blocks are stacked and, whenever the stack exceeds ``keep`` rows, replaced by its top
    ``keep`` components, so memory is ``(keep + block rows) x n_voxels`` and the result is the
    exact top subspace of the full concatenation while it never exceeds ``keep`` rows.
    """
    stack = None
    for block in blocks:
        stack = block if stack is None else np.vstack([stack, block])
        if stack.shape[0] > keep:
            stack = top_components(stack, keep)
    if stack is None:
        raise ValueError("migp needs at least one block")
    return stack


def standardise_maps(maps_: np.ndarray) -> np.ndarray:
    """Z-score each map over voxels and sign it so that its largest absolute value is positive."""
    z = np.asarray(maps_, dtype=np.float64)
    z = (z - z.mean(axis=1, keepdims=True)) / z.std(axis=1, keepdims=True)
    peak = np.abs(z).argmax(axis=1)
    z *= np.sign(z[np.arange(len(z)), peak])[:, None]
    return z.astype(np.float32)


@dataclass(frozen=True)
class GroupICA:
    """Group ICA result.

    ``maps``: ``(n, n_voxels)`` float32 z maps; ``explained``: fraction of the MIGP stack's energy
    each map explains (regression of the stack on the maps); FastICA's ``n_iter``, ``converged``.
    """

    maps: np.ndarray
    explained: np.ndarray
    n_iter: int
    converged: bool


def spatial_ica(eigenmaps: np.ndarray, random_state: int | None) -> tuple[np.ndarray, int]:
    """Spatial FastICA (scikit-learn, logcosh) of ``(n, n_voxels)`` group eigenmaps.

    Returns
    -------
    sources : numpy.ndarray
        ``(n, n_voxels)`` z maps (:func:`standardise_maps`), in FastICA's order.
    n_iter : int
        Iterations run (``ICA_MAX_ITER`` when not converged).
    """
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    ica = FastICA(
        n_components=eigenmaps.shape[0],
        whiten="unit-variance",
        max_iter=ICA_MAX_ITER,
        tol=ICA_TOL,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported from n_iter_ instead
        sources = ica.fit_transform(np.asarray(eigenmaps, dtype=np.float64).T)
    return standardise_maps(sources.T), int(ica.n_iter_)


def group_ica(
    subject_data: Iterable[np.ndarray], n_components: int, random_state: int | None
) -> GroupICA:
    """Temporal-concatenation group ICA of voxel-normalised subject data.

    Parameters
    ----------
    subject_data : iterable of numpy.ndarray
        Each ``(k_i, n_voxels)`` (:func:`load_subject`), consumed once.
    n_components : int
    random_state : int or None
        FastICA seed.

    Returns
    -------
    GroupICA

    Raises
    ------
    UserInputError
        The data have fewer than ``n_components`` dimensions.
    """
    keep_subject = SUBJECT_PCA_FACTOR * n_components
    blocks = (top_components(x, min(x.shape[0], keep_subject)) for x in subject_data)
    stack = migp(blocks, MIGP_FACTOR * n_components)
    eigen = top_components(stack, n_components)
    norms = np.linalg.norm(eigen, axis=1)
    if eigen.shape[0] < n_components or norms.min() <= 1e-6 * norms.max():
        raise UserInputError(
            f"--ica-components {n_components}: the reduced data span only "
            f"{int((norms > 1e-6 * norms.max()).sum())} dimensions; lower --ica-components."
        )
    sources, n_iter = spatial_ica(eigen / norms[:, None], random_state)
    gram = _cross(sources)
    coef = np.linalg.solve(gram, _cross(sources, stack))
    total = sum(float(np.sum(np.square(c, dtype=np.float64))) for c in np.array_split(stack, 8, 1))
    energy = (coef**2).sum(axis=1) * np.diag(gram) / total
    order = np.argsort(-energy, kind="stable")
    converged = n_iter < ICA_MAX_ITER
    if not converged:
        LOGGER.warning("Group ICA: FastICA did not converge in %d iterations.", ICA_MAX_ITER)
    return GroupICA(sources[order], energy[order], n_iter, converged)


def dual_regression(data: np.ndarray, group_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FSL dual regression of one participant's reduced data.

    Stage 1 regresses the (spatially zero-mean) group maps on each volume: ``A = X M' (M M')^-1``,
    the time courses in the ``k`` basis. Stage 2 regresses the data on the time courses scaled to
    unit norm (FSL's ``--des_norm``): ``B = (U'U)^-1 U' X``. With the series ``Q X``
    (``Q'Q = I``), the time courses are ``Q A`` and stage 2 gives the same ``B``: the reduction
    is exact; with voxel-normalised data, ``B`` is what FSL gives on variance-normalised data.

    Parameters
    ----------
    data : numpy.ndarray
        ``(k, n_voxels)``.
    group_maps : numpy.ndarray
        ``(n_components, n_voxels)`` z maps.

    Returns
    -------
    timecourses : numpy.ndarray
        ``(k, n_components)`` float64, stage 1.
    subject_maps : numpy.ndarray
        ``(n_components, n_voxels)`` float32, stage 2.
    """
    if data.shape[0] <= group_maps.shape[0]:
        raise ValueError(
            f"dual regression needs more volumes ({data.shape[0]}) than components "
            f"({group_maps.shape[0]})"
        )
    timecourses = np.linalg.solve(_cross(group_maps), _cross(group_maps, data)).T
    norms = np.linalg.norm(timecourses, axis=0)
    unit = np.zeros_like(timecourses)
    np.divide(timecourses, norms, out=unit, where=norms > 0)
    stage2 = np.linalg.pinv(unit).astype(np.float32)
    return timecourses, stage2 @ np.asarray(data, dtype=np.float32)


def _random_state(settings: Settings) -> int:
    if settings.random_seed is not None:
        return int(settings.random_seed)
    seed = int(np.random.SeedSequence().entropy % 2**31)
    LOGGER.info("Group ICA: no --random-seed; FastICA seeded with %d (in the sidecar).", seed)
    return seed


def _save_maps(values: np.ndarray, mask: np.ndarray, affine: np.ndarray, path: Path, meta: dict):
    """Write ``(n, n_mask_voxels)`` maps as a 4-D float32 image (NaN outside ``mask``) + JSON."""
    img = nb.Nifti1Image(np.stack([maps.unmask(v, mask) for v in values], axis=-1), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_sform(affine, code=4)  # 4 = MNI152
    img.header.set_qform(affine, code=4)
    atomic_save_img(img, path)
    text = json.dumps(meta, indent=2, default=lambda o: o.tolist()) + "\n"
    atomic_write_text(path.with_name(path.name.replace(".nii.gz", ".json")), text)


def _dual_regress_all(settings, index, mask, group_maps, selected) -> tuple[list[str], np.ndarray]:
    """Dual-regress every participant, write their maps; return who and the selected maps."""
    used, kept = [], []
    for pid, path in index.files.items():
        data = load_subject(path, mask)
        if data.shape[0] <= len(group_maps):
            LOGGER.warning(
                "Group ICA: %s left out of dual regression: %d reduced volumes for %d components.",
                pid,
                data.shape[0],
                len(group_maps),
            )
            continue
        subject_maps = dual_regression(data, group_maps)[1]
        meta = {
            "Description": "Dual regression stage 2: subject map of each group component.",
            "Method": "FSL dual regression, variance-normalised data and time courses",
            "Sources": [str(path)],
            "ReducedVolumes": int(data.shape[0]),
        }
        out = ica_compare.ica_path(
            settings.output_dir, index.prefix, "components.nii.gz", subject=pid, desc="dualreg"
        )
        _save_maps(subject_maps, mask, index.affine, out, meta)
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
    atomic_save_img(nb.Nifti1Image(mask.astype(np.uint8), index.affine), mask_path)
    seed = _random_state(settings)
    subject_data = (load_subject(path, mask) for path in index.files.values())
    result = group_ica(subject_data, settings.ica_components, seed)
    path = ica_compare.ica_path(settings.output_dir, index.prefix, "components.nii.gz", desc="ica")
    _save_maps(
        result.maps, mask, index.affine, path, _components_meta(settings, index, result, seed)
    )
    return mask, result


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
        ``covariates``, ``voxel_p`` and ``cluster_p``.
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
