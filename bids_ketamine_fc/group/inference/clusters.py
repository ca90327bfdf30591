"""Clusters of a t map, their p values under each inference, peak labels and the cluster table.

Every inference forms 18-connected clusters (SPM's ``spm_bwlabel(..., 18)``, see
:func:`~bids_ketamine_fc.group.inference.rft.label_clusters`), numbered as SPM lists them (by decreasing
peak t):

- ``rft``: clusters above the height threshold ``u`` (t of ``--voxel-p``), cluster-level p values
  from random field theory (:mod:`~bids_ketamine_fc.group.rft`, as SPM12);
- ``permutation``: the same clusters, FWE p values from the permutation distribution of the
  maximum cluster size (:mod:`~bids_ketamine_fc.group.inference.permutation`, Freedman-Lane); the
  permutation engine keeps only each permutation's maximum, so ``p_unc`` and ``p_fdr`` are n/a;
- ``tfce``: clusters of voxels with TFCE p(FWE) < ``--cluster-p``; a cluster's p(FWE) is that of
  its best voxel (``p_unc`` and ``p_fdr`` n/a, as TFCE inference is voxel-wise and FWE only).

Peaks are labelled with the Harvard-Oxford atlases of TemplateFlow (``atlas-HOSPA`` then
``atlas-HOCPA``, ``desc-th25``) in the template space of the data, using world coordinates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group.inference import rft
from bids_ketamine_fc.group.maps import unmask

LOGGER = logging.getLogger(__name__)

COLUMNS = (
    "seed",
    "model",
    "contrast",
    "inference",
    "cluster",
    "size_vox",
    "size_mm3",
    "peak_x",
    "peak_y",
    "peak_z",
    "peak_stat",
    "peak_label",
    "p_fwe",
    "p_fdr",
    "p_unc",
)
#: Meaning of each column of the cluster tables (their JSON sidecars).
COLUMN_DESCRIPTIONS = {
    "seed": "Seed whose maps were tested.",
    "model": "Second-level model: groups (R and NR means) or groupsAge (plus covariates).",
    "contrast": "RgtNR (responders > non-responders) or NRgtR.",
    "inference": "How the cluster p values were obtained: rft (random field theory, SPM12), "
    "permutation (Freedman-Lane null of the maximum cluster size) or tfce (clusters of voxels "
    "with TFCE p(FWE) below ClusterP).",
    "cluster": "Cluster number, by decreasing peak t (as SPM lists them).",
    "size_vox": "Cluster size in voxels.",
    "size_mm3": "Cluster size in mm^3.",
    "peak_x": "Peak position, world (MNI) x, mm.",
    "peak_y": "Peak position, world (MNI) y, mm.",
    "peak_z": "Peak position, world (MNI) z, mm.",
    "peak_stat": "Peak t value of the cluster.",
    "peak_label": "Harvard-Oxford label (TemplateFlow HOSPA/HOCPA th25) at the peak.",
    "p_fwe": "Family-wise error corrected p (tfce: best voxel of the cluster).",
    "p_fdr": "Topological cluster FDR q (rft only; n/a otherwise).",
    "p_unc": "Uncorrected cluster p (rft only; n/a otherwise).",
}
#: Units of the columns that have one.
COLUMN_UNITS = {"size_mm3": "mm^3", "peak_x": "mm", "peak_y": "mm", "peak_z": "mm"}
INFERENCES = ("rft", "permutation", "tfce")


def column_sidecar(**overrides: str) -> dict:
    """Return the ``{column: {Description[, Units]}}`` sidecar of a cluster table."""
    texts = COLUMN_DESCRIPTIONS | overrides
    return {
        column: {"Description": texts[column]}
        | ({"Units": COLUMN_UNITS[column]} if column in COLUMN_UNITS else {})
        for column in COLUMNS
    }


UNLABELLED = "unlabelled"
ATLAS_UNAVAILABLE = "unlabelled (atlas unavailable)"
#: HOSPA labels that only say "cortex" or "white matter": the cortical atlas names them better.
_GENERIC = ("Cerebral Cortex", "Cerebral White Matter")
#: Template whose TSV of Harvard-Oxford names stands in when the data's template has none (the
#: label values are the same FSL atlas in every MNI template of TemplateFlow).
_NAMES_FALLBACK = "MNI152NLin6Asym"


#: Fewest error degrees of freedom at which random-field cluster p values pass without a warning.
#: Hayasaka & Nichols (2003, NeuroImage 20:2343) found random-field cluster-size tests of t maps
#: unreliable at low degrees of freedom unless the threshold is high and the maps smooth; on
#: stationary null maps the cluster FWE rate of :mod:`.rft` at voxel p .001 was 9-11 % at 4 dof
#: and 5.5 % at 5 (``tests/test_rft.py`` measures it), and real maps are not stationary.
MIN_RFT_DOF = 10
_PERMUTATION_ADVICE = "use --inference permutation (exact for small samples)"


def low_dof_warning(dof: float, where: str, advice: str = _PERMUTATION_ADVICE) -> str | None:
    """Return the warning for random-field inference with fewer than :data:`MIN_RFT_DOF` dof.

    Parameters
    ----------
    dof : float
        Error degrees of freedom of the model.
    where : str
        What the model is (named in the message).
    advice : str
        What to do instead.

    Returns
    -------
    str or None
        The message; None when ``dof`` is at least :data:`MIN_RFT_DOF`.
    """
    if dof >= MIN_RFT_DOF:
        return None
    return (
        f"{where}: random-field cluster inference with {dof:g} degrees of freedom (fewer than "
        f"{MIN_RFT_DOF}) is unreliable and can call chance clusters significant; {advice}."
    )


@dataclass(frozen=True)
class ClusterSet:
    """The clusters of one map under one inference.

    Attributes
    ----------
    inference : str
    labels : numpy.ndarray
        3-D int32, cluster ``k`` has label ``k`` (1-based), 0 elsewhere.
    p_fwe, p_fdr, p_unc : numpy.ndarray
        ``(n_clusters,)`` p values of clusters 1..n.
    """

    inference: str
    labels: np.ndarray
    p_fwe: np.ndarray
    p_fdr: np.ndarray
    p_unc: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Cluster sizes in voxels."""
        return np.bincount(self.labels.ravel(), minlength=len(self.p_fwe) + 1)[1:]

    def significant(self, alpha: float) -> list[int]:
        """Labels of the clusters with p(FWE) < ``alpha``."""
        return [k + 1 for k in np.flatnonzero(self.p_fwe < alpha)]


