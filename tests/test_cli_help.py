"""What a user finds without docs: `cvfer --version`, an example on every verb's --help, errors naming the next
command."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from cvfer.cli import build_parser, main


def _verb_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every verb (and sub-action, e.g. `weights retrain`) with its parser."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[f"{prefix}{name}"] = child
                found |= _verb_parsers(child, f"{prefix}{name} ")
    return found


def test_every_verb_help_shows_an_example_line_by_line():
    verbs = _verb_parsers(build_parser())
    assert {"demo", "train", "predict", "compare", "weights", "weights retrain"} <= set(verbs)
    for name, parser in verbs.items():
        text = parser.format_help()
        assert "example" in text, f"`cvfer {name} --help` shows no example"
        examples = text[text.index("example") :].splitlines()[1:]
        assert any(line.strip().startswith(("cvfer ", "benchmarks/")) for line in examples), name


def test_version_is_the_installed_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cvfer {version('cvfer')}"


def test_missing_model_and_run_errors_name_the_command_to_run(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "model.pt"), str(tmp_path / "clip.mp4")]) == 2
    assert "`cvfer train --data DIR --model mic --fold 0 --out RUN` writes RUN/model.pt" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "run `cvfer cv" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--model", "mic", "--out", str(tmp_path / "run")]) == 2
    assert "`cvfer synth` or `cvfer prepare`" in capsys.readouterr().err
