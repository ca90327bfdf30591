"""Match group ICA components to network templates, test the matched ones R vs NR, write files.

The templates are the Yeo-7 networks (``Vis``, ``SomMot``, ``DorsAttn``, ``SalVentAttn``,
``Limbic``, ``Cont``, ``Default``) of TemplateFlow's ``atlas-Schaefer2018_desc-200Parcels7Networks
_dseg`` in the data's template space, named by the parcel names of its TSV
(``7Networks_LH_Default_PFC_1``), resampled onto the data grid by nearest neighbour in world
coordinates (any orientation); each network is a binary map. Each component (signed so that its
largest absolute loading is positive) is compared with each network by spatial Pearson correlation
over the analysis mask, as GIFT's and CONN's template matching: its ``network`` is the one it
correlates with most, and for each network the component correlating most with it is that
network's best match (``best_for``). The best matches of the selected networks (``Default``, the
study's DMN) are ``selected``: their dual-regression maps get the R vs NR models of the seed maps
(:mod:`.glm`) with random-field cluster inference (:mod:`.rft`, :mod:`.clusters`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group import clusters, glm, maps, rft
from bids_ketamine_fc.utils.io import atomic_save_img, atomic_write_text, atomic_write_tsv

LOGGER = logging.getLogger(__name__)

#: The Yeo-7 networks, as named in Schaefer's 7-network tables.
NETWORKS = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
#: Networks whose best-matching component is tested R vs NR (the study's DMN).
SELECTED_NETWORKS = ("Default",)
ATLAS = {"atlas": "Schaefer2018", "desc": "200Parcels7Networks", "suffix": "dseg"}
#: Templates whose Schaefer TSV may stand in for the data's (same parcel names in every MNI template).
_NAMES_FALLBACK = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")
_NAME_RE = re.compile(r"^\d+Networks_(?:LH|RH)_(?P<network>[A-Za-z]+)")

COMPONENT_DESCRIPTIONS = {
    "component": {
        "Description": "Component number (volume of the desc-ica_components file, 1-based)."
    },
    "explained": {"Description": "Fraction of the group PCA data's energy the map explains."},
    "network": {"Description": "Yeo-7 network (Schaefer2018 7Networks) most correlated with it."},
    "r": {
        "Description": "Spatial Pearson correlation of the z map with that network's binary map."
    },
    "best_for": {
        "Description": "Networks for which this component is the best match (comma list)."
    },
    "selected": {"Description": "Tested R vs NR: the best match of a selected network (Default)."},
    "r_<network>": {"Description": "Spatial correlation with each network's binary map."},
}


def network_of(name: str) -> str | None:
    """Return the Yeo-7 network of a Schaefer parcel name (``7Networks_LH_Default_PFC_1``)."""
    match = _NAME_RE.match(str(name))
    if match is None or match["network"] not in NETWORKS:
        return None
    return match["network"]


def _names_file(space: str):
    from bids_ketamine_fc import templates

    for template in dict.fromkeys((space, *_NAMES_FALLBACK)):
        try:
            return templates.get_template_file(template, None, extension=".tsv", **ATLAS)
        except UserInputError as err:
            last = err
    raise last


def network_masks(
    space: str, resolution: int | None, shape: tuple[int, ...], affine: np.ndarray
) -> dict[str, np.ndarray] | None:
    """Binary maps of the Yeo-7 networks on a data grid, from TemplateFlow's Schaefer atlas.

    Parameters
    ----------
    space : str
        TemplateFlow template of the data.
    resolution : int or None
        Preferred atlas resolution (the nearest available one is used).
    shape, affine
        Data grid (first three dimensions) and its voxel-to-world affine (any orientation).

    Returns
    -------
    dict or None
        See :func:`network_masks_from`; None (with a warning) when the atlas or its TSV is not in
        ``TEMPLATEFLOW_HOME``.
    """
    from bids_ketamine_fc import templates

    try:
        atlas = templates.get_template_file(space, resolution, **ATLAS)
        names = clusters.read_label_names(_names_file(space))  # the dseg TSV reader of peak labels
    except (UserInputError, OSError) as err:
        LOGGER.warning("Group ICA: components not matched to networks (%s).", err)
        return None
    return network_masks_from(atlas, names, shape, affine)


def network_masks_from(atlas, names: dict[int, str], shape, affine) -> dict[str, np.ndarray] | None:
    """Binary maps of the Yeo-7 networks of a Schaefer label image, on a data grid.

    Parameters
    ----------
    atlas : str, Path or nibabel image
        Schaefer 7-network ``dseg`` image.
    names : dict
        ``{label value: parcel name}`` of its TSV.
    shape, affine
        Data grid (first three dimensions) and its voxel-to-world affine (any orientation).

    Returns
    -------
    dict or None
        ``{network: 3-D bool}`` of the networks present on the grid (nearest-neighbour
        resampling in world coordinates), in :data:`NETWORKS` order; None if none is.
    """
    from bids_ketamine_fc import templates

    target = nb.Nifti1Image(np.zeros(shape[:3], np.uint8), affine)
    labels = np.asanyarray(templates.resample_labels_to(atlas, target).dataobj).astype(np.int32)
    by_network: dict[str, list[int]] = {}
    for value, name in names.items():
        network = network_of(name)
        if network is not None:
            by_network.setdefault(network, []).append(value)
    masks = {net: np.isin(labels, by_network[net]) for net in NETWORKS if net in by_network}
    masks = {net: mask for net, mask in masks.items() if mask.any()}
    missing = [net for net in NETWORKS if net not in masks]
    if missing:
        LOGGER.warning("Group ICA: networks absent from the atlas on this grid: %s.", missing)
    return masks or None


def spatial_correlation(maps: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Pearson correlation of every map with every template over the same voxels.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n_maps, n_voxels)``.
    templates : numpy.ndarray
        ``(n_templates, n_voxels)`` (binary network maps, or any values).

    Returns
    -------
    numpy.ndarray
        ``(n_maps, n_templates)`` float64; NaN for a constant map or template.
    """

    def _standardise(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        a = a - a.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm > 0, a / norm, np.nan)

    return _standardise(maps) @ _standardise(templates).T


