"""Seeds placed once per grid, kept in the work folder for every run on that grid.

Placing atlas seeds means reading and resampling label images. The command line's preflight places
the seeds once per space and grid (:func:`~.seeds.place_seeds`) and saves them with
:func:`save_placed`; each run reads them back with :func:`load_placed`. The file name holds a digest
of the content, so another seed set or grid gives another file (and nipype reruns the runs using it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bids_ketamine_fc.participant.seeds import PlacedSeed, Seed
from bids_ketamine_fc.utils.io import atomic_write


def save_placed(placed: list[PlacedSeed], space: str, affine, directory: Path) -> Path:
    """Save seeds placed on a grid; return the file (named by a digest of its content).

    Parameters
    ----------
    placed : list of PlacedSeed
        From :func:`~bids_ketamine_fc.participant.seeds.place_seeds`, all on one grid.
    space : str
        Template space of the grid.
    affine : ndarray (4, 4)
        Voxel-to-world affine of the grid.
    directory : Path
        Where the file goes (created if needed).

    Returns
    -------
    Path
    """
    arrays = {
        "names": np.array([item.seed.name for item in placed]),
        "totals": np.array([item.total for item in placed], dtype=np.int64),
        "extras": np.array(json.dumps([item.extra for item in placed], sort_keys=True)),
        "space": np.array(space),
        "affine": np.asarray(affine, dtype=np.float64),
        "shape": np.array(placed[0].voxels.shape if placed else (0, 0, 0), dtype=np.int64),
    }
    for number, item in enumerate(placed):
        arrays[f"voxels{number}"] = np.flatnonzero(item.voxels.ravel(order="F")).astype(np.int64)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + arrays[key].tobytes())
    path = Path(directory) / f"seeds_space-{space}_{digest.hexdigest()[:16]}.npz"
    if not path.exists():
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    return path


def load_placed(path: Path, seeds: list[Seed], space: str, affine, shape) -> list[PlacedSeed]:
    """Read seeds saved by :func:`save_placed` for the grid ``affine``, ``shape``.

    Raises
    ------
    ValueError
        When the file holds other seeds, another space or another grid.
    """
    with np.load(path) as npz:
        names = [str(name) for name in npz["names"]]
        if names != [seed.name for seed in seeds] or str(npz["space"]) != space:
            raise ValueError(f"{path} holds other seeds or another space")
        if tuple(npz["shape"]) != tuple(shape[:3]) or not np.allclose(npz["affine"], affine):
            raise ValueError(f"{path} holds seeds placed on another grid")
        extras = json.loads(str(npz["extras"]))
        placed = []
        for number, seed in enumerate(seeds):
            voxels = np.zeros(int(np.prod(shape[:3])), dtype=bool)
            voxels[npz[f"voxels{number}"]] = True
            voxels = voxels.reshape(tuple(shape[:3]), order="F")
            placed.append(PlacedSeed(seed, voxels, int(npz["totals"][number]), extras[number]))
    return placed
