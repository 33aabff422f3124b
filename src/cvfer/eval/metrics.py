"""Classification metrics as plain functions over label arrays, mmaction2-style.

Conventions: `labels` and `predictions` are 1-D integer arrays of class indices; `num_classes` fixes the
size of per-class outputs so that folds missing a class still line up. A class absent from `labels`
has no recall (NaN in `per_class_recall`) and is left out of the UAR mean; it enters macro-F1 only if it
was predicted (then its F1 is 0), as scikit-learn's `f1_score(average="macro")` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _as_label_arrays(labels: Sequence[int], predictions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    labels_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    predictions_array = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if labels_array.shape != predictions_array.shape:
        raise ValueError(f"labels ({labels_array.size}) and predictions ({predictions_array.size}) differ in length")
    if labels_array.size == 0:
        raise ValueError("no samples to score")
    return labels_array, predictions_array


def _infer_num_classes(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None) -> int:
    needed = int(max(labels.max(), predictions.max())) + 1
    if min(labels.min(), predictions.min()) < 0:
        raise ValueError("class indices must be non-negative")
    if num_classes is None:
        return needed
    if needed > num_classes:
        raise ValueError(f"class index {needed - 1} out of range for {num_classes} classes")
    return num_classes


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Weighted average recall (WAR): the fraction of samples predicted correctly."""
    labels_array, predictions_array = _as_label_arrays(labels, predictions)
    return float(np.mean(labels_array == predictions_array))


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """Counts, `matrix[true, predicted]`, of shape (num_classes, num_classes)."""
    labels_array, predictions_array = _as_label_arrays(labels, predictions)
    num_classes = _infer_num_classes(labels_array, predictions_array, num_classes)
    flat = labels_array * num_classes + predictions_array
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_recall(labels: Sequence[int], predictions: Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """Recall (per-class accuracy) of every class; NaN for classes with no sample in `labels`."""
    matrix = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    support = matrix.sum(axis=1)
    recall = np.full(len(matrix), np.nan)
    present = support > 0
    recall[present] = np.diag(matrix)[present] / support[present]
    return recall


def mean_class_accuracy(labels: Sequence[int], predictions: Sequence[int], num_classes: int | None = None) -> float:
    """Unweighted average recall (UAR): mean recall over the classes present in `labels`."""
    return float(np.nanmean(per_class_recall(labels, predictions, num_classes)))


def macro_f1(labels: Sequence[int], predictions: Sequence[int], num_classes: int | None = None) -> float:
    """Mean F1 over classes that occur in `labels` or `predictions` (F1 = 2TP / (2TP + FP + FN))."""
    matrix = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    true_positive = np.diag(matrix)
    false_positive = matrix.sum(axis=0) - true_positive
    false_negative = matrix.sum(axis=1) - true_positive
    denominator = 2 * true_positive + false_positive + false_negative
    occurring = denominator > 0
    return float(np.mean(2 * true_positive[occurring] / denominator[occurring]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over folds, ignoring NaN."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return float("nan"), float("nan")
    std = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    return float(np.mean(array)), std


@dataclass
class PairedDifference:
    """`other − reference` over folds scored by both: mean difference, wins / losses / ties of `other`, and
    the two-sided Wilcoxon signed-rank p-value (NaN with fewer than two non-tied folds)."""

    mean: float
    wins: int
    losses: int
    ties: int
    p_value: float


def paired_difference(reference: Sequence[float], other: Sequence[float]) -> PairedDifference:
    """Compare two models fold by fold (same folds, same order); folds where either score is NaN are skipped."""
    from scipy.stats import wilcoxon

    first, second = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"paired scores need the same folds, got {first.size} and {second.size}")
    keep = ~(np.isnan(first) | np.isnan(second))
    difference = second[keep] - first[keep]
    if difference.size == 0:
        return PairedDifference(float("nan"), 0, 0, 0, float("nan"))
    tied = np.isclose(difference, 0.0, atol=1e-12)
    p_value = float(wilcoxon(difference[~tied]).pvalue) if (~tied).sum() >= 2 else float("nan")
    wins, losses = int(((difference > 0) & ~tied).sum()), int(((difference < 0) & ~tied).sum())
    return PairedDifference(float(difference.mean()), wins, losses, int(tied.sum()), p_value)


def classification_summary(
    labels: Sequence[int], predictions: Sequence[int], num_classes: int
) -> dict[str, Any]:
    """WAR, UAR, macro-F1, per-class recall (NaN → None) and the confusion matrix, JSON-ready."""
    recall = per_class_recall(labels, predictions, num_classes)
    return {
        "war": accuracy(labels, predictions),
        "uar": mean_class_accuracy(labels, predictions, num_classes),
        "macro_f1": macro_f1(labels, predictions, num_classes),
        "per_class_recall": [None if np.isnan(value) else float(value) for value in recall],
        "confusion": confusion_matrix(labels, predictions, num_classes).tolist(),
        "num_samples": len(np.asarray(labels).reshape(-1)),
    }
