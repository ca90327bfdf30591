"""File names and writers of ``group/ica/``, and the R vs NR tests of the selected components.

The components table (:mod:`.ica_match`) marks as ``selected`` the best-matching components of the
selected networks (``Default``, the study's DMN). Their dual-regression (stage 2) maps get the R vs
NR models of the seed maps (:mod:`.glm`) with random-field cluster inference (:mod:`.rft`,
:mod:`.clusters`): :func:`compare_groups` writes their statistic maps, significant cluster masks and
``group/ica/clusters.tsv``. :func:`ica_path` names every file of ``group/ica/``;
:func:`write_components` writes ``components.tsv``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import maps
from bids_ketamine_fc.group.ica.match import COMPONENT_DESCRIPTIONS, SELECTED_NETWORKS
from bids_ketamine_fc.group.inference import clusters, glm, rft
from bids_ketamine_fc.utils.derivatives import save_mask
from bids_ketamine_fc.utils.io import atomic_write_text, atomic_write_tsv

LOGGER = logging.getLogger(__name__)

_ENTITIES = ("component", "model", "contrast", "inference", "cluster", "stat", "desc")
_STALE = ("*_cluster-*_mask.nii.gz", "*_component-*_boldmap.*", "sub-*_desc-dualreg_components.*")


def ica_path(output_dir, prefix: str, suffix: str, subject: str | None = None, **entities) -> Path:
    """Return ``OUTPUT_DIR/group/ica/[sub-<l>_]<prefix>[_component-<k>]..._<suffix>``.

    ``prefix`` is ``space-<S>[_res-<R>]``; entities (in the order of :data:`_ENTITIES`) set to
    None are left out; ``suffix`` includes the extension.
    """
    unknown = set(entities) - set(_ENTITIES)
    if unknown:
        raise ValueError(f"Unknown entities {sorted(unknown)}; expected {_ENTITIES}.")
    parts = ([subject] if subject else []) + [prefix]
    parts += [f"{key}-{entities[key]}" for key in _ENTITIES if entities.get(key) is not None]
    return Path(output_dir) / "group" / "ica" / ("_".join(parts) + f"_{suffix}")


def remove_stale(output_dir) -> None:
    """Delete per-component and per-participant outputs of an earlier run of ``group/ica/``."""
    folder = Path(output_dir) / "group" / "ica"
    for pattern in _STALE:
        for stale in folder.glob(pattern):
            stale.unlink()


def component_label(number: int, n_components: int) -> str:
    """Zero-padded component number used in file names (``03`` of 20)."""
    return f"{number:0{max(2, len(str(n_components)))}d}"


def empty_clusters() -> pd.DataFrame:
    """Return an empty cluster table with the columns of ``group/clusters.tsv``."""
    return pd.DataFrame(columns=list(clusters.COLUMNS))


def write_components(
    settings: Settings, table: pd.DataFrame, networks: tuple[str, ...] = SELECTED_NETWORKS
) -> Path:
    """Write ``group/ica/components.tsv`` and its JSON sidecar (``networks``: those selected)."""
    path = Path(settings.output_dir) / "group" / "ica" / "components.tsv"
    atomic_write_tsv(table, path, float_format=maps.FLOAT_FORMAT)
    per_network = {
        column: {"Description": f"Spatial correlation with the {column[2:]} network's binary map."}
        for column in table.columns
        if column.startswith("r_")
    }
    described = {k: v for k, v in COMPONENT_DESCRIPTIONS.items() if k in table.columns}
    sidecar = dict(described, **per_network, SelectedNetworks=list(networks))
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def write_clusters(settings: Settings, table: pd.DataFrame) -> Path:
    """Write ``group/ica/clusters.tsv`` (columns of ``group/clusters.tsv``) and its sidecar."""
    path = Path(settings.output_dir) / "group" / "ica" / "clusters.tsv"
    table = table.reindex(columns=list(clusters.COLUMNS))
    atomic_write_tsv(table, path, float_format=maps.FLOAT_FORMAT)
    sidecar = {
        **clusters.column_sidecar(
            seed="The tested group ICA component, component-<k>.",
            inference="rft: random field theory cluster p values (SPM12).",
        ),
        "HeightThreshold": {"VoxelP": settings.voxel_p},
        "ClusterP": settings.cluster_p,
        "Connectivity": 18,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def _write_stats(settings, index, mask, stats: dict, dof: int, keys: dict, meta: dict) -> None:
    def path_of(stat):
        return ica_path(settings.output_dir, index.prefix, "boldmap.nii.gz", stat=stat, **keys)

    maps.write_stat_maps(stats, mask, index.affine, dof, meta, path_of)


def _write_cluster_masks(settings, index, found: clusters.ClusterSet, keys: dict) -> None:
    for label in found.significant(settings.cluster_p):
        path = ica_path(
            settings.output_dir, index.prefix, "mask.nii.gz", inference="rft", cluster=label, **keys
        )
        save_mask(
            path, found.labels == label, index.affine, index.space,
            f"Cluster {label} of the R vs NR test of the component (p(FWE) < "
            f"{settings.cluster_p:g}, clusters.tsv).", Type="ROI",
        )  # fmt: skip


def _compare_model(settings, index, mask, data, rows, model, label, info, labeller) -> list:
    """Fit one model to one component's subject maps; write maps and masks; return cluster rows."""
    design = glm.design_matrix(rows, model, settings.covariates, where=f"ICA component {label}")
    fit = glm.fit_ols(data, design)
    u = rft.height_threshold(settings.voxel_p, design.dof)
    smooth = rft.estimate_smoothness(fit.std_resid, mask, rft.voxel_sizes(index.affine), design.dof)
    caution = clusters.low_dof_warning(
        design.dof, f"Group ICA component {label}, model {model}", "read these p values with care"
    )
    if caution:
        LOGGER.warning(caution)
    meta = dict(
        info,
        Model=model,
        Design=design.as_dict(),
        DegreesOfFreedom=design.dof,
        NPerGroup=design.n_per_group,
        HeightThreshold={"VoxelP": settings.voxel_p, "T": u},
        Smoothness=smooth.to_dict(),
        RFTWarning=caution,
        Inference=["rft"],
    )
    tables = []
    for contrast in glm.CONTRASTS:
        stats = glm.contrast_maps(fit, contrast)
        keys = {"component": label, "model": model, "contrast": contrast}
        vector = design.contrast(contrast).tolist()
        _write_stats(
            settings,
            index,
            mask,
            stats,
            design.dof,
            keys,
            dict(meta, Contrast=contrast, ContrastVector=vector),
        )
        t_map = maps.unmask(stats["t"], mask)
        found = clusters.rft_clusters(t_map, mask, u, smooth)
        tables.append(
            clusters.cluster_table(
                found,
                t_map,
                index.affine,
                labeller,
                seed=f"component-{label}",
                model=model,
                contrast=contrast,
            )
        )
        _write_cluster_masks(settings, index, found, keys)
    return tables


