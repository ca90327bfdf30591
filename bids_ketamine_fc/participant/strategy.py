"""Denoising strategies: the presets in ``data/denoise/*.yml`` and users' own files.

A :class:`Strategy` says which fMRIPrep confounds to regress, how outlier volumes are found and
handled, the detrending and the band-pass. :func:`load_strategy` reads a preset by name or a user's
YAML/JSON file and validates every key, so a typo stops the run with one line naming it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bids_ketamine_fc.exceptions import UsageError, UserInputError

EXPANSIONS = ("none", "basic", "derivatives", "power2", "full")
DERIVATIVES = ("fmriprep", "conn")
COMPCOR_METHODS = ("fmriprep", "conn")
DETECTORS = ("art", "art-fd", "fd")
SCRUB_METHODS = ("regress", "censor")
FILTER_TYPES = ("fft", "butterworth")
FILTER_ORDERS = ("regbp", "simult")
SCALINGS = ("none", "psc")
WEIGHTINGS = ("none", "hrf")
# Keys of a strategy file and the type (or the choices) of each value; null is always allowed.
_SCHEMA: dict[str, Any] = {
    "name": str,
    "description": str,
    "confounds": {"motion": EXPANSIONS, "wm_csf": EXPANSIONS, "global_signal": EXPANSIONS,
                  "derivatives": DERIVATIVES, "effect_of_rest": bool,
                  "compcor": {"wm": int, "csf": int, "combined": int, "method": COMPCOR_METHODS},
                  "cosine": bool},
    "scrub": {"detector": DETECTORS, "fd_threshold": float, "gs_z_threshold": float,
              "method": SCRUB_METHODS},
    "detrend": int,
    "filter": {"type": FILTER_TYPES, "low": float, "high": float, "order": int},
    "filter_order": FILTER_ORDERS,
    "drop_non_steady_state": bool,
    "scaling": SCALINGS,
    "weighting": WEIGHTINGS,
}  # fmt: skip


@dataclass(frozen=True)
class CompCor:
    """aCompCor components: per mask (``wm``, ``csf``) or of the ``combined`` mask.

    ``method`` says where they come from: ``fmriprep`` (the confounds table's columns) or ``conn``
    (computed as CONN does from fMRIPrep's tissue probability maps, see
    :mod:`~bids_ketamine_fc.participant.compcor`).
    """

    wm: int = 0
    csf: int = 0
    combined: int = 0
    method: str = "fmriprep"

    @property
    def counts(self) -> tuple[int, int, int]:
        """Return the numbers of components ``(wm, csf, combined)``."""
        return (self.wm, self.csf, self.combined)


@dataclass(frozen=True)
class Scrub:
    """Outlier volumes: found by ``detector`` (art, fd), handled by ``method`` (regress, censor)."""

    detector: str = "art"
    fd_threshold: float | None = None
    gs_z_threshold: float | None = None
    method: str = "regress"


@dataclass(frozen=True)
class TemporalFilter:
    """Band-pass filter: ``type`` (fft, butterworth), edges ``low``/``high`` in Hz, ``order``."""

    type: str = "fft"
    low: float | None = None
    high: float | None = None
    order: int | None = None


@dataclass(frozen=True)
class Strategy:
    """A validated denoising strategy: the keys of the preset files, ``confounds`` flattened.

    ``motion``, ``wm_csf`` and ``global_signal`` are one of :data:`EXPANSIONS`; ``derivatives``
    says how their first derivatives are taken (``fmriprep``: the table's backward differences;
    ``conn``: CONN's central differences); ``effect_of_rest`` adds CONN's ``Effect of rest`` and
    its derivative; ``scrub`` and ``filter`` are None when off; ``filter_order`` is ``"regbp"``
    (regress, then filter) or ``"simult"`` (filter data and regressors, then regress); ``scaling``
    ``psc`` scales each run to percent signal change before runs are combined; ``weighting``
    ``hrf`` weights the first-level correlation by the ``Effect of rest`` (CONN); ``source`` says
    where the strategy came from (``preset:<name>`` or a file path) and is not part of
    :meth:`to_dict`.
    """

    name: str
    description: str = ""
    motion: str = "none"
    wm_csf: str = "none"
    global_signal: str = "none"
    derivatives: str = "fmriprep"
    effect_of_rest: bool = False
    compcor: CompCor = field(default_factory=CompCor)
    cosine: bool = False
    scrub: Scrub | None = None
    detrend: int = 1
    filter: TemporalFilter | None = None
    filter_order: str = "regbp"
    drop_non_steady_state: bool = True
    scaling: str = "none"
    weighting: str = "none"
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the strategy in the layout of the YAML files (loadable again as a file)."""
        flat = dataclasses.asdict(self)
        flat["confounds"] = {key: flat[key] for key in _SCHEMA["confounds"]}
        counts = {k: v for k, v in flat["compcor"].items() if v and k != "method"}
        flat["confounds"]["compcor"] = {**counts, "method": self.compcor.method} if counts else {}
        return {key: flat[key] for key in _SCHEMA}


def _preset_folder():
    return resources.files("bids_ketamine_fc").joinpath("data").joinpath("denoise")


def list_presets() -> list[str]:
    """Return the names of the packaged denoising presets, sorted."""
    return sorted(p.name[:-4] for p in _preset_folder().iterdir() if p.name.endswith(".yml"))


def load_strategy(name_or_path: str | Path, fd_threshold: float | None = None) -> Strategy:
    """Load a preset by name, or a user's YAML/JSON strategy file, and validate it.

    Parameters
    ----------
    name_or_path : str or Path
        A preset name (see :func:`list_presets`; case-insensitive) or a strategy file. A file's
        ``name`` defaults to its stem.
    fd_threshold : float, optional
        Replaces the strategy's ``scrub.fd_threshold`` (``--fd-threshold``); 0 or less turns the
        framewise-displacement criterion off.

    Returns
    -------
    Strategy

    Raises
    ------
    UserInputError
        Unknown preset or missing file, unparsable file, unknown key (valid ones are listed) or
        invalid value.
    """
    presets, text = list_presets(), str(name_or_path)
    if text.lower() in presets:
        res = _preset_folder().joinpath(f"{text.lower()}.yml")
        data = yaml.safe_load(res.read_text(encoding="utf-8"))
        origin, source = f"denoising preset '{text.lower()}'", f"preset:{text.lower()}"
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UsageError(
                f"--denoise-strategy '{text}' is neither a preset ({', '.join(presets)}) nor an "
                "existing YAML/JSON file; give a preset name or the path of a strategy file"
            )
        data, origin, source = _read_mapping(path), f"denoising strategy file {path}", str(path)
        data.setdefault("name", path.name.split(".")[0])
    strategy = _parse_strategy(data, origin, source)
    return strategy if fd_threshold is None else _override_fd(strategy, fd_threshold, origin)


def _read_mapping(path: Path) -> dict:
    """Read a YAML or JSON file holding one mapping."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        detail = " ".join(str(err).split())
        raise UserInputError(f"denoising strategy file {path} cannot be parsed: {detail}") from err
    if not isinstance(data, dict):
        raise UserInputError(
            f"denoising strategy file {path} must hold a mapping with keys {', '.join(_SCHEMA)}; "
            "copy a preset such as conn.yml and edit it"
        )
    return data


def _validate(data: Any, schema: dict, origin: str, where: str = "") -> dict:
    """Check the keys and value types of a (nested) strategy mapping against ``schema``."""
    place = f"'{where[:-1]}'" if where else "the top level"
    if not isinstance(data, dict):
        raise UserInputError(f"{origin}: {place} must be a mapping with keys {', '.join(schema)}")
    unknown = sorted(set(map(str, data)) - set(schema))
    if unknown:
        raise UserInputError(
            f"{origin}: unknown key(s) {', '.join(unknown)} in {place}; "
            f"valid keys: {', '.join(schema)}"
        )
    out = {}
    for key, value in data.items():
        rule, name = schema[key], where + key
        if value is None or isinstance(rule, dict):
            out[key] = value if value is None else _validate(value, rule, origin, name + ".")
            continue
        if isinstance(rule, tuple):
            valid, expected = value in rule, f"one of {', '.join(rule)}"
        elif rule in (bool, str):
            valid, expected = isinstance(value, rule), "true or false" if rule is bool else "text"
        else:
            number = (int, float) if rule is float else int
            valid = isinstance(value, number) and not isinstance(value, bool) and value >= 0
            expected = "an integer >= 0" if rule is int else "a number >= 0"
        if not valid:
            raise UserInputError(f"{origin}: '{name}' must be {expected} or null, not {value!r}")
        out[key] = value if rule in (bool, str) or isinstance(rule, tuple) else rule(value)
    return out


def _present(mapping: dict | None) -> dict:
    return {k: v for k, v in (mapping or {}).items() if v is not None}


def _parse_strategy(data: dict, origin: str, source: str) -> Strategy:
    """Build a :class:`Strategy` from the mapping of a preset or user file, checking it."""
    spec = _validate(data, _SCHEMA, origin)
    conf = _present(spec.get("confounds"))
    compcor = CompCor(**_present(conf.pop("compcor", None)))
    scrub = None if spec.get("scrub") is None else Scrub(**_present(spec["scrub"]))
    filt = None if spec.get("filter") is None else TemporalFilter(**_present(spec["filter"]))
    problems = [
        (not (spec.get("name") or "").strip(), "'name' must be a non-empty text"),
        (compcor.combined and (compcor.wm or compcor.csf), "'compcor' takes wm/csf or combined"),
        (compcor.method == "conn" and compcor.combined,
         "'compcor.method: conn' takes wm/csf (CONN has no combined mask)"),
        (spec.get("weighting") == "hrf" and not conf.get("effect_of_rest"),
         "'weighting: hrf' needs 'confounds.effect_of_rest: true' (the weights are that regressor)"),
        (spec.get("detrend", 1) not in (0, 1, 2, 3, None), "'detrend' must be 0, 1, 2 or 3"),
        (scrub and scrub.detector == "fd" and scrub.gs_z_threshold is not None,
         "'scrub.gs_z_threshold' needs 'detector: art' or 'art-fd'"),
        (scrub and not scrub.fd_threshold and scrub.gs_z_threshold is None,
         "'scrub' needs fd_threshold and/or gs_z_threshold ('scrub: null' turns it off)"),
        (filt and not filt.low and not filt.high,
         "'filter' needs low and/or high in Hz ('filter: null' turns it off)"),
        (filt and filt.low and filt.high and filt.low >= filt.high,
         "'filter.low' must be below 'filter.high'"),
        (filt and (filt.type == "butterworth") != bool(filt.order),
         "'filter.order' (>= 1) is needed by, and only by, butterworth filters"),
    ]  # fmt: skip
    for failed, message in problems:
        if failed:
            raise UserInputError(f"{origin}: {message}")
    if filt:
        filt = dataclasses.replace(filt, low=filt.low or None, high=filt.high or None)
    others = _present(
        {
            k: spec.get(k)
            for k in ("detrend", "filter_order", "drop_non_steady_state", "scaling", "weighting")
        }
    )
    return Strategy(
        name=spec["name"].strip(), description=" ".join((spec.get("description") or "").split()),
        compcor=compcor, scrub=scrub, filter=filt, source=source, **conf, **others,
    )  # fmt: skip


def _override_fd(strategy: Strategy, fd_threshold: float, origin: str) -> Strategy:
    """Apply ``--fd-threshold`` to a strategy (0 or less: no FD criterion)."""
    value = float(fd_threshold) if fd_threshold > 0 else None
    if strategy.scrub is None:
        if value is None:
            return strategy
        raise UsageError(
            f"--fd-threshold {fd_threshold}: {origin} does no scrubbing ('scrub: null'); "
            "choose a strategy with a 'scrub' section"
        )
    scrub = dataclasses.replace(strategy.scrub, fd_threshold=value)
    if value is None and scrub.gs_z_threshold is None:
        scrub = None
    return dataclasses.replace(strategy, scrub=scrub)