def rft_clusters(
    stat: np.ndarray, mask: np.ndarray, u: float, smooth: rft.Smoothness
) -> ClusterSet:
    """Clusters above ``u`` with SPM's random-field cluster p values.

    Parameters
    ----------
    stat : numpy.ndarray
        3-D t map.
    mask : numpy.ndarray
        3-D boolean analysis mask.
    u : float
        Height threshold (t).
    smooth : rft.Smoothness
        From :func:`~bids_ketamine_fc.group.inference.rft.estimate_smoothness`.

    Returns
    -------
    ClusterSet
    """
    labels, sizes = rft.label_clusters(stat, mask, u)
    p = rft.cluster_pvalues(sizes, u, smooth)
    return ClusterSet("rft", labels, p["p_fwe"], p["p_fdr"], p["p_unc"])


def permutation_clusters(result, mask: np.ndarray) -> ClusterSet:
    """Clusters above the height threshold with cluster-size FWE p values by permutation.

    Parameters
    ----------
    result : permutation.PermutationResult
        One contrast of :func:`~bids_ketamine_fc.group.inference.permutation.permutation_test`.
    mask : numpy.ndarray
        3-D boolean analysis mask.

    Returns
    -------
    ClusterSet
        ``p_unc`` and ``p_fdr`` are NaN (only the maximum-size null is available).
    """
    unknown = np.full(len(result.cluster_sizes), np.nan)
    labels = unmask(result.cluster_labels, mask, fill=0, dtype=np.int32)
    return ClusterSet("permutation", labels, result.cluster_p_fwe_size, unknown, unknown)


def tfce_clusters(result, mask: np.ndarray, alpha: float) -> ClusterSet:
    """Clusters of voxels whose TFCE p(FWE) is below ``alpha`` (18-connected, as SPM).

    Parameters
    ----------
    result : permutation.PermutationResult
        One contrast, computed with ``tfce=True``.
    mask : numpy.ndarray
        3-D boolean analysis mask.
    alpha : float
        Voxel-wise FWE level (``--cluster-p``).

    Returns
    -------
    ClusterSet
        ``p_fwe`` is the smallest voxel TFCE p(FWE) of each cluster; ``p_unc``, ``p_fdr`` NaN.
    """
    significant = (result.tfce_p_fwe < alpha) & (result.t > 0)
    t_map = unmask(np.where(significant, result.t, np.nan), mask)
    labels, sizes = rft.label_clusters(t_map, mask, 0.0)
    p_map = unmask(result.tfce_p_fwe, mask, fill=1.0, dtype=np.float64)
    ids = np.arange(1, len(sizes) + 1)
    p_fwe = np.asarray(ndimage.minimum(p_map, labels, ids), dtype=float).reshape(-1)
    unknown = np.full(len(sizes), np.nan)
    return ClusterSet("tfce", labels, p_fwe, unknown, unknown)