def match_components(
    r: np.ndarray, networks: list[str], selected_networks: tuple[str, ...] = SELECTED_NETWORKS
) -> pd.DataFrame:
    """Tabulate the best network of each component and the best component of each network.

    Parameters
    ----------
    r : numpy.ndarray
        ``(n_components, n_networks)`` spatial correlations (:func:`spatial_correlation`).
    networks : list of str
        Network of each column of ``r``.
    selected_networks : tuple of str
        Networks whose best-matching component is selected.

    Returns
    -------
    pandas.DataFrame
        ``component``, ``network``, ``r``, ``best_for``, ``selected``, then ``r_<network>``.
    """
    n_components = r.shape[0]
    filled = np.where(np.isfinite(r), r, -np.inf)
    best_net = filled.argmax(axis=1)
    best_comp = filled.argmax(axis=0)
    best_for = [[] for _ in range(n_components)]
    for j, network in enumerate(networks):
        if np.isfinite(filled[best_comp[j], j]):
            best_for[best_comp[j]].append(network)
    table = pd.DataFrame(
        {
            "component": np.arange(1, n_components + 1),
            "network": [
                networks[j] if np.isfinite(filled[c, j]) else "n/a" for c, j in enumerate(best_net)
            ],
            "r": r[np.arange(n_components), best_net],
            "best_for": [",".join(nets) if nets else "n/a" for nets in best_for],
            "selected": [bool(set(nets) & set(selected_networks)) for nets in best_for],
        }
    )
    for j, network in enumerate(networks):
        table[f"r_{network}"] = r[:, j]
    return table


def unmatched_components(n_components: int) -> pd.DataFrame:
    """Return the components table when no network template is available (nothing selected)."""
    return pd.DataFrame(
        {
            "component": np.arange(1, n_components + 1),
            "network": "n/a",
            "r": np.nan,
            "best_for": "n/a",
            "selected": False,
        }
    )


def components_table(
    group_maps: np.ndarray,
    masks: dict[str, np.ndarray] | None,
    analysis_mask: np.ndarray,
    selected_networks: tuple[str, ...] = SELECTED_NETWORKS,
) -> pd.DataFrame:
    """Match masked group maps to the network masks over ``analysis_mask``.

    Parameters
    ----------
    group_maps : numpy.ndarray
        ``(n_components, n_mask_voxels)``, columns in ``analysis_mask.ravel(order="F")`` order.
    masks : dict or None
        From :func:`network_masks`; None gives an unmatched table.
    analysis_mask : numpy.ndarray
        3-D boolean mask of the maps' voxels.
    selected_networks : tuple of str
        Networks whose best-matching component is selected.

    Returns
    -------
    pandas.DataFrame
        See :func:`match_components`.
    """
    unknown = sorted(set(selected_networks) - set(NETWORKS))
    if unknown:
        raise ValueError(f"Unknown networks {unknown}; expected some of {NETWORKS}.")
    if not masks:
        return unmatched_components(group_maps.shape[0])
    inside = analysis_mask.ravel(order="F")
    networks = list(masks)
    indicators = np.stack([masks[net].ravel(order="F")[inside] for net in networks])
    table = match_components(
        spatial_correlation(group_maps, indicators), networks, selected_networks
    )
    if not table["selected"].any():
        LOGGER.warning("Group ICA: no component matches %s on this grid.", list(selected_networks))
    return table


