"""Match group ICA components to the Yeo-7 network templates: the components table.

The templates are the Yeo-7 networks (``Vis``, ``SomMot``, ``DorsAttn``, ``SalVentAttn``,
``Limbic``, ``Cont``, ``Default``) of TemplateFlow's ``atlas-Schaefer2018_desc-200Parcels7Networks
_dseg`` in the data's template space, named by the parcel names of its TSV
(``7Networks_LH_Default_PFC_1``), resampled onto the data grid by nearest neighbour in world
coordinates (any orientation); each network is a binary map. Each component (signed so that its
largest absolute loading is positive) is compared with each network by spatial Pearson correlation
over the analysis mask, as GIFT's and CONN's template matching: its ``network`` is the one it
correlates with most, and for each network the component correlating most with it is that
network's best match (``best_for``). The best matches of the selected networks (``Default``, the
study's DMN) are ``selected``; :mod:`.ica_compare` tests them R vs NR and writes the files.
"""

from __future__ import annotations

import logging
import re

import nibabel as nb
import numpy as np
import pandas as pd

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group.inference import clusters

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
