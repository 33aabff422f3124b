"""How much a frozen feature knows about a factor it should not encode.

- Identity leakage (MIC Table 2): a linear probe on z_E predicting the subject, trained on part of each
  subject's clips and tested on the rest; and MI(z_E; z_I) re-estimated after training by a freshly
  trained MINE statistics network on held features.
- Identity verification: same- vs different-subject ROC-AUC of pairs of clips scored by the cosine similarity
  of their features, which needs no training and works with two clips per subject (and unseen subjects);
  `verification_auc` scores a face recogniser f_I the same way on face images of held-out people.
- Expression from z_I (MIC Table 9): the same linear probe, predicting the expression from z_I.
Every accuracy comes with its chance level (uniform guessing) and the majority-class baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cvfer.errors import ConfigError

if TYPE_CHECKING:
    from cvfer.models.identity import IdentityEncoder


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


MIN_TEST_CLIPS_PER_SUBJECT = 2  # fewer held-out clips per subject, on average, and the probe's accuracy means nothing


def identity_probe(features: np.ndarray, subjects: Sequence[object], *, test_fraction: float = 0.5, seed: int = 0) -> ProbeResult:
    """Subject recognition from frozen features (MIC Table 2, first metric), per-subject split.

    Raises ValueError where the split cannot support a probe: no subject with two clips, fewer than
    `MIN_TEST_CLIPS_PER_SUBJECT` held-out clips per subject on average, or more subjects than half the
    training clips (e.g. CK+, ~2.6 clips per subject). `identity_verification` still measures identity there.
    """
    train_indices, test_indices = per_subject_split(subjects, test_fraction, seed)
    if len(test_indices) == 0:
        raise ValueError("no subject has two clips, so identity cannot be probed")
    subjects_array = np.asarray(subjects)
    test_clips_per_subject = len(test_indices) / len(np.unique(subjects_array[test_indices]))
    if test_clips_per_subject < MIN_TEST_CLIPS_PER_SUBJECT:
        raise ValueError(
            f"{test_clips_per_subject:.1f} held-out clips per subject (fewer than {MIN_TEST_CLIPS_PER_SUBJECT}): "
            "too few for a linear identity probe; use identity_verification"
        )
    num_train_subjects = len(np.unique(subjects_array[train_indices]))
    if num_train_subjects > len(train_indices) / 2:
        raise ValueError(
            f"{num_train_subjects} subjects in {len(train_indices)} training clips: too few clips per subject "
            "for a linear identity probe; use identity_verification"
        )
    features = np.asarray(features)
    return linear_probe(
        features[train_indices], subjects_array[train_indices], features[test_indices], subjects_array[test_indices], seed=seed
    )


@dataclass(frozen=True)
class VerificationResult:
    """Same- vs different-subject verification over pairs of clips (or face images): 0.5 = no identity, 1.0 =
    fully recoverable."""

    auc: float  # ROC-AUC of the cosine similarity separating same-subject from different-subject pairs
    eer: float  # equal error rate: where false accepts and false rejects are equally frequent
    same_pairs: int
    different_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON."""
        return asdict(self)


def identity_verification(
    features: np.ndarray,
    subjects: Sequence[object],
    *,
    labels: Sequence[object] | None = None,
    max_pairs: int = 100_000,
    seed: int = 0,
    standardised: bool = True,
) -> VerificationResult:
    """How well cosine similarity of features tells whether two clips show the same subject (ROC-AUC, EER).

    Features are standardised with the mean and std of all rows given (as `standardise`, constant dimensions
    only centred; kept as given with `standardised=False`), then compared by cosine similarity. Every
    same-subject pair and every different-subject pair is scored, except that a kind with more than
    `max_pairs` pairs is replaced by `max_pairs` pairs drawn uniformly (with replacement, seeded). No
    classifier is trained, so it works with two clips per subject and on subjects never trained on; raises
    ValueError with fewer than two subjects or no subject with two rows.
    With `labels` (the expressions), only pairs of clips with different labels are scored: in CK+ a subject's
    clips are all different expressions, so otherwise different-subject pairs with a shared expression would
    look alike for a reason that is not identity, and an expression feature would read below 0.5.
    """
    features = np.asarray(features, dtype=np.float64)
    _, codes = np.unique(np.asarray(subjects), return_inverse=True)
    if len(features) != len(codes):
        raise ValueError(f"{len(features)} feature rows but {len(codes)} subjects")
    counts = np.bincount(codes)
    if len(counts) < 2:
        raise ValueError(f"{len(counts)} subject(s): verification needs at least two")
    if counts.max() < 2:
        raise ValueError("no subject has two rows, so there is no same-subject pair to verify")
    if standardised:
        features = _fitted_scaler(features).transform(features)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit_rows = features / np.maximum(norms, np.finfo(np.float64).tiny)  # an all-constant row scores 0
    rng = np.random.default_rng(seed)
    same = _same_subject_pairs(codes, max_pairs, rng)
    different = _different_subject_pairs(codes, max_pairs, rng)
    if labels is not None:
        label_array = np.asarray(labels)
        if len(label_array) != len(codes):
            raise ValueError(f"{len(codes)} subjects but {len(label_array)} labels")
        same, different = (pairs[label_array[pairs[:, 0]] != label_array[pairs[:, 1]]] for pairs in (same, different))
        if not len(same) or not len(different):
            raise ValueError("no same-subject or no different-subject pair of clips with different labels")
    scores = np.concatenate([_cosine_similarities(unit_rows, same), _cosine_similarities(unit_rows, different)])
    is_same = np.concatenate([np.ones(len(same), bool), np.zeros(len(different), bool)])
    false_accepts, true_accepts, _ = roc_curve(is_same, scores)
    false_rejects = 1.0 - true_accepts
    crossing = int(np.argmin(np.abs(false_rejects - false_accepts)))
    return VerificationResult(
        auc=float(roc_auc_score(is_same, scores)),
        eer=float((false_accepts[crossing] + false_rejects[crossing]) / 2),
        same_pairs=len(same),
        different_pairs=len(different),
    )


