"""`cvfer compare` on a tiny synthetic benchmark: one row per model, a failing model listed, resume reuses folds.

The compared models are a tiny frame-mean model registered here and CNN-LSTM on 16×16 inputs, one epoch on
two folds, so the whole file runs in seconds on one core.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from cvfer.cli import main
from cvfer.data.manifest import read_manifest
from cvfer.errors import ConfigError
from cvfer.eval.compare import (
    bench_clip_paths,
    compare_config,
    accuracy_interval,
    clip_paired_section,
    comparison_table,
    run_compare,
    split_setting,
)
from cvfer.models import list_models, register_model
from cvfer.models.base import FERModel, FEROutput
from cvfer.models.registry import compare_preset
from cvfer.runs import COMPARE_JSON, COMPARE_MD
from cvfer.train.config import TrainConfig, build_config

TINY = "test-compare-frame-mean"
MODELS = [TINY, "cnn-lstm", "no-such-model"]
SMALL_CNN_LSTM = ["cnn-lstm:model.input_size=16", "cnn-lstm:model.hidden_size=8"]


class FrameMeanModel(FERModel):
    """Mean colour of each frame → linear → tanh → classifier: the cheapest model of decoded frames."""

    train_inputs = ("frames", "label")
    test_inputs = ("frames",)

    def __init__(self, num_classes: int, image_size: int, num_frames: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3 * num_frames, 8), nn.Tanh())
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> FEROutput:
        features = self.encoder(batch["frames"].mean(dim=(3, 4)).flatten(1))
        return FEROutput(self.classifier(features), features)


if TINY not in list_models():

    @register_model(TINY)
    def frame_mean(num_classes: int = 7, image_size: int = 64, num_frames: int = 8) -> FrameMeanModel:
        return FrameMeanModel(num_classes, image_size, num_frames)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from cvfer.data.synthetic import generate_benchmark

    root = tmp_path_factory.mktemp("compare") / "data"
    generate_benchmark(root, preset="tiny", seed=0, progress=False, num_subjects=4, size=32, num_frames=6, folds=2)
    return root


@pytest.fixture(scope="module")
def compared(tiny_data, tmp_path_factory):
    """(out folder, exit code) of one `cvfer compare` run over MODELS."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("compare") / "run"
    argv = [
        "compare", "--data", str(tiny_data), "--models", ",".join(MODELS), "--folds", "2", "--out", str(out),
        "--epochs", "1", "--batch-size", "8", "--num-frames", "2", "--threads", "1",
        "--bench-clips", "2", "--bench-repeats", "1", "--mine-steps", "5",
        *[item for setting in SMALL_CNN_LSTM for item in ("--set", setting)],
    ]
    return out, main(argv), argv


def test_table_has_a_row_per_model_with_finite_numbers(compared):
    out, _, _ = compared
    document = json.loads((out / COMPARE_JSON).read_text(encoding="utf-8"))
    rows = {row["name"]: row for row in document["models"]}
    assert list(rows) == MODELS
    for name in (TINY, "cnn-lstm"):
        row = rows[name]
        assert row["error"] is None
        for key in ("war", "uar", "identity_probe_accuracy", "identity_probe_chance"):
            assert math.isfinite(row["summary"][key]["mean"]) and row["summary"][key]["folds"] == 2
        assert row["summary"]["identity_probe_chance"]["mean"] == pytest.approx(1 / 4)
        timing = row["timing"]
        assert timing["parameters"] > 0 and timing["gmacs_per_clip"] > 0 and math.isfinite(timing["fps"]["1"])
    # The tiny model has 3·2·8 + 8 + 8·7 + 7 weights (7 classes); CNN-LSTM's ResNet-18 alone has millions.
    assert rows[TINY]["timing"]["parameters"] == 3 * 2 * 8 + 8 + 8 * 7 + 7
    assert rows["cnn-lstm"]["timing"]["parameters"] > 1_000_000
    assert rows["cnn-lstm"]["train_config"]["model_cfg"] == {"input_size": 16, "hidden_size": 8}
    assert rows[TINY]["train_config"]["model_cfg"] == {}
    table = (out / COMPARE_MD).read_text(encoding="utf-8")
    for name in (TINY, "cnn-lstm"):
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        # Every cell is a number but the MI one: neither model has a z_I to measure MI with.
        assert len(cells) == 12 and cells[8] == "–" and not any("–" in cell for cell in cells[:8] + cells[9:])
        # Two folds of 14 test clips each: the WAR's interval is the t-interval over the two folds.
        assert cells[3] == "2 × 14" and cells[2].startswith("[") and "Student-t interval" in table
    war = rows["cnn-lstm"]["fold_scores"]["war"]
    assert rows["cnn-lstm"]["fold_test_clips"] == [14, 14] and " ± " in table.splitlines()[4]
    low, high = accuracy_interval(war, [14, 14])
    assert low <= sum(war) / 2 <= high
    # Two folds: every other model is compared with the first, fold by fold.
    paired = [line for line in table.splitlines() if line.startswith("| cnn-lstm | ")][-1]
    assert f"each model − `{TINY}`" in table and paired.count("|") == 11 and paired.count(" / ") == 6
    # f_I is noted only for models that take z_I; the machine is described as `cvfer bench` does.
    assert not any(line.startswith("- `cnn-lstm`") and "f_I" in line for line in table.splitlines())
    assert {"processor", "cpus", "system", "torch", "av"} <= set(document["machine"])


