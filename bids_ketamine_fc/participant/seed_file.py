"""Seed definitions: the study's set or a user's JSON/YAML file, checked entry by entry.

A seed is a sphere (``center`` in MNI mm and ``radius``), a TemplateFlow atlas label (``atlas``,
``label``, optional ``desc``) or a mask file (``mask``, optional ``label``). :func:`load_seed_set`
reads them; an unknown key, a missing one or a bad value is named with the seed and the file (and
the closest known key when there is one). :mod:`.seeds` places them on the data grid.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from bids_ketamine_fc.exceptions import MissingInputError, UsageError, UserInputError

SEED_KINDS = ("sphere", "atlas", "mask")
_NAME = re.compile(r"[A-Za-z0-9]+")
_KEYS = {
    "sphere": {"center", "radius"},
    "atlas": {"atlas", "label", "desc"},
    "mask": {"mask", "label"},
}
_COMMON_KEYS = {"name", "description", "source"}
_KIND_KEYS = {"mask": "mask", "atlas": "atlas", "sphere": "center"}  # the key telling the kind


@dataclass(frozen=True)
class Seed:
    """One seed definition, independent of any data grid.

    Parameters
    ----------
    name : str
        Alphanumeric name, used in output file names (``seed-<name>``).
    kind : str
        ``"sphere"``, ``"atlas"`` or ``"mask"``.
    centre : tuple of float, optional
        Sphere centre in MNI millimetres.
    radius : float, optional
        Sphere radius in millimetres.
    atlas, desc : str, optional
        TemplateFlow ``atlas-`` and ``desc-`` entities of a ``dseg`` image.
    label : int, optional
        Label value in the atlas, or in a label mask file (a mask file without a label takes
        every nonzero voxel).
    path : Path, optional
        Mask file.
    definition : dict
        The definition as written into the seed maps' JSON sidecars.
    """

    name: str
    kind: str
    centre: tuple[float, float, float] | None = None
    radius: float | None = None
    atlas: str | None = None
    desc: str | None = None
    label: int | None = None
    path: Path | None = None
    definition: dict = field(default_factory=dict, compare=False)


def load_seed_set(spec: str) -> list[Seed]:
    """Read a set of seeds.

    Parameters
    ----------
    spec : str
        ``"study"`` for the study's nine seeds, or the path of a JSON or YAML file holding a list
        of seeds or ``{"seeds": [...]}``. Each seed is a sphere ``{name, center (or centre):
        [x, y, z] in MNI mm, radius}``, an atlas label ``{name, atlas, label, desc (optional)}``
        or a mask file ``{name, mask: path relative to the seed file, label (optional)}``.

    Returns
    -------
    list of Seed

    Raises
    ------
    UserInputError
        When the file is missing, unreadable or malformed; the message names the seed at fault.
    """
    if spec == "study":
        path = Path(str(resources.files("bids_ketamine_fc") / "data" / "seeds" / "study.json"))
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UsageError(
                f"--seeds: '{spec}' is neither 'study' nor an existing JSON or YAML seed file."
            )
    content = _read_seed_file(path)
    entries = content.get("seeds") if isinstance(content, dict) else content
    if not isinstance(entries, list) or not entries:
        raise UserInputError(
            f"Seed file {path} must hold a non-empty list of seeds, or {{'seeds': [...]}}."
        )
    seeds = [_parse_seed(entry, number, path) for number, entry in enumerate(entries, start=1)]
    names = [seed.name for seed in seeds]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise UserInputError(f"Seed file {path} names several seeds {', '.join(duplicated)}.")
    return seeds


def _read_seed_file(path: Path):
    """Parse a JSON or YAML seed file."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yml", ".yaml"):
        raise UserInputError(f"Seed file {path} must end in .json, .yml or .yaml.")
    try:
        text = path.read_text()
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        detail = " ".join(str(error).split())
        raise UserInputError(f"Seed file {path} cannot be parsed: {detail}") from None


