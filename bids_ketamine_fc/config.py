"""One frozen settings object, built from the command line and passed explicitly.

Nothing here is global or mutable: every workflow factory and group-level function receives the
:class:`Settings` instance it needs, and the instance is written next to the outputs
(``OUTPUT_DIR/logs/config-<level>.json``) so a run can be audited and repeated. The denoising node
of one run receives only :class:`RunOptions`, the part of the settings a run needs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEEDS = "study"
DEFAULT_STRATEGY = "conn"
#: The study's pre-specified leave-one-out hypothesis (``--prediction``): SEED:MODEL:CONTRAST.
DEFAULT_PREDICTION = "mPFC:groups:NRgtR"


@dataclass(frozen=True)
class Settings:
    """Every choice of a run, participant or group level.

    Parameters
    ----------
    bids_dir, output_dir : Path
        The raw BIDS dataset (or an fMRIPrep derivatives dataset) and the derivatives folder written.
    analysis_level : str
        ``"participant"`` or ``"group"``.
    fmriprep_dir : Path or None
        Where the fMRIPrep derivatives are read (None at the group level when there are none: it
        never reads them).
    work_dir : Path
        nipype's working directory (resumable).
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    fmriprep_dir: Path | None
    work_dir: Path
    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    task_id: str = "rest"
    space: str = "MNI152NLin2009cAsym"
    seeds: str = DEFAULT_SEEDS
    denoise_strategy: str = DEFAULT_STRATEGY
    smoothing_fwhm: float = 8.0
    fd_threshold: float | None = None
    dummy_scans: int | None = None
    min_seed_coverage: float = 0.5
    min_volumes: int = 30
    reduced_dims: int = 50
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    nipype_plugin: str | None = None  # from --use-plugin: wins over MultiProc/Linear
    plugin_args: dict = field(default_factory=dict)
    verbosity: int = 0
    # group level
    phenotype: Path | None = None
    pain_pre: str = "nrs_pre"
    pain_post: str = "nrs_post"
    pain_max: float = 10.0
    responder_threshold: float = 0.5
    covariates: tuple[str, ...] = ("age",)
    voxel_p: float = 0.001
    cluster_p: float = 0.05
    inference: tuple[str, ...] = ("rft", "permutation")
    n_permutations: int = 5000
    random_seed: int | None = None
    ica_components: int = 20
    dual_regression: str = "fsl"
    correlation_model: str = "groups"
    correlation_inference: str = "rft"
    roi: Path | None = None
    roi_seed: str | None = None
    prediction: tuple[str, ...] = (DEFAULT_PREDICTION,)
    prediction_permutations: int = 1000
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """Return the settings as JSON (paths as strings)."""

        def _plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return list(value)
            return value

        return json.dumps(
            {k: _plain(v) for k, v in dataclasses.asdict(self).items()}, indent=2, sort_keys=True
        )

    def write(self, path: Path) -> Path:
        """Write the settings as JSON to ``path`` atomically and return it."""
        from bids_ketamine_fc.utils.io import atomic_write_text

        return atomic_write_text(Path(path), self.to_json() + "\n")


@dataclass(frozen=True)
class RunOptions:
    """The settings one run's denoising needs (what the participant-level node receives).

    Plain values only, so that nipype can hash and pass them (:meth:`to_dict`, ``RunOptions(**d)``).

    Parameters
    ----------
    seeds : str
        Seed set: ``"study"`` or an absolute path to a seed file.
    denoise_strategy : str
        Preset name or absolute path to a strategy file.
    fd_threshold : float or None
        Overrides the strategy's scrubbing threshold (mm) when given.
    smoothing_fwhm : float
        Gaussian kernel (mm) applied to the voxel series.
    dummy_scans : int or None
        Volumes dropped at the start (None: as the strategy says).
    min_seed_coverage : float
        Smallest fraction of a seed inside the brain mask.
    min_volumes : int
        Fewest volumes left after scrubbing for a run to be kept.
    reduced_dims : int
        Temporal dimensions of the reduced data written for group ICA (0: none).
    """

    seeds: str = DEFAULT_SEEDS
    denoise_strategy: str = DEFAULT_STRATEGY
    fd_threshold: float | None = None
    smoothing_fwhm: float = 8.0
    dummy_scans: int | None = None
    min_seed_coverage: float = 0.5
    min_volumes: int = 30
    reduced_dims: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> RunOptions:
        """Take the run's fields from ``settings``."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        """Return the options as a plain dictionary."""
        return dataclasses.asdict(self)