def verification_auc(encoder: IdentityEncoder, images: np.ndarray, identity_ids: np.ndarray) -> VerificationResult:
    """A face recogniser's verification: ROC-AUC and EER of the cosine similarity of its features (as encoded,
    not standardised) for same- vs different-identity pairs, every pair of `images` scored."""
    identity_ids = np.asarray(identity_ids)
    if len(images) != len(identity_ids) or len(np.unique(identity_ids)) < 2:
        raise ConfigError(
            f"verification needs one id per image and at least two identities (got {len(images)} images, "
            f"{len(identity_ids)} ids, {len(np.unique(identity_ids))} identities)"
        )
    if np.unique(identity_ids, return_counts=True)[1].max() < 2:
        raise ConfigError("verification needs at least two images of some identity")
    every_pair = len(identity_ids) ** 2
    return identity_verification(encoder.encode(images), identity_ids, max_pairs=every_pair, standardised=False)


def _grouped_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row indices sorted by subject, rows per subject, where each subject's block starts in that order)."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    return order, counts, np.cumsum(counts) - counts


def _same_subject_pairs(codes: np.ndarray, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) row indices of same-subject pairs: all of them, or `max_pairs` drawn uniformly if more."""
    order, counts, starts = _grouped_rows(codes)
    pair_counts = counts * (counts - 1) // 2
    if pair_counts.sum() <= max_pairs:
        blocks = [order[start + np.stack(np.triu_indices(count, 1), axis=1)] for start, count in zip(starts, counts)]
        return np.concatenate(blocks)
    subject = rng.choice(len(counts), size=max_pairs, p=pair_counts / pair_counts.sum())
    first = rng.integers(counts[subject])
    second = rng.integers(counts[subject] - 1)
    second += second >= first  # another row of the same subject
    return np.stack([order[starts[subject] + first], order[starts[subject] + second]], axis=1)


def _different_subject_pairs(codes: np.ndarray, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) row indices of different-subject pairs: all of them, or `max_pairs` drawn uniformly if more."""
    order, counts, starts = _grouped_rows(codes)
    ends = starts + counts
    if (len(codes) ** 2 - np.sum(counts**2)) // 2 <= max_pairs:
        blocks = [  # each subject's rows against the rows of every later subject
            np.stack(np.meshgrid(order[start:end], order[end:], indexing="ij"), axis=-1).reshape(-1, 2)
            for start, end in zip(starts, ends)
        ]
        return np.concatenate(blocks)
    others = len(codes) - counts[codes]  # rows of other subjects, for each row
    first = rng.choice(len(codes), size=max_pairs, p=others / others.sum())
    subject = codes[first]
    position = rng.integers(len(codes) - counts[subject])
    position += np.where(position >= starts[subject], counts[subject], 0)  # skip the first row's own subject
    return np.stack([first, order[position]], axis=1)


def _cosine_similarities(unit_rows: np.ndarray, pairs: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Dot products of the paired unit rows, a chunk of pairs at a time to bound memory."""
    chunks = [pairs[start : start + chunk] for start in range(0, len(pairs), chunk)]
    return np.concatenate([np.einsum("ij,ij->i", unit_rows[part[:, 0]], unit_rows[part[:, 1]]) for part in chunks])


def standardise(fit: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both parts scaled by the mean and std of `fit`. A dimension whose spread on `fit` is below float32
    resolution (1e-6 of its magnitude) is constant, e.g. a saturated LSTM unit: it is only centred, so a
    rounding-level change on `held` cannot become a huge standardised value."""
    scaler = _fitted_scaler(fit)
    return scaler.transform(fit), scaler.transform(held)


def _fitted_scaler(fit: np.ndarray) -> StandardScaler:
    """A `StandardScaler` fitted on `fit` that only centres dimensions constant there (see `standardise`)."""
    scaler = StandardScaler().fit(fit)
    floor = 1e-6 * np.maximum(1.0, np.abs(scaler.mean_))
    scaler.scale_ = np.where(scaler.scale_ < floor, 1.0, scaler.scale_)
    return scaler


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
