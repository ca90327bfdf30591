"""Voxel time series of one generated resting-state run (see the package docstring for the model).

All arrays are ``(n_voxels, n_volumes)`` float32 over the head voxels of a :class:`Phantom`, so a
run never needs the full 4-D array in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_ketamine_fc.demo.anatomy import (
    BRAIN_CENTRE,
    REGIONS,
    Grid,
    head_mask,
    tissue_fractions,
)

#: EPI baseline intensity of each compartment (CSF is brightest on T2*-weighted EPI).
INTENSITY = {"GM": 900.0, "WM": 700.0, "CSF": 1300.0, "scalp": 200.0}
NEURAL_PCT = 1.5  # peak BOLD fluctuation of a network node, % of baseline
PHYSIO_PCT = {"GM": 1.3, "WM": 0.9, "CSF": 2.5, "scalp": 0.4}  # shared physiological noise, %
PULSATILE_PCT = 3.0  # white pulsatile noise of CSF voxels, %
THERMAL_SD = 9.0  # thermal noise SD, intensity units (~1 % of grey matter)
MOTION_RESIDUAL = 0.25  # fraction of the motion-induced intensity change left after realignment
SPIN_HISTORY = 0.6  # intensity change per unit of frame-to-frame displacement (same maps)
SPIKE_GLOBAL_PCT = 1.5  # global signal drop per mm of framewise displacement above 0.3 mm
NON_STEADY = (1.6, 1.2)  # T1 saturation: first volumes are brighter by these factors
WITHIN_NETWORK = 0.4  # correlation of two nodes of the same network
DMN_BASELINE = 0.35  # correlation of DMN nodes other than the planted mPFC-precuneus pair
BAND = (0.01, 0.08)  # neural fluctuations, Hz


@dataclass(frozen=True)
class Phantom:
    """The generated anatomy sampled on a BOLD grid, restricted to head voxels.

    Attributes
    ----------
    grid : Grid
        The BOLD grid.
    head : numpy.ndarray
        Flat (C order) indices of the head voxels.
    xyz : numpy.ndarray
        Their world coordinates (N, 3).
    fractions : dict
        Grey matter, white matter and CSF fractions of the head voxels.
    brain : numpy.ndarray
        Fraction of brain tissue (grey and white matter, CSF) of each head voxel.
    baseline : numpy.ndarray
        EPI baseline intensity.
    motion_maps : numpy.ndarray
        (N, 6) intensity change per mm of translation (x, y, z) and per radian of rotation.
    node_maps : numpy.ndarray
        (N, n_regions) spatial weight of each network node of :data:`REGIONS`.
    """

    grid: Grid
    head: np.ndarray
    xyz: np.ndarray
    fractions: dict
    brain: np.ndarray
    baseline: np.ndarray
    motion_maps: np.ndarray
    node_maps: np.ndarray


def build_phantom(grid: Grid) -> Phantom:
    """Sample the anatomy, EPI baseline, motion and network maps on ``grid``.

    Parameters
    ----------
    grid : Grid
        The BOLD grid.

    Returns
    -------
    Phantom
    """
    full = tissue_fractions(grid)
    head = np.flatnonzero(head_mask(grid.world()))
    xyz = grid.world()[head]
    fractions = {k: v.ravel()[head] for k, v in full.items()}
    brain = sum(fractions.values())
    baseline = sum(INTENSITY[k] * fractions[k] for k in fractions) + INTENSITY["scalp"] * (
        1 - brain
    )
    volume = np.zeros(int(np.prod(grid.shape)), dtype=np.float64)
    volume[head] = baseline
    grads = np.stack(np.gradient(volume.reshape(grid.shape)), -1).reshape(-1, 3)[head]
    # d(intensity)/d(world mm): chain rule through the (possibly flipped) voxel axes
    grad_world = grads @ np.linalg.inv(grid.affine[:3, :3])
    lever = xyz - BRAIN_CENTRE
    motion_maps = -np.column_stack([grad_world, np.cross(lever, grad_world)])
    node_maps = np.column_stack([_node_map(xyz, r.centres, r.network) for r in REGIONS])
    node_maps *= fractions["GM"][:, None]
    return Phantom(
        grid=grid,
        head=head,
        xyz=xyz,
        fractions={k: v.astype(np.float32) for k, v in fractions.items()},
        brain=brain.astype(np.float32),
        baseline=baseline.astype(np.float32),
        motion_maps=motion_maps.astype(np.float32),
        node_maps=node_maps.astype(np.float32),
    )


def _node_map(xyz: np.ndarray, centres, network: str) -> np.ndarray:
    sigma = 4.0 if network == "Subcortical" else 7.0
    d2 = np.min([((xyz - np.asarray(c)) ** 2).sum(axis=1) for c in centres], axis=0)
    return np.exp(-d2 / (2 * sigma**2))


def spectral_noise(
    rng: np.random.Generator, n: int, tr: float, band: tuple[float, float], size: int, pink=False
) -> np.ndarray:
    """Return ``size`` zero-mean, unit-variance time series (n, size) limited to ``band`` (Hz).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n : int
        Number of volumes.
    tr : float
        Repetition time (s).
    band : tuple of float
        Lowest and highest frequency kept.
    size : int
        Number of series.
    pink : bool
        Weight the amplitude spectrum by 1/sqrt(f) (physiological noise) instead of flat.

    Returns
    -------
    numpy.ndarray
    """
    freqs = np.fft.rfftfreq(n, tr)
    gain = ((freqs >= band[0]) & (freqs <= band[1])).astype(float)
    if pink:
        gain /= np.sqrt(np.maximum(freqs, band[0]) / band[0])
    if np.count_nonzero(gain) < 2:
        raise ValueError(f"{n} volumes at TR {tr} s hold fewer than 2 frequencies in {band} Hz")
    spectrum = rng.standard_normal((len(freqs), size)) + 1j * rng.standard_normal(
        (len(freqs), size)
    )
    series = np.fft.irfft(spectrum * gain[:, None], n, axis=0)
    series -= series.mean(axis=0)
    return series / series.std(axis=0)


def node_timeseries(rng: np.random.Generator, n: int, tr: float, coupling: float) -> np.ndarray:
    """Return the neural time series (n_regions, n) of every node of :data:`REGIONS`.

    Nodes of a network share a network signal (correlation :data:`WITHIN_NETWORK`). The DMN
    ``PFC`` (mPFC) and ``PCC`` (precuneus/PCC) nodes are built from orthonormal signals so that
    their sample correlation is exactly ``coupling``, while each correlates
    :data:`DMN_BASELINE` with the other DMN nodes.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n : int
        Number of volumes.
    tr : float
        Repetition time (s).
    coupling : float
        Planted mPFC-precuneus correlation, in ``[2 * DMN_BASELINE - 1, 1]``.

    Returns
    -------
    numpy.ndarray
    """
    g = DMN_BASELINE
    # network, shared pair signal S, and the two private signals, made exactly orthonormal
    basis, _ = np.linalg.qr(spectral_noise(rng, n, tr, BAND, 4))
    dmn, shared, own_pfc, own_pcc = (basis * np.sqrt(n)).T
    h = coupling - g
    private = np.sqrt(1.0 - g - abs(h))
    networks = {r.network for r in REGIONS}
    common = dict(
        zip(sorted(networks), spectral_noise(rng, n, tr, BAND, len(networks)).T, strict=True)
    )
    series = []
    for region in REGIONS:
        if region.network == "Default" and region.name in ("PFC", "PCC"):
            sign = 1.0 if region.name == "PFC" else np.sign(h)
            own = own_pfc if region.name == "PFC" else own_pcc
            series.append(np.sqrt(g) * dmn + sign * np.sqrt(abs(h)) * shared + private * own)
            continue
        own = spectral_noise(rng, n, tr, BAND, 1)[:, 0]
        net = dmn if region.network == "Default" else common[region.network]
        w = g if region.network == "Default" else WITHIN_NETWORK
        series.append(np.sqrt(w) * net + np.sqrt(1.0 - w) * own)
    return np.asarray(series)


def head_motion(rng: np.random.Generator, n: int, tr: float, n_dummy: int) -> np.ndarray:
    """Return realignment parameters (n, 6): translations (mm) then rotations (rad), fMRIPrep order.

    A random walk (slow drift), a linear settling of the head, breathing-related apparent motion
    (aliased to 0.05-0.2 Hz), frame-to-frame jitter, and a few sudden movements ("spikes") that the
    head partly returns from. The subject's overall motion is scaled by a log-normal factor.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n : int
        Number of volumes.
    tr : float
        Repetition time (s).
    n_dummy : int
        Non-steady-state volumes at the start (no spikes there).

    Returns
    -------
    numpy.ndarray
    """
    scale = rng.lognormal(0.0, 0.4)
    step = np.array([0.02, 0.02, 0.02, 3e-4, 3e-4, 3e-4]) * scale
    params = np.cumsum(rng.standard_normal((n, 6)) * step, axis=0)
    params += rng.standard_normal((n, 6)) * step / 2
    params[:, 2] += np.linspace(0.0, rng.uniform(0.0, 0.3) * scale, n)
    t = np.arange(n) * tr
    breathing = np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * np.pi))
    params[:, 1:3] += 0.03 * scale * breathing[:, None]
    candidates = np.arange(n_dummy + 3, n - 2)
    n_spikes = min(len(candidates), 1 + rng.poisson(1.5))
    for onset in rng.choice(candidates, size=n_spikes, replace=False):
        jump = rng.standard_normal(6) * np.array([0.5, 0.5, 0.5, 0.008, 0.008, 0.008])
        settle = np.ones(n - onset)
        settle[1:] = 0.3 + 0.7 * np.exp(-np.arange(1, n - onset) / 1.5)
        params[onset:] += settle[:, None] * jump
    return params - params[n_dummy:].mean(axis=0)


def framewise_displacement(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power's framewise displacement (mm): sum of absolute frame-to-frame parameter changes.

    Rotations (radians) become arc lengths on a sphere of ``radius`` mm. The first value is NaN.

    Parameters
    ----------
    params : numpy.ndarray
        (n, 6) translations (mm) then rotations (rad).
    radius : float
        Head radius (mm).

    Returns
    -------
    numpy.ndarray
    """
    delta = np.abs(np.diff(params, axis=0))
    fd = delta[:, :3].sum(axis=1) + radius * delta[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def _physio_loadings(rng: np.random.Generator, phantom: Phantom, n_sources: int) -> np.ndarray:
    frac = phantom.fractions
    scalp = 1.0 - frac["GM"] - frac["WM"] - frac["CSF"]
    gain = sum(PHYSIO_PCT[k] * frac[k] for k in frac) + PHYSIO_PCT["scalp"] * scalp
    unit = (phantom.xyz - BRAIN_CENTRE) / 80.0
    directions = rng.standard_normal((3, n_sources))
    field = 1.0 + 0.6 * unit @ (directions / np.linalg.norm(directions, axis=0))
    weights = np.array([1.0, 0.7, 0.5][:n_sources])
    return (gain[:, None] * field * weights).astype(np.float32)


def simulate_run(
    phantom: Phantom,
    rng: np.random.Generator,
    n_volumes: int,
    tr: float,
    coupling: float,
    n_dummy: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one preprocessed BOLD run over the head voxels of ``phantom``.

    Parameters
    ----------
    phantom : Phantom
        Anatomy on the BOLD grid.
    rng : numpy.random.Generator
        Random generator of this subject.
    n_volumes : int
        Number of volumes.
    tr : float
        Repetition time (s).
    coupling : float
        Planted mPFC-precuneus correlation of the neural signals.
    n_dummy : int
        Non-steady-state volumes at the start (made brighter).

    Returns
    -------
    data : numpy.ndarray
        (n_head_voxels, n_volumes) float32 intensities.
    params : numpy.ndarray
        (n_volumes, 6) realignment parameters.
    """
    n = n_volumes
    amplitude = NEURAL_PCT * rng.uniform(0.8, 1.2, len(REGIONS)).astype(np.float32)
    nodes = node_timeseries(rng, n, tr, coupling).astype(np.float32)
    percent = phantom.node_maps @ (amplitude[:, None] * nodes)
    physio = spectral_noise(rng, n, tr, (0.004, min(0.15, 0.5 / tr)), 3, pink=True).T.astype(
        np.float32
    )
    percent += _physio_loadings(rng, phantom, 3) @ physio
    t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    trend = rng.normal(0.0, 0.6) * t + rng.normal(0.0, 0.3) * (t**2 - np.mean(t**2))
    slope = 1.0 + 0.3 * (phantom.xyz[:, 2:3] - BRAIN_CENTRE[2]) / 60.0
    percent += slope.astype(np.float32) * trend
    gm_scale = rng.uniform(0.85, 1.15)  # scanner gain of this session
    baseline = phantom.baseline * np.float32(gm_scale)
    data = baseline[:, None] * (1.0 + 0.01 * percent)
    params = head_motion(rng, n, tr, n_dummy)
    delta = np.vstack([np.zeros((1, 6)), np.diff(params, axis=0)])
    motion = MOTION_RESIDUAL * params + SPIN_HISTORY * delta
    data += gm_scale * (phantom.motion_maps @ motion.T.astype(np.float32))
    fd = np.nan_to_num(framewise_displacement(params))
    jolt = np.clip(fd - 0.3, 0.0, None).astype(np.float32) * (SPIKE_GLOBAL_PCT / 100.0)
    data -= np.outer(baseline * (phantom.brain >= 0.5), jolt)
    data += rng.standard_normal(data.shape, dtype=np.float32) * np.float32(THERMAL_SD)
    pulsatile = phantom.fractions["CSF"] * baseline * (PULSATILE_PCT / 100.0)
    data += pulsatile[:, None] * rng.standard_normal(data.shape, dtype=np.float32)
    for k, factor in enumerate(NON_STEADY[:n_dummy]):
        data[:, k] *= np.float32(factor)
    return data, params