def _parse_seed(entry, number: int, source: Path) -> Seed:
    """Validate one entry of a seed file and build its :class:`Seed`."""
    where = f"Seed #{number}"
    if not isinstance(entry, dict):
        raise UserInputError(f"{where} in {source} is a {type(entry).__name__}, not a mapping.")
    entry = dict(entry)
    if "centre" in entry:
        entry["center"] = entry.pop("centre")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserInputError(
            f"{where} in {source}: 'name' must be letters and digits only (it goes into file "
            f"names); {name!r} was given."
        )
    where = f"Seed #{number} '{name}' in {source}"
    known = _COMMON_KEYS | set().union(*_KEYS.values())
    unknown = sorted(set(map(str, entry)) - known)
    if unknown:
        named = ", ".join(f"'{key}'{did_you_mean(key, known)}" for key in unknown)
        raise UserInputError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}; a seed has 'name' and "
            "'center' + 'radius' (sphere), 'atlas' + 'label' [+ 'desc'] (atlas label) or "
            "'mask' [+ 'label'] (mask file)."
        )
    kinds = [kind for kind, key in _KIND_KEYS.items() if key in entry]
    if len(kinds) != 1:
        raise UserInputError(
            f"{where}: give exactly one of 'center' (sphere), 'atlas' (atlas label) or 'mask' "
            f"(mask file); {kinds or 'none'} given."
        )
    kind = kinds[0]
    unknown = sorted(set(entry) - _COMMON_KEYS - _KEYS[kind])
    if unknown:
        allowed = sorted(_COMMON_KEYS | _KEYS[kind])
        raise UserInputError(f"{where}: unknown keys {unknown} for a {kind} seed; use {allowed}.")
    definition = {"Name": name, "Type": kind}
    for key in ("description", "source"):
        if key in entry:
            definition[key.capitalize()] = str(entry[key])
    builder = {"sphere": _sphere_seed, "atlas": _atlas_seed, "mask": _mask_seed}[kind]
    return builder(entry, name, where, source, definition)


def _sphere_seed(entry: dict, name: str, where: str, source: Path, definition: dict) -> Seed:
    """Build a sphere seed from a validated entry."""
    centre = entry["center"]
    if not isinstance(centre, list | tuple):
        raise UserInputError(f"{where}: 'center' must be a list [x, y, z] in MNI mm.")
    if len(centre) != 3:
        raise UserInputError(f"{where}: 'center' has {len(centre)} values instead of 3.")
    centre = tuple(_number(value, "center", where) for value in centre)
    if "radius" not in entry:
        raise UserInputError(f"{where}: a sphere needs a 'radius' in mm.")
    radius = _number(entry["radius"], "radius", where)
    if radius <= 0:
        raise UserInputError(f"{where}: 'radius' must be positive; {radius} was given.")
    definition.update(CenterMNI=list(centre), RadiusMM=radius)
    return Seed(name, "sphere", centre=centre, radius=radius, definition=definition)


def _atlas_seed(entry: dict, name: str, where: str, source: Path, definition: dict) -> Seed:
    """Build a TemplateFlow atlas-label seed from a validated entry."""
    atlas, desc = entry["atlas"], entry.get("desc")
    for key, value in (("atlas", atlas), ("desc", desc)):
        if value is not None and not (isinstance(value, str) and _NAME.fullmatch(value)):
            raise UserInputError(f"{where}: '{key}' must be a TemplateFlow entity value.")
    if "label" not in entry:
        raise UserInputError(f"{where}: an atlas seed needs the 'label' value of its region.")
    label = _integer(entry["label"], where)
    definition.update(Atlas=atlas, Label=label, Source=definition.get("Source", "TemplateFlow"))
    if desc is not None:
        definition["Desc"] = desc
    return Seed(name, "atlas", atlas=atlas, desc=desc, label=label, definition=definition)


def _mask_seed(entry: dict, name: str, where: str, source: Path, definition: dict) -> Seed:
    """Build a mask-file seed from a validated entry (path relative to the seed file)."""
    if not isinstance(entry["mask"], str):
        raise UserInputError(f"{where}: 'mask' must be the path of a NIfTI file.")
    path = (source.parent / entry["mask"]).resolve()
    if not path.is_file():
        raise MissingInputError(f"{where}: mask file {path} does not exist.")
    label = _integer(entry["label"], where) if "label" in entry else None
    definition["MaskFile"] = str(path)
    if label is not None:
        definition["Label"] = label
    return Seed(name, "mask", label=label, path=path, definition=definition)


def _number(value, key: str, where: str) -> float:
    """Return ``value`` as a finite float or raise a message naming the key."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserInputError(f"{where}: '{key}' must hold finite numbers; {value!r} was given.")
    return float(value)


def _integer(value, where: str) -> int:
    """Return a label value as an int (integral floats accepted)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and value == int(value)):
        raise UserInputError(f"{where}: 'label' must be an integer; {value!r} was given.")
    return int(value)


def did_you_mean(word: str, choices) -> str:
    """Return `` (did you mean 'x'?)`` for the choice closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
