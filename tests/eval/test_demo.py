"""`cvfer demo` (the job behind `make demo`) end to end on the tiny preset with a tiny cached f_I."""

from __future__ import annotations

import json

import pytest

from cvfer.cli import main
from cvfer.train import identity


@pytest.mark.slow
def test_demo_generates_trains_compares_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CVFER_CACHE", str(tmp_path / "cache"))
    identity.train_synthetic_identity_encoder(
        identity.identity_cache_dir() / identity.SYNTHETIC_CHECKPOINT_NAME,
        num_identities=4, per_identity=3, size=16, held_out_identities=2, epochs=1, progress=False,
    )
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--preset", "tiny", "--models", "mic", "--epochs", "1", "--threads", "1"]
    assert main(args) == 0
    table = (out / "compare.md").read_text()
    assert "| mic |" in table and "failed" not in table
    assert (out / "data" / "manifest.csv").is_file() and (out / "mic" / "report.md").is_file()
    # f_I "auto" is the synthetic recogniser on the synthetic benchmark, and the runs record it.
    assert json.loads((out / "mic" / "cv.json").read_text())["train_config"]["identity_encoder"] == "synthetic"
    assert json.loads((out / "mic" / "fold_00" / "config.json").read_text())["identity_encoder"] == "synthetic"
    assert "| mic |" in capsys.readouterr().out
    assert main(args) == 0  # a second run resumes: data and the trained fold are reused
