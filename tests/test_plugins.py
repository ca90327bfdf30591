"""``--use-plugin FILE``: fMRIPrep's nipype plugin file, read and checked before any output."""

from __future__ import annotations

import pytest

from bids_ketamine_fc.cli.execution import choose_plugin, plugin_name, read_plugin_file
from bids_ketamine_fc.cli.run import main
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.exceptions import ExitCode, UserInputError


def _settings(tmp_path, **kwargs) -> Settings:
    return Settings(tmp_path, tmp_path / "out", "participant", tmp_path, tmp_path / "w", **kwargs)


def test_fmriprep_plugin_file_is_read(tmp_path):
    path = tmp_path / "plugin.yml"
    path.write_text(
        "plugin: LegacyMultiProc\n"
        "plugin_args: {maxtasksperchild: 1, memory_gb: 14, n_procs: 16, raise_insufficient: false}\n"
    )  # brainlife's fMRIPrep app writes this one
    plugin, args = read_plugin_file(path)
    assert plugin == "LegacyMultiProc" and args["n_procs"] == 16 and args["maxtasksperchild"] == 1
    settings = _settings(tmp_path, nprocs=2, mem_gb=4, nipype_plugin=plugin, plugin_args=args)
    assert choose_plugin(settings, 2) == (plugin, args)  # the file wins over --nprocs, --mem-gb
    path.write_text("plugin: SLURM\nplugin_args: {sbatch_args: --mem=8G -t 60}\n")
    assert read_plugin_file(path) == ("SLURM", {"sbatch_args": "--mem=8G -t 60"})


def test_multiproc_file_takes_nprocs_when_it_gives_none(tmp_path):
    settings = _settings(tmp_path, nprocs=3, mem_gb=6, nipype_plugin="MultiProc")
    assert choose_plugin(settings, 1) == ("MultiProc", {"n_procs": 3, "memory_gb": 6})
    settings = _settings(tmp_path, nprocs=1, nipype_plugin="SLURM")
    assert choose_plugin(settings, 1) == ("SLURM", {})  # even for one run with --nprocs 1
    plugin, _ = choose_plugin(_settings(tmp_path, nprocs=2), 2)  # the default
    assert plugin_name(plugin) == "WaitingMultiProc"
    assert choose_plugin(_settings(tmp_path, nprocs=1), 2)[0] == "Linear"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("plugin: SLURMGraph\n", ["SLURMGraph", "exits without waiting", "SLURM"]),
        ("plugin: CondorDAGMan\n", ["CondorDAGMan", "exits without waiting"]),
        ("plugin: Slurm\n", ["unknown nipype plugin 'Slurm'", "SLURM"]),
        ("plugin_args: {n_procs: 2}\n", ["expected a mapping with 'plugin'"]),
        ("plugin: SLURM\nplugin_args: [1, 2]\n", ["'plugin_args' must be a mapping"]),
        ("plugin: [SLURM\n", ["not valid YAML"]),
    ],
)
def test_bad_plugin_files_are_refused(tmp_path, content, words):
    path = tmp_path / "plugin.yml"
    path.write_text(content)
    with pytest.raises(UserInputError) as info:
        read_plugin_file(path)
    message = str(info.value)
    assert message.startswith(f"--use-plugin {path}") and "\n" not in message
    for word in words:
        assert word in message, message


def test_missing_plugin_file_is_one_line_before_any_output(tmp_path, capsys):
    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "dataset_description.json").write_text('{"Name": "x"}')
    (tmp_path / "bids" / "derivatives" / "fmriprep").mkdir(parents=True)
    code = main([str(tmp_path / "bids"), str(tmp_path / "out"), "participant",
                 "--use-plugin", str(tmp_path / "nope.yml")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.NO_INPUT and len(err.splitlines()) == 1
    assert "--use-plugin" in err and "nope.yml" in err
    assert not (tmp_path / "out").exists()


def test_plugin_file_runs_the_participant_level(tmp_path, capsys):
    from datasets import make_dataset

    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=40)
    path = tmp_path / "plugin.yml"
    path.write_text("plugin: Linear\n")
    code = main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--seeds", str(tmp_path / "seeds.json"), "--use-plugin", str(path)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    log = (tmp_path / "out" / "logs" / "participant.log").read_text()
    assert "with nipype's Linear plugin" in log
    assert list((tmp_path / "out" / "sub-01").rglob("*_stat-fisherz_boldmap.nii.gz"))