def compare_groups(settings, index, mask, table, subject_maps, rows, labeller) -> pd.DataFrame:
    """R vs NR tests of the selected components' dual-regression maps; write ``clusters.tsv``.

    Parameters
    ----------
    settings : Settings
    index : ica_data.ReducedIndex
        Grid and file-name prefix.
    mask : numpy.ndarray
        3-D analysis mask of the maps.
    table : pandas.DataFrame
        The components table (:func:`components_table`).
    subject_maps : numpy.ndarray
        ``(n_selected, n_participants, n_mask_voxels)`` stage-2 maps of the selected components.
    rows : pandas.DataFrame
        The participants of ``subject_maps`` (``participant_id``, ``group``, covariates), in order.
    labeller : clusters.PeakLabeller

    Returns
    -------
    pandas.DataFrame
        Cluster rows (:data:`clusters.COLUMNS`), ``seed`` = ``component-<k>``, inference ``rft``.
    """
    selected = table[table["selected"].astype(bool)]
    tables = []
    for data, (_, component) in zip(subject_maps, selected.iterrows(), strict=True):
        label = component_label(int(component["component"]), len(table))
        info = {
            "Component": int(component["component"]),
            "Network": component["network"],
            "SpatialCorrelation": float(component["r"]),
            "Description": "R vs NR on dual-regression (stage 2) maps of a group ICA component.",
        }
        try:  # a model that cannot be fitted is said once for the component, not per model
            for model in glm.model_names(settings.covariates):
                glm.design_matrix(rows, model, settings.covariates, where=f"ICA component {label}")
        except UserInputError as err:
            LOGGER.warning("Group ICA: R vs NR test of component %s skipped (%s).", label, err)
            continue
        for model in glm.model_names(settings.covariates):
            tables += _compare_model(
                settings, index, mask, data, rows, model, label, info, labeller
            )
    found = pd.concat(tables, ignore_index=True) if tables else empty_clusters()
    write_clusters(settings, found)
    return found
