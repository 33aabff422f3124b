"""`cvfer report` on a fake run folder."""

from __future__ import annotations

import numpy as np
import pytest

from cvfer.cli import main
from cvfer.errors import CvferError
from cvfer.eval.probes import ProbeResult
from cvfer.eval.protocol import CVResult, score_fold, write_metrics
from cvfer.eval.report import embed_2d, write_report

CLASSES = ["anger", "happiness", "surprise"]


def _fake_run(root, num_clips: int = 32):
    rng = np.random.default_rng(0)
    probe = ProbeResult(accuracy=0.4, chance=0.25, majority=0.25, num_train=20, num_test=16, num_classes=4)
    folds = [
        score_fold(0, np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), CLASSES,
                   {"identity_probe": probe, "mutual_information": 0.12, "mutual_information_null": 0.01}),
        score_fold(1, np.array([0, 1, 1]), np.array([0, 1, 0]), CLASSES, {"identity_probe": probe}),
    ]
    write_metrics(CVResult("mic", str(root / "data"), str(root / "data"), CLASSES, folds), root)
    (root / "cv.json").write_text('{"train_config": {"model": "mic", "epochs": 2}}')
    for fold in ("fold_00", "fold_01"):
        (root / fold).mkdir()
        (root / fold / "history.csv").write_text("epoch,step,ce,test_war\n1,5,1.2,0.3\n2,10,0.9,0.5\n")
    half = num_clips // 2
    labels = np.arange(num_clips) % 4  # the training dataset's 4 classes; metrics list the 3 shared ones
    subjects = np.repeat([f"S{index}" for index in range(num_clips // 4)], 4)
    features = rng.normal(size=(num_clips, 16)) + 3 * np.eye(16)[labels]
    np.savez(
        root / "fold_00" / "features.npz",
        classes=np.array(["anger", "fear", "happiness", "surprise"]),
        train_features=features[:half], train_labels=labels[:half], train_subjects=subjects[:half],
        test_features=features[half:], test_labels=labels[half:], test_subjects=subjects[half:],
    )


def test_report_on_fake_run(tmp_path, capsys):
    _fake_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    for figure in ("report_confusion.png", "per_class_accuracy.png", "training_curves.png", "embedding_pca.png",
                   "embedding_tsne.png"):
        assert f"]({figure})" in report
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"
    # fold 0: WAR 3/4, fold 1: 2/3; mean 70.83, sample std 5.89
    assert "| 0 | 4 | 75.00 |" in report and "| 1 | 3 | 66.67 |" in report
    assert "70.83 ± 5.89" in report
    assert "40.00 (25.00)" in report and "0.120 (0.010)" in report
    assert "| torch |" in report and "| av |" in report and "| cvfer |" in report
    assert '"epochs": 2' in report


def test_report_skips_tsne_for_few_points(tmp_path):
    _fake_run(tmp_path, num_clips=12)
    report = write_report(tmp_path).read_text()
    assert "embedding_pca.png" in report and "t-SNE skipped" in report


def test_report_needs_a_run_folder(tmp_path):
    with pytest.raises(CvferError, match="no metrics.json"):
        write_report(tmp_path)


def test_embedding_methods():
    points = np.random.default_rng(0).normal(size=(40, 5))
    assert embed_2d(points, "pca").shape == (40, 2)
    with pytest.raises(ValueError, match="unknown embedding"):
        embed_2d(points, "umap")