class PeakLabeller:
    """Name the Harvard-Oxford structure at MNI coordinates.

    The subcortical atlas (HOSPA) is asked first; where it says only cerebral cortex or white matter
    (or nothing), the cortical atlas (HOCPA, whose names carry no side) is asked and the side is
    taken from the sign of x. An atlas TemplateFlow does not hold on disk is skipped with one
    warning; with neither, every label is ``"unlabelled (atlas unavailable)"``.

    Parameters
    ----------
    space : str
        TemplateFlow template of the data.
    resolution : int or None
        Preferred atlas resolution (any works: lookups use world coordinates).
    """

    def __init__(self, space: str, resolution: int | None = 2) -> None:
        self.atlases = {}
        for atlas in ("HOSPA", "HOCPA"):
            loaded = _load_atlas(space, resolution, atlas)
            if loaded is not None:
                self.atlases[atlas] = loaded

    def _lookup(self, atlas: str, xyz: np.ndarray) -> str | None:
        data, inverse, names = self.atlases[atlas]
        ijk = np.rint(nb.affines.apply_affine(inverse, xyz)).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= data.shape):
            return None
        value = int(data[tuple(ijk)])
        return names.get(value, f"label {value}") if value else None

    def __call__(self, xyz) -> str:
        """Return the label at world coordinates ``xyz`` (mm)."""
        if not self.atlases:
            return ATLAS_UNAVAILABLE
        xyz = np.asarray(xyz, dtype=float)
        sub = self._lookup("HOSPA", xyz) if "HOSPA" in self.atlases else None
        if sub is not None and not any(g in sub for g in _GENERIC):
            return sub
        cortical = self._lookup("HOCPA", xyz) if "HOCPA" in self.atlases else None
        if cortical is not None:
            side = "Left " if xyz[0] < 0 else "Right " if xyz[0] > 0 else ""
            return side + cortical
        return sub or UNLABELLED


def _load_atlas(space: str, resolution: int | None, atlas: str):
    """Return ``(labels, inverse affine, {value: name})`` of a TemplateFlow atlas, or None."""
    from bids_ketamine_fc import templates

    query = {"atlas": atlas, "suffix": "dseg"}
    try:
        img = nb.load(templates.get_template_file(space, resolution, desc="th25", **query))
        names = None
        for template in dict.fromkeys((space, _NAMES_FALLBACK)):
            try:
                tsv = templates.get_template_file(template, None, extension=".tsv", **query)
            except UserInputError:
                continue
            names = read_label_names(tsv)
            break
        if names is None:
            raise UserInputError(f"no TSV of {atlas} label names in TemplateFlow")
    except (UserInputError, OSError, ImportError) as err:
        LOGGER.warning("Peak labels without atlas-%s (%s).", atlas, err)
        return None
    data = np.asanyarray(img.dataobj).astype(np.int32)
    return data, np.linalg.inv(img.affine), names


def read_label_names(path) -> dict[int, str]:
    """Read a TemplateFlow dseg TSV (``index``/``name`` columns, else the first two)."""
    table = pd.read_csv(path, sep="\t")
    index = "index" if "index" in table.columns else table.columns[0]
    name = "name" if "name" in table.columns else table.columns[1]
    return {int(i): str(n) for i, n in zip(table[index], table[name], strict=True)}


def cluster_table(
    clusters: ClusterSet,
    stat: np.ndarray,
    affine: np.ndarray,
    labeller: PeakLabeller,
    **keys: str,
) -> pd.DataFrame:
    """Rows of ``clusters.tsv`` for one cluster set.

    Parameters
    ----------
    clusters : ClusterSet
    stat : numpy.ndarray
        3-D t map (the peak statistic).
    affine : numpy.ndarray
        Voxel-to-MNI affine of ``stat``.
    labeller : PeakLabeller
    **keys : str
        ``seed``, ``model`` and ``contrast``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, one row per cluster.
    """
    peaks, ijk = rft.cluster_peaks(stat, clusters.labels)
    xyz = nb.affines.apply_affine(affine, ijk) if len(ijk) else np.zeros((0, 3))
    sizes = clusters.sizes
    voxel_mm3 = float(np.prod(rft.voxel_sizes(affine)))
    table = pd.DataFrame(
        {
            **{key: keys[key] for key in ("seed", "model", "contrast")},
            "inference": clusters.inference,
            "cluster": np.arange(1, len(sizes) + 1),
            "size_vox": sizes,
            "size_mm3": sizes * voxel_mm3,
            "peak_x": xyz[:, 0],
            "peak_y": xyz[:, 1],
            "peak_z": xyz[:, 2],
            "peak_stat": peaks,
            "peak_label": [labeller(point) for point in xyz],
            "p_fwe": clusters.p_fwe,
            "p_fdr": clusters.p_fdr,
            "p_unc": clusters.p_unc,
        },
        columns=list(COLUMNS),
    )
    return table
