"""The Boutiques descriptor (BIDS-Apps 2.0, BEP027) agrees with the parser, both ways.

``boutiques.json`` at the top of the repository links to the packaged
``bids_ketamine_fc/data/boutiques.json``, which ``bids_ketamine_fc --bids-exec-spec`` prints.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from bids_ketamine_fc import __version__
from bids_ketamine_fc.cli.parser import get_parser
from bids_ketamine_fc.cli.run import main

ROOT = Path(__file__).resolve().parents[1]
BOUTIQUES_TYPES = {"String", "File", "Number", "Flag"}
#: BEP027's reserved argument ids; every other input's id is its parser ``dest`` in CamelCase.
RESERVED_IDS = {
    "bids_dir": "InputDataset",
    "output_dir": "OutputLocation",
    "analysis_level": "AnalysisLevel",
    "participant_label": "SubjectLabel",
    "session_label": "SessionLabel",
    "help": "Help",
    "version": "ToolVersion",
}
#: The group level may name an existing OUTPUT_DIR as a File (the BIDS-App template of bosh).
OUTPUT_DIR_IDS = ("OutputLocation", "ParticipantOutputs")


def _descriptor() -> dict:
    return json.loads((ROOT / "boutiques.json").read_text())


def _input_id(dest: str) -> str:
    return RESERVED_IDS.get(dest) or "".join(part.capitalize() for part in dest.split("_"))


def _described_actions() -> dict[str, argparse.Action]:
    """Parser actions the descriptor describes: all but ``--bids-exec-spec`` (which prints it)."""
    return {a.dest: a for a in get_parser()._actions if a.dest != "bids_exec_spec"}


def _takes_integers_only(action: argparse.Action) -> bool:
    """Tell whether an option's type refuses a fraction (``int`` and its variants do)."""
    try:
        action.type("0.5")
    except ValueError:
        return True
    return False


def _check_input(action: argparse.Action, item: dict, required: bool) -> None:
    """Compare one descriptor input with the parser action it describes."""
    where = f"boutiques.json input {item['id']}"
    assert item["value-key"] == f"[{action.dest.upper()}]", where
    assert item["type"] in BOUTIQUES_TYPES, where
    if not action.option_strings:
        assert required, where
        assert "command-line-flag" not in item, where
    elif isinstance(action, argparse._CountAction):
        short = action.option_strings[0]
        assert item["value-choices"] == [short, short + short[1:]], where
    else:
        assert item["command-line-flag"] in action.option_strings, where
        assert item.get("optional") is True, where
    if action.nargs == 0 and not isinstance(action, argparse._CountAction):
        assert item["type"] == "Flag", where
        return
    assert bool(item.get("list")) == (action.nargs in ("+", "*")), where
    if action.choices is not None:
        assert item["value-choices"] == list(action.choices), where
    if action.default not in (None, []) and not isinstance(action, argparse._CountAction):
        assert item.get("default-value") == action.default, where
    else:
        assert "default-value" not in item, where
    if item["type"] == "Number":
        assert _takes_integers_only(action) == bool(item.get("integer")), where


def test_descriptor_matches_parser():
    descriptor = _descriptor()
    actions = _described_actions()
    inputs = {item["id"]: item for item in descriptor["inputs"]}
    expected = {_input_id(dest): dest for dest in actions} | {"ParticipantOutputs": "output_dir"}
    assert set(inputs) == set(expected), "parser options and boutiques.json inputs differ"
    one_required = {
        member
        for group in descriptor["groups"]
        if group.get("one-is-required")
        for member in group["members"]
    }
    for input_id, dest in expected.items():
        item = inputs[input_id]
        required = not item.get("optional", False) or input_id in one_required
        _check_input(actions[dest], item, required)
    assert {inputs[i]["type"] for i in OUTPUT_DIR_IDS} == {"String", "File"}
    # the command line: BIDS-App template, every value-key once, positionals first in order
    prefix, command = descriptor["command-line"].split("; ", 1)
    assert prefix == "mkdir -p [OUTPUT_DIR]"
    keys = re.findall(r"\[[A-Z_]+\]", command)
    assert sorted(keys) == sorted({item["value-key"] for item in inputs.values()})
    assert len(keys) == len(set(keys))
    positionals = [a.dest for a in actions.values() if not a.option_strings]
    assert keys[: len(positionals)] == [f"[{d.upper()}]" for d in positionals]
    assert command.split()[0] == "bids_ketamine_fc"
    assert descriptor["tool-version"] == __version__
    assert descriptor["container-image"]["image"].endswith(f":{__version__}")
    # the descriptor's groups are the parser's argument groups (and the OUTPUT_DIR choice)
    groups = {
        g.title: [_input_id(a.dest) for a in g._group_actions if a.dest in actions]
        for g in get_parser()._action_groups
        if g.title not in ("positional arguments", "options")
    }
    described = {g["name"]: g["members"] for g in descriptor["groups"]}
    assert described.pop("Output location") == list(OUTPUT_DIR_IDS)
    assert described == groups


