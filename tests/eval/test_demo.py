"""`cvfer demo` (the job behind `make demo`) end to end on the tiny preset, with the f_I cvfer ships."""

from __future__ import annotations

import json

import pytest

from cvfer.cli import main
from cvfer.eval.demo import DEMO_LOG, WORKER_LOG, StageProgress, timeline_available
from cvfer.train import identity


@pytest.mark.slow
def test_demo_generates_trains_compares_reports_and_predicts(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CVFER_CACHE", raising=False)
    for trainer in ("train_synthetic_identity_encoder", "train_tfen_face_recogniser"):
        monkeypatch.setattr(identity, trainer, lambda *args, **kwargs: pytest.fail("trained f_I on first use"))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--preset", "tiny", "--models", "mic", "--epochs", "1", "--threads", "1"]
    assert main(args) == 0
    table = (out / "compare.md").read_text()
    assert "| mic |" in table and "failed" not in table and "WAR 95% CI" in table and "Wilson" in table
    assert (out / "data" / "manifest.csv").is_file() and (out / "mic" / "report.md").is_file()
    # The model trained in a worker process that printed into its run folder; the stages printed into the log.
    assert (out / "mic" / WORKER_LOG).is_file() and (out / DEMO_LOG).is_file()
    # f_I "auto" is the synthetic recogniser on the synthetic benchmark, and the runs record it.
    assert json.loads((out / "mic" / "cv.json").read_text())["train_config"]["identity_encoder"] == "synthetic"
    assert json.loads((out / "mic" / "fold_00" / "config.json").read_text())["identity_encoder"] == "synthetic"
    printed = capsys.readouterr().out
    assert "| mic |" in printed and "What it cannot show" in printed
    assert "cvfer compare --data data/real/ckplus-pairs" in printed and "build_real_dev_set.sh" in printed
    if timeline_available():
        png = next((out / "predict").glob("*_timeline.png"))
        assert png.stat().st_size > 0 and str(png) in printed
    assert main(args) == 0  # a second run resumes: data and the trained fold are reused


def test_progress_line_counts_estimated_seconds_per_stage():
    progress = StageProgress({"data": 10.0, "training": 30.0})
    with progress.stage("data"):
        pass
    assert progress.bar.n == pytest.approx(10.0)
    with progress.stage("training"):
        progress.advance_to(0.5, "training")
        assert progress.bar.n == pytest.approx(25.0)
        progress.advance_to(0.2, "training")  # never backwards
        assert progress.bar.n == pytest.approx(25.0)
    assert progress.bar.n == pytest.approx(40.0)
    progress.close()
    assert progress.bar.desc == "demo [done]"
