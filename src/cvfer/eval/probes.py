"""How much a frozen feature knows about a factor it should not encode.

- Identity leakage (MIC Table 2): a linear probe on z_E predicting the subject, trained on part of each
  subject's clips and tested on the rest; and MI(z_E; z_I) re-estimated after training by a freshly
  trained MINE statistics network on held features.
- Expression from z_I (MIC Table 9): the same linear probe, predicting the expression from z_I.
Every accuracy comes with its chance level (uniform guessing) and the majority-class baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of a linear probe beside what guessing would score."""

    accuracy: float
    chance: float  # 1 / number of distinct targets in the test set
    majority: float  # accuracy of always answering the most frequent training target
    num_train: int
    num_test: int
    num_classes: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON."""
        return asdict(self)


def per_subject_split(
    subjects: Sequence[object], test_fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) holding out `test_fraction` of each subject's clips (at least one each side).

    Subjects with a single clip can only go to the training side, so every test subject is also seen
    in training: the probe asks "which known subject is this?", as MIC's identity recognition does.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    subjects_array = np.asarray(subjects)
    rng = np.random.default_rng(seed)
    train_indices: list[int] = []
    test_indices: list[int] = []
    for subject in np.unique(subjects_array):
        indices = rng.permutation(np.flatnonzero(subjects_array == subject))
        num_test = min(max(1, round(len(indices) * test_fraction)), len(indices) - 1)
        test_indices.extend(indices[:num_test].tolist())
        train_indices.extend(indices[num_test:].tolist())
    return np.sort(np.asarray(train_indices, dtype=np.int64)), np.sort(np.asarray(test_indices, dtype=np.int64))


def linear_probe(
    train_features: np.ndarray,
    train_targets: Sequence[object],
    test_features: np.ndarray,
    test_targets: Sequence[object],
    *,
    regularization: float = 1.0,
    seed: int = 0,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features; accuracy on the test set."""
    train_targets_array, test_targets_array = np.asarray(train_targets), np.asarray(test_targets)
    if len(train_features) != len(train_targets_array) or len(test_features) != len(test_targets_array):
        raise ValueError("features and targets differ in length")
    if len(test_targets_array) == 0 or len(train_targets_array) == 0:
        raise ValueError("a linear probe needs at least one training and one test sample")
    classes, counts = np.unique(train_targets_array, return_counts=True)
    most_frequent = classes[np.argmax(counts)]
    if len(classes) < 2:
        predictions = np.full(len(test_targets_array), most_frequent)
    else:
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(C=regularization, max_iter=2000, random_state=seed)
        )
        probe.fit(np.asarray(train_features, dtype=np.float64), train_targets_array)
        predictions = probe.predict(np.asarray(test_features, dtype=np.float64))
    return ProbeResult(
        accuracy=float(np.mean(predictions == test_targets_array)),
        chance=1.0 / len(np.unique(test_targets_array)),
        majority=float(np.mean(test_targets_array == most_frequent)),
        num_train=len(train_targets_array),
        num_test=len(test_targets_array),
        num_classes=len(np.unique(np.concatenate([train_targets_array, test_targets_array]))),
    )


def identity_probe(features: np.ndarray, subjects: Sequence[object], *, test_fraction: float = 0.5, seed: int = 0) -> ProbeResult:
    """Subject recognition from frozen features (MIC Table 2, first metric), per-subject split."""
    train_indices, test_indices = per_subject_split(subjects, test_fraction, seed)
    if len(test_indices) == 0:
        raise ValueError("no subject has two clips, so identity cannot be probed")
    subjects_array = np.asarray(subjects)
    features = np.asarray(features)
    return linear_probe(
        features[train_indices], subjects_array[train_indices], features[test_indices], subjects_array[test_indices], seed=seed
    )


def standardise(fit: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both parts scaled by the mean and std of `fit`. A dimension whose spread on `fit` is below float32
    resolution (1e-6 of its magnitude) is constant, e.g. a saturated LSTM unit: it is only centred, so a
    rounding-level change on `held` cannot become a huge standardised value."""
    scaler = StandardScaler().fit(fit)
    floor = 1e-6 * np.maximum(1.0, np.abs(scaler.mean_))
    scaler.scale_ = np.where(scaler.scale_ < floor, 1.0, scaler.scale_)
    return scaler.transform(fit), scaler.transform(held)


def mutual_information_estimate(
    features: np.ndarray,
    identity: np.ndarray,
    *,
    steps: int = 300,
    hidden: int = 128,
    learning_rate: float = 1e-3,
    held_fraction: float = 0.5,
    evaluations: int = 20,
    seed: int = 0,
) -> float:
    """MI(z_E; z_I) in nats, measured after training (MIC Table 2, second metric).

    A fresh MINE statistics network (`cvfer.models.mine.MINE`) is trained full-batch on a random
    `1 - held_fraction` of the (standardised) pairs to maximise the Donsker–Varadhan bound (Eq. 4); the
    bound is then evaluated on the held pairs, averaged over `evaluations` marginal shuffles. Evaluating on
    held pairs keeps the estimator from scoring its own memorisation; a value near or below 0 means no
    dependence was detected.
    """
    import torch

    features, identity = np.asarray(features, dtype=np.float64), np.asarray(identity, dtype=np.float64)
    if len(features) != len(identity):
        raise ValueError(f"{len(features)} z_E rows but {len(identity)} z_I rows")
    order = np.random.default_rng(seed).permutation(len(features))
    num_held = int(round(len(order) * held_fraction))
    held, fit = order[:num_held], order[num_held:]
    if len(held) < 2 or len(fit) < 2:
        raise ValueError(f"{len(features)} pairs are too few to estimate mutual information")

    def standardised(array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        fit_part, held_part = standardise(array[fit], array[held])
        return torch.from_numpy(fit_part).float(), torch.from_numpy(held_part).float()

    (fit_x, held_x), (fit_y, held_y) = standardised(features), standardised(identity)
    torch.manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP on a few hundred rows: more threads only add contention
    try:
        return _fit_and_hold_out(fit_x, fit_y, held_x, held_y, steps, hidden, learning_rate, evaluations, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _fit_and_hold_out(
    fit_x: Any,
    fit_y: Any,
    held_x: Any,
    held_y: Any,
    steps: int,
    hidden: int,
    learning_rate: float,
    evaluations: int,
    seed: int,
) -> float:
    """Train MINE on the fit pairs, return its mean DV bound on the held pairs."""
    import torch

    from cvfer.models.mine import MINE, marginal_permutation

    estimator = MINE(fit_x.shape[1], fit_y.shape[1], hidden=hidden)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=learning_rate)
    estimator.train()
    for step in range(steps):
        permutation = marginal_permutation(len(fit_x), seed, step)
        loss = -estimator.lower_bound(fit_x, fit_y, permutation)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    estimator.eval()
    with torch.no_grad():
        bounds = [
            float(estimator.lower_bound(held_x, held_y, marginal_permutation(len(held_x), seed + 1, index)))
            for index in range(evaluations)
        ]
    return float(np.mean(bounds))