def test_descriptor_passes_bosh_bids_validation():
    pytest.importorskip("boutiques")
    from boutiques import bosh

    # raises DescriptorValidationError on a schema or BIDS-App template error
    bosh(["validate", "--bids", str(ROOT / "boutiques.json")])
    descriptor = _descriptor()
    assert descriptor["custom"]["BIDSAppSpecVersion"]
    resources = descriptor["suggested-resources"]
    assert resources["cpu-cores"] >= 1 and resources["ram"] > 0
    assert resources["walltime-estimate"] > 0


def test_exit_codes_are_one_table():
    """``boutiques.json`` and ``docs/usage.rst`` list exactly the statuses of ``ExitCode``."""
    from bids_ketamine_fc.exceptions import EXIT_CODES, ExitCode

    assert set(EXIT_CODES) == set(ExitCode)
    listed = {item["code"]: item["description"] for item in _descriptor()["error-codes"]}
    assert listed == {int(c): text for c, text in EXIT_CODES.items() if c != ExitCode.SUCCESS}
    usage = (ROOT / "docs" / "usage.rst").read_text()
    table = usage.split("Exit status\n", 1)[1].split("Command-line reference", 1)[0]
    assert [int(c) for c in re.findall(r"^   \* - ``(\d+)``$", table, re.M)] == sorted(ExitCode)


def test_bids_exec_spec_prints_the_packaged_descriptor(capsys):
    assert (ROOT / "boutiques.json").resolve() == (
        ROOT / "bids_ketamine_fc" / "data" / "boutiques.json"
    )
    with pytest.raises(SystemExit) as stop:
        main(["--bids-exec-spec"])
    assert stop.value.code == 0
    assert json.loads(capsys.readouterr().out) == _descriptor()


def _simulate(tmp_path, capsys, invocation: dict) -> tuple[str, argparse.Namespace]:
    """Run ``bosh exec simulate`` on an invocation; return its mkdir target and the parsed options."""
    from boutiques import bosh

    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    result = bosh(["exec", "simulate", str(ROOT / "boutiques.json"), "-i", str(path)])
    capsys.readouterr()
    mkdir, command = result.shell_command.split("; ", 1)
    tokens = shlex.split(command)
    assert tokens[0] == "bids_ketamine_fc"
    return shlex.split(mkdir)[2], get_parser().parse_args(tokens[1:])


def _check_parsed(opts: argparse.Namespace, invocation: dict) -> None:
    """Every input of the invocation, or its descriptor default, is the parsed option's value."""
    dests = {_input_id(dest): dest for dest in _described_actions()}
    dests["ParticipantOutputs"] = "output_dir"
    defaults = {item["id"]: item.get("default-value") for item in _descriptor()["inputs"]}
    for input_id, value in {**defaults, **invocation}.items():
        if input_id == "Verbosity" or value is None:
            continue
        parsed = getattr(opts, dests[input_id])
        assert (str(parsed) if isinstance(parsed, Path) else parsed) == value, input_id


def test_simulated_command_lines_parse_back(tmp_path, capsys):
    pytest.importorskip("boutiques")
    group = {
        "InputDataset": "/data/bids",
        # bosh substitutes a value-key shared by two inputs (OutputLocation, ParticipantOutputs)
        # only from the first one listed: bosh users give OutputLocation at both levels
        "OutputLocation": "/data/out",
        "AnalysisLevel": "group",
        "SubjectLabel": ["01", "sub-02"],
        "SessionLabel": ["pre"],
        "FmriprepDir": "/data/fmriprep",
        "Space": "MNI152NLin6Asym",
        "Seeds": "/data/seeds.yml",
        "SmoothingFwhm": 6,
        "FdThreshold": 0.5,
        "DummyScans": 4,
        "WorkDir": "/scratch/work",
        "Nprocs": 2,
        "MemGb": 8,
        "Verbosity": "-vv",
        "Phenotype": "/data/phenotype.tsv",
        "Covariates": ["age", "sex"],
        "Inference": ["rft", "tfce"],
        "RandomSeed": 7,
        "Roi": "/data/roi.nii.gz",
        "RoiSeed": "mPFC",
    }
    mkdir, opts = _simulate(tmp_path, capsys, group)
    assert mkdir == "/data/out" and opts.verbosity == 2
    _check_parsed(opts, group)
    participant = {
        "InputDataset": "/data/bids",
        "OutputLocation": "/data/out",
        "AnalysisLevel": "participant",
        "SubjectLabel": ["01"],
    }
    mkdir, opts = _simulate(tmp_path, capsys, participant)
    assert mkdir == "/data/out"
    _check_parsed(opts, participant)


def test_subject_label_is_bep027_alias_and_reads_a_file(tmp_path):
    from bids_ketamine_fc.utils.bids import clean_labels

    labels = tmp_path / "subject_ids.txt"
    labels.write_text("01\nsub-02\n\n03\n")
    parsed = get_parser().parse_args(["b", "o", "participant", "--subject-label", str(labels)])
    assert parsed.participant_label == [str(labels)]
    assert clean_labels(parsed.participant_label, "sub", "--subject-label") == ("01", "02", "03")
    assert get_parser().parse_args(["b", "o", "group", "--subject-label", "04"]).participant_label
