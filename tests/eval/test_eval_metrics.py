"""Metric functions against cases worked out by hand (and scikit-learn where it defines the same thing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from cvfer.eval.metrics import (
    accuracy,
    classification_summary,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
    mean_std,
    paired_difference,
    per_class_recall,
)

# 3 classes; class 0: 3 samples (2 right), class 1: 1 sample (right), class 2: 2 samples (0 right).
LABELS = [0, 0, 0, 1, 2, 2]
PREDICTIONS = [0, 0, 1, 1, 0, 1]


def test_accuracy_is_fraction_correct():
    assert accuracy(LABELS, PREDICTIONS) == pytest.approx(3 / 6)


def test_confusion_matrix_rows_are_true_classes():
    expected = np.array([[2, 1, 0], [0, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(confusion_matrix(LABELS, PREDICTIONS), expected)
    padded = confusion_matrix(LABELS, PREDICTIONS, num_classes=4)
    assert padded.shape == (4, 4) and padded[3].sum() == 0 and padded[:3, :3].tolist() == expected.tolist()


def test_recall_and_uar_by_hand():
    np.testing.assert_allclose(per_class_recall(LABELS, PREDICTIONS), [2 / 3, 1.0, 0.0])
    assert mean_class_accuracy(LABELS, PREDICTIONS) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_class_absent_from_fold_is_left_out_of_uar():
    # Class 2 never occurs in this fold's labels nor predictions; class 3 is predicted but absent.
    labels, predictions = [0, 0, 1, 1], [0, 1, 1, 3]
    recall = per_class_recall(labels, predictions, num_classes=4)
    assert recall[:2].tolist() == [0.5, 0.5] and math.isnan(recall[2]) and math.isnan(recall[3])
    assert mean_class_accuracy(labels, predictions, num_classes=4) == pytest.approx(0.5)
    # F1: class 0 = 2·1/(2+0+1) = 2/3, class 1 = 2·1/(2+1+1) = 1/2, class 3 = 0 (predicted, never true).
    assert macro_f1(labels, predictions, num_classes=4) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 5, size=30)
        predictions = rng.integers(0, 5, size=30)
        assert macro_f1(labels, predictions, 5) == pytest.approx(f1_score(labels, predictions, average="macro"))


def test_macro_f1_by_hand():
    # class 0: TP 2, FP 1, FN 1 -> 4/6; class 1: TP 1, FP 2, FN 0 -> 2/4; class 2: TP 0 -> 0.
    assert macro_f1(LABELS, PREDICTIONS) == pytest.approx((4 / 6 + 2 / 4 + 0) / 3)


def test_mean_std_over_folds():
    mean, std = mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    assert mean_std([0.4]) == (0.4, 0.0)
    assert mean_std([0.2, float("nan"), 0.4])[0] == pytest.approx(0.3)
    assert all(math.isnan(v) for v in mean_std([]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="no samples"):
        accuracy([], [])


def test_summary_is_json_ready():
    summary = classification_summary([0, 0, 1], [0, 1, 1], num_classes=3)
    assert summary["per_class_recall"] == [0.5, 1.0, None]
    assert summary["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert summary["num_samples"] == 3 and summary["war"] == pytest.approx(2 / 3)


def test_paired_difference_counts_folds_and_matches_scipy():
    from scipy.stats import wilcoxon

    reference = [0.30, 0.40, 0.50, 0.20, 0.60, float("nan")]
    other = [0.35, 0.40, 0.45, 0.30, 0.70, 0.90]  # the NaN fold is skipped
    paired = paired_difference(reference, other)
    assert paired.mean == pytest.approx((0.05 + 0.0 - 0.05 + 0.10 + 0.10) / 5)
    assert (paired.wins, paired.losses, paired.ties) == (3, 1, 1)
    assert paired.p_value == pytest.approx(wilcoxon([0.05, -0.05, 0.10, 0.10]).pvalue)
    assert math.isnan(paired_difference([0.1, 0.2], [0.1, 0.2]).p_value)  # nothing but ties
    with pytest.raises(ValueError, match="same folds"):
        paired_difference([0.1, 0.2], [0.1])
