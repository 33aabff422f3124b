"""The run folder: its layout, and every shared format read back as written (names and bytes as before)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cvfer.errors import CheckpointError, ConfigError, CvferError
from cvfer.runs import (
    CHECKPOINT_PT,
    FEATURES_NPZ,
    MODEL_PT,
    PREDICTIONS_CSV,
    SplitFeatures,
    fold_dir,
    fold_dirs,
    fold_is_trained,
    load_inference_model,
    read_features,
    read_history,
    read_metrics_document,
    read_predictions,
    read_run_record,
    save_inference_model,
    write_features,
    write_history,
    write_predictions,
    write_run_record,
)

CLASSES = ["anger", "happiness", "surprise"]


def test_layout(tmp_path):
    for fold in (1, 0, 12):
        fold_dir(tmp_path, fold).mkdir()
    (tmp_path / "fold_notes.txt").write_text("")
    assert [path.name for path in fold_dirs(tmp_path)] == ["fold_00", "fold_01", "fold_12"]
    run = fold_dir(tmp_path, 0)
    for name in (MODEL_PT, PREDICTIONS_CSV):
        (run / name).write_bytes(b"")
    assert not fold_is_trained(run)
    (run / FEATURES_NPZ).write_bytes(b"")
    assert fold_is_trained(run)


def test_predictions_csv_as_before(tmp_path):
    path = tmp_path / PREDICTIONS_CSV
    probabilities = np.array([[0.1, 0.2, 0.7], [0.25, 0.5, 0.25]])
    write_predictions(path, ["clips/a.mp4", "clips/b.mp4"], [0, 1], probabilities, CLASSES)
    assert path.read_text() == (
        "path,label,pred,p_anger,p_happiness,p_surprise\n"
        "clips/a.mp4,anger,surprise,0.100000,0.200000,0.700000\n"
        "clips/b.mp4,happiness,happiness,0.250000,0.500000,0.250000\n"
    )
    labels, predictions = read_predictions(path, CLASSES)
    assert labels.tolist() == [0, 1] and predictions.tolist() == [2, 1]


def test_features_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    train = SplitFeatures(rng.normal(size=(4, 3)), np.array([0, 1, 2, 0]), ["s1", "s1", "s2", "s2"], list("abcd"))
    test = SplitFeatures(rng.normal(size=(2, 3)), np.array([1, 2]), ["s3", "s3"], list("ef"))
    write_features(tmp_path / FEATURES_NPZ, CLASSES, train, test)
    with np.load(tmp_path / FEATURES_NPZ) as archive:
        assert archive.files == ["classes", *(f"{split}_{kind}" for split in ("train", "test")
                                             for kind in ("features", "labels", "subjects", "paths"))]
        assert archive["train_features"].dtype == np.float32
    features = read_features(tmp_path / FEATURES_NPZ)
    assert features.identity is None and features.classes == CLASSES
    assert features.labels.tolist() == [0, 1, 2, 0, 1, 2] and features.is_test.tolist() == [False] * 4 + [True] * 2
    np.testing.assert_allclose(features.expression[4:], test.features.astype(np.float32))
    with_identity = SplitFeatures(train.features, train.labels, train.subjects, train.paths, np.ones((4, 2)))
    write_features(tmp_path / FEATURES_NPZ, CLASSES, with_identity, test)
    assert read_features(tmp_path / FEATURES_NPZ).identity is None  # z_I of only one split is not usable


def test_history_round_trip(tmp_path):
    write_history(tmp_path, [{"epoch": 1, "ce": 1.5}, {"epoch": 2, "ce": 1.0, "test_war": 0.5}])
    assert (tmp_path / "history.csv").read_text() == "epoch,ce,test_war\n1,1.5,\n2,1.0,0.5\n"
    history = read_history(tmp_path / "history.csv")
    assert history["ce"].tolist() == [1.5, 1.0] and np.isnan(history["test_war"][0])


def test_model_pt_round_trip_and_errors(tmp_path):
    module = torch.nn.Linear(2, 3)
    path = tmp_path / MODEL_PT
    save_inference_model(path, name="m", cfg={"num_classes": 3}, classes=CLASSES, module=module, data={"image_size": 8})
    checkpoint = load_inference_model(path)
    assert checkpoint["name"] == "m" and checkpoint["classes"] == CLASSES and checkpoint["data"] == {"image_size": 8}
    assert torch.equal(checkpoint["state_dict"]["weight"], module.weight.detach())
    torch.save({"version": 1}, tmp_path / CHECKPOINT_PT)
    with pytest.raises(CheckpointError, match=r"not an inference checkpoint .* \(give model.pt, not checkpoint.pt\)"):
        load_inference_model(tmp_path / CHECKPOINT_PT)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 3] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"model\.pt: corrupt: checksum mismatch.*--resume.*rewrites model\.pt"):
        load_inference_model(path)


def test_run_record_and_metrics_errors_name_the_file(tmp_path):
    assert read_run_record(tmp_path / "cv.json") is None
    write_run_record(tmp_path / "cv.json", {"seed": 0})
    assert read_run_record(tmp_path / "cv.json") == {"seed": 0}
    (tmp_path / "cv.json").write_text("[1]")
    with pytest.raises(ConfigError, match="cv.json: is unreadable"):
        read_run_record(tmp_path / "cv.json")
    with pytest.raises(CvferError, match="no metrics.json; not a finished cross-validation run"):
        read_metrics_document(tmp_path / "metrics.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"classes": CLASSES}))
    with pytest.raises(CvferError, match="metrics.json: malformed"):
        read_metrics_document(tmp_path / "metrics.json")
