"""The layout keeps its import directions: analysis never imports reports, participant never group.

Every ``import`` of the package, including those inside functions, is read from the source (AST),
so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bids_ketamine_fc"
NIPYPE_LAYERS = {"cli", "workflows", "interfaces"}
#: part of the package -> parts it must never import
FORBIDDEN = {
    "participant": {"group", "reports", "demo"} | NIPYPE_LAYERS,
    "group": {"reports", "demo"} | NIPYPE_LAYERS,
    "group.inference": {"group.behaviour", "group.ica", "group.run"},
    "reports": {"demo"} | NIPYPE_LAYERS,
    "interfaces": {"group", "demo", "cli", "workflows"},
    "workflows": {"group", "reports", "demo", "cli"},
    "demo": {"participant", "group", "reports"} | NIPYPE_LAYERS,
    "utils": {"participant", "group", "reports", "demo", "templates"} | NIPYPE_LAYERS,
    "templates": {"participant", "group", "reports", "demo"} | NIPYPE_LAYERS,
    "config": {"participant", "group", "reports", "demo", "templates"} | NIPYPE_LAYERS,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """Return the dotted name of a module below the package, without the package name."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str) -> set[str]:
    """Return every part of the package that ``source`` (the module ``module``) imports."""
    found = set()
    package = module.split(".")[:-1] if module else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module or ""]).strip(".")
                names = [f"bids_ketamine_fc.{target}".rstrip(".")]
            else:
                names = [node.module or ""]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n.removeprefix("bids_ketamine_fc.") for n in names if n.startswith(PACKAGE.name)}
    return found


def _within(name: str, part: str) -> bool:
    return name == part or name.startswith(part + ".")


def violations(root: Path = PACKAGE) -> list[str]:
    """Return ``"module imports target"`` for every import the rules forbid."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        rules = [bad for part, bad in FORBIDDEN.items() if _within(module, part)]
        for target in sorted(imported_modules(path.read_text(), module)):
            for bad in rules:
                if any(_within(target, b) for b in bad):
                    found.append(f"{module} imports {target}")
    return found


def test_import_directions():
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("participant/run.py", "from bids_ketamine_fc.group import maps\n", "participant.run"),
        ("group/run.py", "def f():\n    from bids_ketamine_fc.reports import group\n", "group.run"),
        ("group/inference/glm.py", "from ..behaviour import run\n", "group.inference.glm"),
        (
            "group/behaviour/run.py",
            "import bids_ketamine_fc.reports.behaviour\n",
            "group.behaviour",
        ),
    ],
)
def test_the_check_finds_a_forbidden_import(tmp_path, module, source, expected):
    path = tmp_path / "bids_ketamine_fc" / module
    path.parent.mkdir(parents=True)
    path.write_text(source)
    found = violations(tmp_path / "bids_ketamine_fc")
    assert found and all(line.startswith(expected) for line in found)


def test_modules_stay_small():
    """Modules under ~400 lines (the layout's promise); a few lines of slack, no more."""
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in sorted(PACKAGE.rglob("*.py"))}
    assert {name: n for name, n in sizes.items() if n > 420} == {}
