"""Cross-validation bookkeeping (scores, resume, sweeps, cross-dataset) and a tiny end-to-end `cvfer cv`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cvfer.cli import main
from cvfer.data.manifest import read_manifest, write_manifest
from cvfer.data.splits import subject_kfold, write_splits
from cvfer.errors import ConfigError, CvferError, DatasetError
from cvfer.eval.probes import VerificationResult
from cvfer.eval.protocol import (
    CVResult,
    FoldResult,
    config_with,
    parse_sweep,
    probe_fold,
    run_cv,
    run_sweep,
    score_fold,
    shared_classes,
    sweep_table,
    write_metrics,
)
from cvfer.runs import FoldFeatures, read_predictions
from cvfer.train import TrainConfig

CLASSES = ["anger", "happiness", "surprise"]


def test_read_predictions_names_and_indices(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("path,label,pred,p_anger,p_happiness,p_surprise\na.mp4,anger,surprise,0.1,0.2,0.7\nb.mp4,1,1,0,1,0\n")
    labels, predictions = read_predictions(path, CLASSES)
    assert labels.tolist() == [0, 1] and predictions.tolist() == [2, 1]
    path.write_text("path,label,pred\na.mp4,joy,anger\n")
    with pytest.raises(CvferError, match="unknown class 'joy'"):
        read_predictions(path, CLASSES)


def test_fold_scores_and_summary_over_folds(tmp_path):
    verification = VerificationResult(auc=0.75, eer=0.3, same_pairs=4, different_pairs=20)
    first = score_fold(0, np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), CLASSES, {"identity_verification": verification})
    second = score_fold(1, np.array([0, 1]), np.array([0, 0]), CLASSES, {"mutual_information": 0.5})
    assert first.war == 0.75 and second.war == 0.5 and second.per_class_recall == [1.0, 0.0, None]
    assert FoldResult.from_dict(json.loads(json.dumps(first.as_dict()))) == first
    older = {key: value for key, value in second.as_dict().items() if not key.startswith("identity_verification")}
    assert FoldResult.from_dict(older) == second  # a fold_metrics.json written before verification existed
    result = CVResult("m", "a", "a", CLASSES, [first, second])
    summary = result.summary()
    assert summary["war"]["mean"] == pytest.approx(0.625)
    assert summary["war"]["std"] == pytest.approx(np.std([0.75, 0.5], ddof=1))
    assert summary["mutual_information"] == {"mean": 0.5, "std": 0.0, "folds": 1}
    assert summary["identity_verification_auc"] == {"mean": 0.75, "std": 0.0, "folds": 1}
    assert summary["identity_verification_auc_zi"]["folds"] == 0
    assert result.summed_confusion().tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    write_metrics(result, tmp_path)
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["per_class_recall"] == [pytest.approx(2 / 3), 0.5, 1.0]
    assert document["folds"][0]["identity_verification"]["auc"] == 0.75
    assert document["folds"][1]["identity_verification"] is None
    assert {"identity_verification_auc", "identity_verification_auc_zi"} <= set(document["summary"])


def test_probe_fold_on_features_with_known_answers():
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(10), 6)
    labels = np.tile(np.arange(3), 20)
    identity = rng.normal(size=(10, 8))[subjects] + 0.05 * rng.normal(size=(60, 8))
    expression = np.concatenate([identity, np.eye(3)[labels]], axis=1)  # z_E leaks identity
    features = FoldFeatures(expression, identity, labels, subjects.astype(str), subjects >= 8)
    probes = probe_fold(features, mine_steps=150)
    assert probes["identity_probe"].accuracy > 0.9 and probes["identity_probe"].chance == pytest.approx(0.1)
    # Verification on the test clips only (subjects 8 and 9, six clips each: labels 0-2 twice), pairs of
    # different expressions only: 15 - 3 same-subject pairs per subject, 36 - 12 different-subject pairs.
    verification, ceiling = probes["identity_verification"], probes["identity_verification_zi"]
    assert verification.same_pairs == 2 * 12 and verification.different_pairs == 24
    assert verification.auc > 0.9 and ceiling.auc > 0.9
    assert probes["expression_from_identity"].accuracy <= 0.75  # z_I holds no expression
    assert probes["mutual_information"] > 0.3
    assert probes["mutual_information_null"] < probes["mutual_information"] - 0.3
    without_identity = probe_fold(FoldFeatures(expression, None, labels, subjects.astype(str), subjects >= 8))
    assert without_identity["mutual_information"] is None and without_identity["mutual_information_null"] is None
    assert without_identity["expression_from_identity"] is None and without_identity["identity_verification_zi"] is None
    # Two clips per subject (CK+-like): the probe is not computed, verification still is.
    few = probe_fold(FoldFeatures(expression[:20], None, labels[:20], np.repeat(np.arange(10), 2).astype(str),
                                  np.arange(20) >= 12))
    assert few["identity_probe"] is None and few["identity_verification"].same_pairs == 4


def test_sweep_parsing_and_table():
    assert parse_sweep("alpha=0, 0.05,0.1") == ("alpha", ["0", "0.05", "0.1"])
    with pytest.raises(ConfigError, match="bad sweep"):
        parse_sweep("alpha")
    config = TrainConfig(model="mic")
    assert config_with(config, "alpha", "0.2").model_cfg == {"alpha": 0.2}
    assert config_with(config, "epochs", "3").epochs == 3
    row = {"mean": 0.5, "std": 0.1, "folds": 2}
    nan = {"mean": float("nan"), "std": float("nan"), "folds": 0}
    table = sweep_table(
        [{"option": "alpha", "value": "0.1", "war": row, "uar": row, "macro_f1": row,
          "identity_probe_accuracy": row, "mutual_information": nan, "mutual_information_null": nan}]
    )  # a sweep.json row from before identity verification
    assert "| alpha |" in table and "| 0.1 | 50.00 ± 10.00 |" in table and table.endswith("| – | – | – |")
    auc = {"mean": 0.6, "std": 0.05, "folds": 2}
    table = sweep_table(
        [{"option": "alpha", "value": "0.1", "war": row, "uar": row, "macro_f1": row, "identity_probe_accuracy": nan,
          "identity_verification_auc": auc, "identity_verification_auc_zi": row,
          "mutual_information": nan, "mutual_information_null": nan}]
    )
    assert "| identity AUC (z_E) |" in table and "| – | 0.60 ± 0.05 (z_I 0.50 ± 0.10) | – | – |" in table


def test_sweep_names_are_checked_like_preset_keys():
    config = TrainConfig(model="mic")
    with pytest.raises(ConfigError, match=r"unknown options \['alpah'\] for model 'mic'"):
        config_with(config, "alpah", "0.1")
    assert config_with(config, "model.alpah", "1").model_cfg == {"alpah": 1}  # explicit model options go to the model
    assert config_with(TrainConfig(model="cnn-lstm"), "hidden_size", "64").model_cfg == {"hidden_size": 64}
    with pytest.raises(ConfigError, match="bad sweep 'alpha=': no values"):
        parse_sweep("alpha=")


def test_shared_classes_keep_training_order():
    assert shared_classes(["anger", "fear", "happiness"], ["happiness", "anger", "neutral"]) == ["anger", "happiness"]
    with pytest.raises(DatasetError, match="no class in common"):
        shared_classes(["anger"], ["fear"])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from cvfer.data.synthetic import generate_benchmark

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_benchmark(root, preset="tiny", seed=0, progress=False)
    return root


def _cv_arguments(data, out):
    return ["cv", "--data", str(data), "--model", "cnn-lstm", "--folds", "2", "--epochs", "1", "--batch-size", "8",
            "--num-frames", "2", "--threads", "1", "--set", "model.input_size=32", "--mine-steps", "50",
            "--out", str(out)]


@pytest.mark.slow
def test_cv_end_to_end_resume_and_cross_dataset(tiny_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(_cv_arguments(tiny_data, run)) == 0
    assert "war:" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert [fold["fold"] for fold in metrics["folds"]] == [0, 1]
    assert sum(fold["num_samples"] for fold in metrics["folds"]) == np.sum(metrics["confusion"]) == 14
    assert metrics["folds"][0]["identity_probe"]["chance"] > 0
    assert "identity_verification_auc" in metrics["summary"]  # None per fold here: each tests one subject
    assert (run / "confusion.png").is_file()
    for fold in ("fold_00", "fold_01"):
        assert {"model.pt", "checkpoint.pt", "predictions.csv", "features.npz", "fold_metrics.json"} <= {
            path.name for path in (run / fold).iterdir()
        }

    # A finished fold is skipped; a fold with only a checkpoint resumes; a trained but unscored fold is scored.
    calls = []

    def fake_train(config, data_dir, fold, out_dir, resume=False):
        calls.append((fold, resume))
        shutil.copy(run / "fold_00" / "model.pt", out_dir / "model.pt")

    monkeypatch.setattr("cvfer.train.train", fake_train)
    (run / "fold_01" / "fold_metrics.json").unlink()
    (run / "fold_01" / "model.pt").unlink()
    config = TrainConfig.from_dict(json.loads((run / "cv.json").read_text())["train_config"])
    result = run_cv(tiny_data, config, run, num_folds=2, mine_steps=20)
    assert calls == [(1, True)]
    assert result.folds[0].war == metrics["folds"][0]["war"]
    with pytest.raises(ConfigError, match="train_config.epochs"):
        run_cv(tiny_data, config.replace(epochs=5), run, num_folds=2)

    # Cross-dataset: the trained folds tested on a dataset labelling only two of the classes.
    other = tmp_path / "other"
    manifest = read_manifest(tiny_data)
    kept = [clip for clip in manifest.clips if clip.label in ("happiness", "anger")]
    other.mkdir()
    (other / "clips").symlink_to(tiny_data / "clips")
    write_manifest(other, kept, ["happiness", "anger", "neutral"], {"source": "test"})
    write_splits(other, subject_kfold(read_manifest(other), k=2, seed=0))
    cross = tmp_path / "cross"
    for fold in ("fold_00", "fold_01"):
        shutil.copytree(run / fold, cross / fold, ignore=shutil.ignore_patterns("fold_metrics.json"))
    # Folds trained with other options are not reused silently (here: copied in without a cv.json).
    with pytest.raises(ConfigError, match="was trained with other settings"):
        run_cv(tiny_data, TrainConfig(model="cnn-lstm", num_frames=2), cross, num_folds=2, test_data=other)
    result = run_cv(tiny_data, config, cross, num_folds=2, test_data=other, mine_steps=20)
    assert result.classes == ["anger", "happiness"]
    assert sum(fold.num_samples for fold in result.folds) == len(kept)
    assert json.loads((cross / "metrics.json").read_text())["test_data"] == str(other)


def test_cv_rejects_more_folds_than_the_splits_hold(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="splits.json has 6"):
        run_cv(tiny_data, TrainConfig(model="cnn-lstm"), tmp_path, num_folds=7)


def test_cv_and_sweep_refuse_an_out_that_is_a_file_before_any_work(tiny_data, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main(_cv_arguments(tiny_data, taken)) != 0
    assert "--out is an existing file, not a folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--out is an existing file"):
        run_sweep(tiny_data, TrainConfig(model="cnn-lstm"), taken, "lr=0.1")
    assert taken.read_text() == "not a folder"


def test_run_sweep_runs_each_value_in_its_folder(tmp_path, monkeypatch):
    seen = []

    def fake_run_cv(data_dir, config, out_dir, **options):
        seen.append((config.model_cfg["alpha"], out_dir.name, options["num_folds"]))
        fold = score_fold(0, np.array([0, 1]), np.array([0, int(config.model_cfg["alpha"] > 0.05)]), CLASSES, {})
        return CVResult("mic", str(data_dir), str(data_dir), CLASSES, [fold])

    monkeypatch.setattr("cvfer.eval.protocol.run_cv", fake_run_cv)
    from cvfer.eval.protocol import run_sweep

    rows = run_sweep("data", TrainConfig(model="mic"), tmp_path, "alpha=0,0.1", num_folds=1)
    assert seen == [(0, "alpha=0", 1), (0.1, "alpha=0.1", 1)]
    assert [row["war"]["mean"] for row in rows] == [0.5, 1.0]
    assert "| 0.1 | 100.00 ± 0.00 |" in (tmp_path / "sweep.md").read_text()
    assert json.loads((tmp_path / "sweep.json").read_text())[0]["value"] == "0"