def test_failing_model_is_listed_and_the_rest_still_run(compared):
    out, exit_code, _ = compared
    assert exit_code == 1
    document = json.loads((out / COMPARE_JSON).read_text(encoding="utf-8"))
    failed = next(row for row in document["models"] if row["name"] == "no-such-model")
    assert "unknown model 'no-such-model'" in failed["error"] and failed["summary"] is None
    table = (out / COMPARE_MD).read_text(encoding="utf-8")
    assert "| no-such-model (failed, see notes) | – |" in table
    assert "- `no-such-model`: unknown model 'no-such-model'" in table
    assert not (out / "no-such-model").exists()


def test_resume_reuses_finished_folds(compared):
    out, _, argv = compared
    fold_files = sorted(out.glob("*/fold_*/fold_metrics.json")) + sorted(out.glob("*/fold_*/model.pt"))
    assert len(fold_files) == 2 * 2 * 2
    before = {path: path.stat().st_mtime_ns for path in fold_files}
    assert main(argv) == 1
    assert {path: path.stat().st_mtime_ns for path in fold_files} == before


def test_resume_with_other_options_is_refused_per_model(compared, tiny_data, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(compared[0] / TINY, out / TINY)
    result = run_compare(
        tiny_data, [TINY], out, num_folds=2, options={"epochs": 2, "batch_size": 8, "num_frames": 2, "threads": 1},
        bench_clips=1, bench_repeats=1, mine_steps=5,
    )
    assert "other settings (train_config.epochs)" in result.models[0].error
    assert "failed" in comparison_table(result)


def test_presets_and_per_model_settings(tiny_data):
    tfen, note = compare_config("tfen", {"epochs": 3}, ["lr=0.5", "tfen:model.alpha=1", "cnn-lstm:model.hidden_size=4"])
    assert tfen.optimizer == "sgd" and tfen.epochs == 3 and tfen.lr == 0.5 and tfen.num_frames == 7
    assert tfen.model_cfg["alpha"] == 1 and tfen.model_cfg["input_size"] is None and "hidden_size" not in tfen.model_cfg
    assert tfen.model_cfg["face_weights"] == "synthetic" and "face_weights" not in compare_config("tfen-no-face-decoupling")[0].model_cfg
    assert "TFEN" in note
    ceflnet, _ = compare_config("ceflnet")
    assert ceflnet.num_frames == 16 and ceflnet.model_cfg["input_size"] is None
    mic, _ = compare_config("mic-mi")
    assert mic.model == "mic-mi" and mic.identity_encoder == "auto" and "alpha" not in mic.model_cfg
    assert mic.for_data(tiny_data).identity_encoder == "synthetic"  # what run_compare (and so the demo) trains with
    assert split_setting('lr_schedule_params={"a": 1}') == (None, 'lr_schedule_params={"a": 1}')
    with pytest.raises(ConfigError):
        split_setting(":lr=1")


def test_bench_clips_are_fixed_and_spread(tiny_data):
    clips = bench_clip_paths(tiny_data, 3)
    assert clips == bench_clip_paths(tiny_data, 3) and len(set(clips)) == 3
    assert all(path.is_file() for path in clips)
    assert len(bench_clip_paths(tiny_data, 10_000)) == len(read_manifest(tiny_data).clips) == 4 * 7
    with pytest.raises(ConfigError):
        bench_clip_paths(tiny_data, 0)


def test_settings_for_models_not_compared_are_refused(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="not compared"):
        run_compare(tiny_data, [TINY], tmp_path, settings=["tfen:lr=1"])


def test_more_folds_than_splits_is_refused_up_front(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="3 folds asked for"):
        run_compare(tiny_data, [TINY], tmp_path / "run", num_folds=3)
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_is_refused_before_any_model_runs(tiny_data, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main(["compare", "--data", str(tiny_data), "--models", TINY, "--out", str(taken)]) != 0
    assert "--out is an existing file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "not a folder"


def test_notes_name_training_options_changed_from_the_defaults():
    from cvfer.eval.compare import ComparisonResult, ModelComparison, comparison_markdown
    from cvfer.train.config import TrainConfig

    def row(name: str, **changes) -> ModelComparison:
        return ModelComparison(name, "a preset", TrainConfig(model=name, **changes).to_dict(), run_dir="run")

    result = ComparisonResult("data", 1, ["a.mp4"], 10.0, 1, 1, 1, None, [row("mic", critic_steps=5), row("mic-mi")])
    notes = {line.split("`")[1]: line for line in comparison_markdown(result).splitlines() if line.startswith("- `")}
    assert "critic_steps 5" in notes["mic"] and "critic_steps" not in notes["mic-mi"]


def test_every_model_starts_from_the_preset_its_system_registers():
    for name in [name for name in list_models() if not name.startswith("test-")]:
        preset = compare_preset(name)
        config, note = compare_config(name, {"epochs": 2, "lr": None}, ["seed=3", f"{name}:batch_size=4"])
        if preset is None:
            assert config == TrainConfig(model=name, epochs=2, seed=3, batch_size=4)
            assert note == "TrainConfig defaults (no preset)"
        else:
            layers = {"options": {"model": name, "epochs": 2}, "settings": ["seed=3", "batch_size=4"]}
            assert config == build_config(preset=preset, **layers) and note.startswith(f"{preset} preset (")
    assert compare_config("cnn-lstm")[1] == "TrainConfig defaults (no preset)"
    assert compare_config("mic-mv")[1] == "demo preset (MIC settings for CPU)"


def test_malformed_settings_are_refused_before_any_model_runs(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=r"--set 'lr' is not key=value"):
        run_compare(tiny_data, [TINY], tmp_path / "run", settings=["lr"])
    assert not (tmp_path / "run").exists()


def test_accuracy_interval_is_wilson_for_one_fold_and_t_over_several():
    low, high = accuracy_interval([14 / 42], [42])  # Wilson by hand: centre (p + z²/2n) / (1 + z²/n) ± ...
    assert (low, high) == pytest.approx((0.21012, 0.48447), abs=1e-5)
    assert accuracy_interval([0.3, 0.4, 0.5], [40, 40, 40]) == pytest.approx((0.4 - 0.24841, 0.4 + 0.24841), abs=1e-5)
    assert accuracy_interval([1.0], [10])[1] == 1.0 and accuracy_interval([0.0, 0.0], [5, 5]) == (0.0, 0.0)
    assert all(math.isnan(bound) for bound in accuracy_interval([math.nan], [10]))
    wide, narrow = accuracy_interval([0.5], [20]), accuracy_interval([0.5], [2000])
    assert wide[1] - wide[0] > 5 * (narrow[1] - narrow[0])


def test_one_fold_shows_the_value_alone_and_tests_models_clip_by_clip(tmp_path):
    """With a single fold there is no std to show and no fold-wise test; models are compared on the same test
    clips instead (exact McNemar): here `b` gets 4 clips right that `a` misses and misses 1 that `a` gets."""
    from cvfer.eval.compare import ComparisonResult, ModelComparison, comparison_markdown

    truth = ["anger", "fear", "happiness", "sadness", "anger", "fear"]
    guesses = {"a": ["anger", "fear", "anger", "anger", "fear", "anger"], "b": ["anger", "anger", "happiness", "sadness", "anger", "fear"]}
    rows = []
    for name, predicted in guesses.items():
        fold = tmp_path / name / "fold_00"
        fold.mkdir(parents=True)
        lines = ["path,label,pred"] + [f"clips/{index}.mp4,{label},{pred}" for index, (label, pred) in enumerate(zip(truth, predicted))]
        (fold / "predictions.csv").write_text("\n".join(lines) + "\n")
        war = sum(label == pred for label, pred in zip(truth, predicted)) / len(truth)
        summary = {"war": {"mean": war, "std": 0.0, "folds": 1}, "uar": {"mean": war, "std": 0.0, "folds": 1}}
        rows.append(
            ModelComparison(name, "p", {}, str(tmp_path / name), summary, {"war": [war]}, fold_test_clips=[len(truth)])
        )
    result = ComparisonResult("data", 1, ["a.mp4"], 10.0, 1, 1, 1, None, rows)
    section = clip_paired_section(result)
    assert "fold 0's 6 test clips" in section[1] and section[-1] == "| b | +50.0 | 4 / 1 | 0.38 |"
    markdown = comparison_markdown(result)
    assert "| a | 33.3 | [9.7, 70.0] | 1 × 6 | 33.3 |" in markdown and " ± " not in comparison_table(result)
    assert "Wilson score interval" in markdown
    result.folds = 2
    assert clip_paired_section(result) == []
