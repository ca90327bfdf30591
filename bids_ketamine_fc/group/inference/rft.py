"""Random-field-theory peak and cluster inference for T maps, computed as SPM12 does.

No maintained Python library implements SPM's random-field inference (nilearn offers only
Bonferroni/FDR/permutation; nipy's RFT code is unmaintained and differs from SPM), so the SPM12
(r7771) routines are re-implemented here from their published formulas and SPM's source:

- ``spm_est_smoothness``: global FWHM from the spatial derivatives of standardised residuals
  (Kiebel et al., 1999; Hayasaka et al., 2004), under stationarity;
- ``spm_resels_vol``: resel counts R0..R3 of the search volume (Worsley et al., 1996);
- ``spm_ECdensity`` ('T'), ``spm_P_RF``, ``spm_P``: expected Euler characteristic, peak and
  cluster p-values (Friston et al., 1994; Worsley et al., 1996);
- ``spm_P_clusterFDR`` / ``spm_P_FDR``: topological cluster FDR (Chumbley & Friston, 2009);
- ``spm_bwlabel(..., 18)``: 18-connected clusters.

Voxel sizes come from the affine's column norms, so any orientation (RAS, LAS, oblique) works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special, stats

#: MATLAB's ``eps``, used by SPM as a floor for EC densities and expected counts.
EPS = float(np.finfo(float).eps)
_FOUR_LN2 = 4.0 * np.log(2.0)
#: Voxels per chunk when summing derivatives (bounds memory to ~3 * n_images * chunk doubles).
_CHUNK = 65536


@dataclass(frozen=True, eq=False)
class Smoothness:
    """Global smoothness and resel counts of a search volume.

    Attributes
    ----------
    fwhm_vox : numpy.ndarray
        ``(3,)`` FWHM along the three array axes, in voxels (SPM's ``xVol.FWHM``).
    fwhm_mm : numpy.ndarray
        ``(3,)`` FWHM in mm (``fwhm_vox`` times the voxel sizes).
    resels : numpy.ndarray
        ``(4,)`` resel counts R0..R3 of the mask (SPM's ``xVol.R``).
    n_voxels : int
        Number of voxels in the search volume (SPM's ``xVol.S``), used for Bonferroni.
    dof : float
        Error degrees of freedom of the T field.
    """

    fwhm_vox: np.ndarray
    fwhm_mm: np.ndarray
    resels: np.ndarray
    n_voxels: int
    dof: float

    def __post_init__(self) -> None:
        """Store read-only float copies of the arrays."""
        for name in ("fwhm_vox", "fwhm_mm", "resels"):
            value = np.array(getattr(self, name), dtype=float)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def volume_resels(self) -> float:
        """Search volume in resels (R3, the number SPM prints as "resels")."""
        return float(self.resels[3])

    @property
    def resel_size_vox(self) -> float:
        """Voxels per resel, ``prod(fwhm_vox)`` (cluster sizes in resels are ``k / this``)."""
        return float(np.prod(self.fwhm_vox))

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dictionary of the estimates."""
        arrays = {name: getattr(self, name).tolist() for name in ("fwhm_vox", "fwhm_mm", "resels")}
        scalars = {"n_voxels": int(self.n_voxels), "dof": float(self.dof)}
        derived = {"volume_resels": self.volume_resels, "resel_size_vox": self.resel_size_vox}
        return arrays | scalars | derived


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Return the voxel sizes (mm) of a ``(4, 4)`` affine: its column norms, for any orientation."""
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or min(mask.shape) < 2:
        raise ValueError(f"mask must be a 3D volume with every axis > 1; got shape {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: random-field inference needs at least one voxel")
    return mask


def resel_counts(mask: np.ndarray, fwhm_vox: np.ndarray) -> np.ndarray:
    """Return the resel counts R0..R3 of a 3D boolean mask for ``fwhm_vox`` (spm_resels_vol).

    Points, edges, faces and cubes of the voxel lattice inside the mask are counted and scaled by
    the FWHM (Worsley et al., 1996): Euler characteristic, diameter, half surface and volume.
    """
    m = np.pad(_check_mask(mask), ((1, 0), (1, 0), (1, 0)))
    c = m[1:, 1:, 1:]
    x, y, z = m[:-1, 1:, 1:], m[1:, :-1, 1:], m[1:, 1:, :-1]
    xy, xz, yz = m[:-1, :-1, 1:], m[:-1, 1:, :-1], m[1:, :-1, :-1]
    ex, ey, ez = c & x, c & y, c & z
    fxy, fxz, fyz = ex & y & xy, ex & z & xz, ey & z & yz
    n_p, n_c = int(c.sum()), int((fxy & fxz & fyz & m[:-1, :-1, :-1]).sum())
    e = np.array([ex.sum(), ey.sum(), ez.sum()], dtype=float)
    f = np.array([fxy.sum(), fxz.sum(), fyz.sum()], dtype=float)
    r = 1.0 / np.asarray(fwhm_vox, dtype=float)
    pairs = np.array([r[0] * r[1], r[0] * r[2], r[1] * r[2]])  # the planes of f (xy, xz, yz)
    lines = e - np.array([f[0] + f[1], f[0] + f[2], f[1] + f[2]]) + n_c
    return np.array([n_p - e.sum() + f.sum() - n_c, lines @ r, (f - n_c) @ pairs, n_c * r.prod()])


def _neighbours(mask: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return, per in-mask voxel, the column of its +1 neighbour on each axis, and validity.

    SPM samples derivatives by trilinear interpolation at each voxel: the derivative is the
    forward difference (0 on the last slice of an axis) and the voxel is discarded when any corner
    of its upper 2x2x2 cube lies outside the mask (NaN residual).
    """
    position = np.full(mask.size, -1, dtype=np.int64)
    position[index] = np.arange(index.size)
    coords = np.unravel_index(index, mask.shape, order="F")
    strides = (1, mask.shape[0], mask.shape[0] * mask.shape[1])
    own = np.arange(index.size)
    columns = np.empty((3, index.size), dtype=np.int64)
    for axis in range(3):
        last = coords[axis] == mask.shape[axis] - 1
        columns[axis] = np.where(last, own, position[index + ~last * strides[axis]])
    cube = mask.copy()
    for axis in range(3):
        upper = np.concatenate([np.delete(cube, 0, axis), np.take(cube, [-1], axis)], axis)
        cube &= upper
    valid = cube.ravel(order="F")[index]
    columns[:, ~valid] = own[~valid]
    return columns, valid


def _roughness(std_resid: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return summed derivative products ``(6, n_vox)`` (xx, xy, xz, yy, yz, zz) and ssq."""
    n_vox = std_resid.shape[1]
    lam = np.empty((6, n_vox))
    ssq = np.empty(n_vox)
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    for start in range(0, n_vox, _CHUNK):
        cols = slice(start, min(start + _CHUNK, n_vox))
        # float64 accumulation: SPM sums in double precision
        here = std_resid[:, cols].astype(np.float64)
        grads = [std_resid[:, columns[a, cols]].astype(np.float64) - here for a in range(3)]
        for row, (a, b) in enumerate(pairs):
            lam[row, cols] = np.einsum("ij,ij->j", grads[a], grads[b])
        ssq[cols] = np.einsum("ij,ij->j", here, here)
    return lam, ssq


def estimate_smoothness(
    std_resid: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    dof: float,
    n_scans: int | None = None,
) -> Smoothness:
    """Estimate the global FWHM and resel counts from standardised residuals (spm_est_smoothness).

    Parameters
    ----------
    std_resid : numpy.ndarray
        ``(n_images, n_mask_voxels)`` residuals divided by ``sqrt(RSS / dof)``; column ``k`` is
        voxel ``np.flatnonzero(mask.ravel(order="F"))[k]``.
    mask : numpy.ndarray
        3D boolean analysis mask (voxels with constant data should be excluded, as in spm_spm).
    voxel_size : numpy.ndarray
        ``(3,)`` voxel sizes in mm (see :func:`voxel_sizes`).
    dof : float
        Error degrees of freedom of the model.
    n_scans : int, optional
        Number of scans of the model when only a subset of residual images is given
        (default: ``n_images``). SPM scales the roughness by ``n_scans / dof``.

    Returns
    -------
    Smoothness
        FWHM (voxels and mm), resel counts, voxel count and dof.
    """
    mask = _check_mask(mask)
    index = np.flatnonzero(mask.ravel(order="F"))
    std_resid = np.asarray(std_resid)
    if std_resid.ndim != 2 or std_resid.shape[1] != index.size:
        raise ValueError(f"std_resid must be (n_images, {index.size}); got {std_resid.shape}")
    if not np.isfinite(std_resid).all():
        raise ValueError("std_resid contains NaN or infinite values inside the mask")
    if dof <= 0:
        raise ValueError(f"dof must be positive; got {dof}")
    columns, valid = _neighbours(mask, index)
    lam, ssq = _roughness(std_resid, columns)
    lam *= (std_resid.shape[0] if n_scans is None else n_scans) / dof / std_resid.shape[0]
    xx, xy, xz, yy, yz, zz = lam
    det = xx * yy * zz + 2 * xy * yz * xz - xx * yz**2 - xy**2 * zz - xz**2 * yy
    keep = valid & (ssq >= np.sqrt(EPS))
    if not keep.any():
        raise ValueError("no voxel has a complete 2x2x2 neighbourhood in the mask")
    resel_img = np.sqrt(np.clip(det, 0, None) / _FOUR_LN2**3)[keep].mean()
    resel_xyz = np.sqrt(np.stack([xx, yy, zz])[:, keep] / _FOUR_LN2).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        resel = resel_img ** (1 / 3) * resel_xyz / np.prod(resel_xyz) ** (1 / 3)
        fwhm = 1.0 / resel
    fwhm[~np.isfinite(fwhm) | (fwhm == 0)] = 1.0
    fwhm_mm = fwhm * np.abs(np.asarray(voxel_size, dtype=float))
    return Smoothness(fwhm, fwhm_mm, resel_counts(mask, fwhm), int(index.size), float(dof))


def height_threshold(p_unc: float, dof: float) -> float:
    """Return the height threshold: the T value (``dof``) with upper tail ``p_unc`` (spm_u)."""
    if not 0 < p_unc < 1:
        raise ValueError(f"p_unc must lie in (0, 1); got {p_unc}")
    return float(stats.t.isf(p_unc, dof))


def t_ec_densities(t: np.ndarray | float, dof: float) -> np.ndarray:
    """Return the EC densities rho_0..rho_3 of a T field, shape ``(4,) + shape(t)``.

    Per resel, as spm_ECdensity('T') and Worsley et al. (1996, Hum Brain Mapp 4:58, Table 2).
    """
    t = np.asarray(t, dtype=float)
    v = float(dof)
    c = (1 + t**2 / v) ** ((1 - v) / 2)
    b = np.exp(special.gammaln((v + 1) / 2) - special.gammaln(v / 2))
    return np.stack(
        [
            stats.t.sf(t, v),
            _FOUR_LN2**0.5 / (2 * np.pi) * c,
            _FOUR_LN2 / (2 * np.pi) ** 1.5 * c * t / (v / 2) ** 0.5 * b,
            _FOUR_LN2**1.5 / (2 * np.pi) ** 2 * c * ((v - 1) * t**2 / v - 1),
        ]
    )


def _rho(u: np.ndarray | float, smooth: Smoothness) -> tuple[np.ndarray, np.ndarray]:
    """Return EC densities floored at eps and resels up to the last non-zero one (spm_P_RF)."""
    if not np.any(smooth.resels):
        raise ValueError("all resel counts are zero: the search volume is empty")
    n_dim = int(np.flatnonzero(smooth.resels)[-1]) + 1
    return np.maximum(t_ec_densities(u, smooth.dof)[:n_dim], EPS), smooth.resels[:n_dim]


def _cluster_p(k_vox: np.ndarray, u: float, smooth: Smoothness) -> tuple[np.ndarray, ...]:
    """Return p(FWE), p(unc), k in resels, Ec and Ek for clusters of ``k_vox`` voxels (spm_P_RF).

    ``Ec = sum(R * rho)`` is the expected number of clusters, ``Ek = rho_0 / rho_D`` the expected
    resels per cluster, p(unc) ``= exp(-beta k^(2/D))`` and p(FWE) ``= 1 - exp(-(Ec + eps) p)``.
    """
    rho, resels = _rho(u, smooth)
    ec, ek, dim = float(resels @ rho), float(rho[0] / rho[-1]), resels.size - 1
    k_resels = np.asarray(k_vox, dtype=float).ravel() / smooth.resel_size_vox
    p_unc = np.ones_like(k_resels)
    if dim > 0:
        beta = (special.gamma(dim / 2 + 1) / ek) ** (2 / dim)
        p_unc = np.where(k_resels > 0, np.exp(-beta * k_resels ** (2 / dim)), 1.0)
    # 1 - Poisson P(0 clusters), as 1 - spm_Pcdf(0, .)
    return special.gammainc(1.0, (ec + EPS) * p_unc), p_unc, k_resels, ec, ek


def cluster_fdr(p_unc: np.ndarray) -> np.ndarray:
    """Return topological FDR q-values of cluster p-values (spm_P_clusterFDR / spm_P_FDR).

    Benjamini-Hochberg over the uncorrected p-values of every cluster above the height threshold:
    ``q_i = min_{j >= r_i} p_(j) S / j``, ``r_i`` the first rank whose p-value is ``>= p_i``.
    """
    p_unc = np.asarray(p_unc, dtype=float)
    if p_unc.size == 0:
        return p_unc.copy()
    ordered = np.sort(p_unc)
    scaled = ordered * ordered.size / np.arange(1, ordered.size + 1)
    tail_min = np.minimum.accumulate(scaled[::-1])[::-1]
    first = np.searchsorted(ordered, p_unc, side="left")
    return tail_min[first]


def cluster_pvalues(sizes_vox: np.ndarray, u: float, smooth: Smoothness) -> dict:
    """Return cluster-level p-values for T clusters above height ``u`` (spm_P / spm_list).

    Parameters
    ----------
    sizes_vox : numpy.ndarray
        Sizes in voxels of ALL clusters of the excursion set (the FDR is computed over them, as
        SPM does before any extent threshold).
    u : float
        Height threshold (T value).
    smooth : Smoothness
        Output of :func:`estimate_smoothness`.

    Returns
    -------
    dict
        ``p_fwe``, ``p_unc``, ``p_fdr`` and ``k_resels`` arrays (input order), and the scalars
        ``expected_clusters`` and ``expected_voxels_per_cluster`` SPM prints under its table.
    """
    p_fwe, p_unc, k_resels, ec, ek = _cluster_p(sizes_vox, u, smooth)
    return {
        "p_fwe": p_fwe,
        "p_unc": p_unc,
        "p_fdr": cluster_fdr(p_unc),
        "k_resels": k_resels,
        "expected_clusters": ec,
        "expected_voxels_per_cluster": ek * smooth.resel_size_vox,
    }


def peak_pvalues(peaks: np.ndarray, smooth: Smoothness) -> dict:
    """Return peak-level p-values of T values (spm_P with and without resels).

    Parameters
    ----------
    peaks : numpy.ndarray
        Peak T values.
    smooth : Smoothness
        Output of :func:`estimate_smoothness`.

    Returns
    -------
    dict
        ``p_fwe``: min(random-field p, Bonferroni over ``n_voxels``); ``p_unc``: SPM's
        uncorrected p, ``1 - exp(-(p_t + eps))`` with ``p_t`` the T upper tail (floored at eps).
    """
    peaks = np.asarray(peaks, dtype=float).ravel()
    rho, resels = _rho(peaks, smooth)
    p_rft = special.gammainc(1.0, resels @ rho + EPS)
    p_bonf = np.minimum(smooth.n_voxels * stats.t.sf(peaks, smooth.dof), 1.0)
    return {"p_fwe": np.minimum(p_rft, p_bonf), "p_unc": special.gammainc(1.0, rho[0] + EPS)}


def cluster_fwe_extent(u: float, smooth: Smoothness, alpha: float = 0.05) -> int:
    """Return the smallest cluster size (voxels) with cluster p(FWE) <= ``alpha`` at height ``u``.

    Same criterion as spm_uc_clusterFDR (whose "FWEc" is the smallest *observed* cluster meeting
    it); ``smooth.n_voxels + 1`` means that no cluster in the search volume can reach ``alpha``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    p_fwe = _cluster_p(np.arange(1, smooth.n_voxels + 1), u, smooth)[0]  # decreasing in k
    hits = np.flatnonzero(p_fwe <= alpha)
    return int(hits[0]) + 1 if hits.size else smooth.n_voxels + 1


def label_clusters(
    stat: np.ndarray, mask: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Label 18-connected clusters of ``stat > threshold`` inside ``mask`` (spm_bwlabel 18).

    Parameters
    ----------
    stat : numpy.ndarray
        3D statistic map.
    mask : numpy.ndarray
        3D boolean search volume.
    threshold : float
        Height threshold; voxels strictly above it form clusters (as spm_getSPM).

    Returns
    -------
    labels : numpy.ndarray
        3D int32 labels, 0 outside clusters, 1..n ordered as SPM lists clusters: by decreasing
        peak value (ties by decreasing size).
    sizes : numpy.ndarray
        ``(n,)`` cluster sizes in voxels; ``sizes[i]`` belongs to label ``i + 1``.
    """
    stat = np.asarray(stat)
    mask = _check_mask(mask)
    if stat.shape != mask.shape:
        raise ValueError(f"stat shape {stat.shape} differs from mask shape {mask.shape}")
    supra = mask & np.isfinite(stat) & (stat > threshold)
    raw, n_clusters = ndimage.label(supra, structure=ndimage.generate_binary_structure(3, 2))
    if n_clusters == 0:
        return np.zeros(mask.shape, np.int32), np.zeros(0, np.int64)
    ids = np.arange(1, n_clusters + 1)
    sizes = np.bincount(raw.ravel(), minlength=n_clusters + 1)[1:]
    peaks = np.asarray(ndimage.maximum(stat, raw, ids), dtype=float)
    order = np.lexsort((ids, -sizes, -peaks))
    relabel = np.zeros(n_clusters + 1, np.int32)
    relabel[order + 1] = np.arange(1, n_clusters + 1, dtype=np.int32)
    return relabel[raw], sizes[order].astype(np.int64)


def cluster_peaks(stat: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the peak values ``(n,)`` and voxel indices ``(n, 3)`` of clusters 1..n.

    ``labels`` comes from :func:`label_clusters`; map ``ijk`` to mm with the image affine.
    """
    ids = np.arange(1, int(labels.max(initial=0)) + 1)
    if ids.size == 0:
        return np.zeros(0), np.zeros((0, 3), np.int64)
    values = np.asarray(ndimage.maximum(stat, labels, ids), dtype=float)
    ijk = np.array(ndimage.maximum_position(stat, labels, ids), dtype=np.int64).reshape(-1, 3)
    return values, ijk