# --- Files of group/ica/ and the R vs NR tests of the selected components -----------------------

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
    from bids_ketamine_fc.group.run import FLOAT_FORMAT  # lazy: run.py calls this module

    path = Path(settings.output_dir) / "group" / "ica" / "components.tsv"
    atomic_write_tsv(table, path, float_format=FLOAT_FORMAT)
    sidecar = dict(COMPONENT_DESCRIPTIONS, SelectedNetworks=list(networks))
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def write_clusters(settings: Settings, table: pd.DataFrame) -> Path:
    """Write ``group/ica/clusters.tsv`` (columns of ``group/clusters.tsv``) and its sidecar."""
    from bids_ketamine_fc.group.run import FLOAT_FORMAT

    path = Path(settings.output_dir) / "group" / "ica" / "clusters.tsv"
    table = table.reindex(columns=list(clusters.COLUMNS))
    atomic_write_tsv(table, path, float_format=FLOAT_FORMAT)
    sidecar = {
        "seed": {"Description": "The tested group ICA component, component-<k>."},
        "inference": {"Description": "rft: random field theory cluster p values (SPM12)."},
        "peak_stat": {"Description": "Peak t value of the cluster."},
        "HeightThreshold": {"VoxelP": settings.voxel_p},
        "ClusterP": settings.cluster_p,
        "Connectivity": 18,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def _write_stats(settings, index, mask, stats: dict, dof: int, keys: dict, meta: dict) -> None:
    from bids_ketamine_fc.group import run  # lazy: run.py calls this module

    for stat in run.STATS:
        path = ica_path(settings.output_dir, index.prefix, "boldmap.nii.gz", stat=stat, **keys)
        img = maps.to_image(stats[stat], mask, index.affine)
        if stat in run.STAT_INTENTS:
            img.header.set_intent(run.STAT_INTENTS[stat], (float(dof),) if stat == "t" else ())
        atomic_save_img(img, path)
        text = json.dumps(
            dict(meta, Statistic=stat, Description=run.STAT_DESCRIPTIONS[stat]),
            indent=2,
            default=lambda o: o.tolist(),
        )
        atomic_write_text(path.with_name(path.name.replace(".nii.gz", ".json")), text + "\n")


def _write_cluster_masks(settings, index, found: clusters.ClusterSet, keys: dict) -> None:
    for label in found.significant(settings.cluster_p):
        path = ica_path(
            settings.output_dir, index.prefix, "mask.nii.gz", inference="rft", cluster=label, **keys
        )
        img = nb.Nifti1Image((found.labels == label).astype(np.uint8), index.affine)
        img.header.set_xyzt_units("mm")
        atomic_save_img(img, path)


def _compare_model(settings, index, mask, data, rows, model, label, info, labeller) -> list:
    """Fit one model to one component's subject maps; write maps and masks; return cluster rows."""
    try:
        design = glm.design_matrix(rows, model, settings.covariates, where=f"ICA component {label}")
    except UserInputError as err:
        LOGGER.warning("Group ICA: R vs NR test of component %s skipped (%s).", label, err)
        return []
    fit = glm.fit_ols(data, design)
    u = rft.height_threshold(settings.voxel_p, design.dof)
    smooth = rft.estimate_smoothness(fit.std_resid, mask, rft.voxel_sizes(index.affine), design.dof)
    meta = dict(
        info,
        Model=model,
        Design=design.as_dict(),
        DegreesOfFreedom=design.dof,
        NPerGroup=design.n_per_group,
        HeightThreshold={"VoxelP": settings.voxel_p, "T": u},
        Smoothness=smooth.to_dict(),
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
        for model in glm.model_names(settings.covariates):
            tables += _compare_model(
                settings, index, mask, data, rows, model, label, info, labeller
            )
    found = pd.concat(tables, ignore_index=True) if tables else empty_clusters()
    write_clusters(settings, found)
    return found
