"""Probes on synthetic features where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from cvfer.errors import ConfigError
from cvfer.eval.probes import (
    identity_probe,
    identity_verification,
    linear_probe,
    mutual_information_estimate,
    per_subject_split,
    standardise,
    verification_auc,
)
from cvfer.models.identity import IdentityEncoder

NUM_SUBJECTS, CLIPS_PER_SUBJECT, DIM = 12, 6, 16


def _subjects() -> np.ndarray:
    return np.repeat(np.arange(NUM_SUBJECTS), CLIPS_PER_SUBJECT)


def test_per_subject_split_keeps_every_subject_on_both_sides():
    subjects = np.array([0, 0, 0, 0, 1, 1, 2])  # subject 2 has one clip: training only
    train, test = per_subject_split(subjects, test_fraction=0.5, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(7))
    assert set(subjects[test]) == {0, 1} and set(subjects[train]) == {0, 1, 2}
    assert (subjects[test] == 0).sum() == 2 and (subjects[test] == 1).sum() == 1


def test_identity_probe_finds_identity_when_features_hold_it():
    rng = np.random.default_rng(0)
    subjects = _subjects()
    identity_codes = rng.normal(size=(NUM_SUBJECTS, DIM))
    features = identity_codes[subjects] + 0.3 * rng.normal(size=(len(subjects), DIM))
    result = identity_probe(features, subjects)
    assert result.chance == pytest.approx(1 / NUM_SUBJECTS)
    assert result.accuracy > 0.9
    assert result.num_train + result.num_test == len(subjects)


def test_identity_probe_is_near_chance_without_identity():
    rng = np.random.default_rng(1)
    subjects = _subjects()
    expressions = np.tile(np.arange(CLIPS_PER_SUBJECT), NUM_SUBJECTS)  # expression only, same for everyone
    features = np.eye(CLIPS_PER_SUBJECT)[expressions] @ rng.normal(size=(CLIPS_PER_SUBJECT, DIM))
    features = features + 0.3 * rng.normal(size=features.shape)
    result = identity_probe(features, subjects)
    assert result.accuracy < 3 * result.chance


def test_linear_probe_expression_from_identity_feature_is_at_chance():
    # Table 9: z_I built from identity only cannot tell expressions of unseen subjects apart.
    rng = np.random.default_rng(2)
    subjects = _subjects()
    labels = np.tile(np.arange(CLIPS_PER_SUBJECT), NUM_SUBJECTS)
    z_identity = rng.normal(size=(NUM_SUBJECTS, DIM))[subjects]
    train = subjects < 8
    result = linear_probe(z_identity[train], labels[train], z_identity[~train], labels[~train])
    assert result.accuracy < 2.5 * result.chance
    z_expression = np.eye(CLIPS_PER_SUBJECT)[labels] + 0.1 * rng.normal(size=(len(labels), CLIPS_PER_SUBJECT))
    assert linear_probe(z_expression[train], labels[train], z_expression[~train], labels[~train]).accuracy == 1.0


def test_linear_probe_single_training_class_and_errors():
    result = linear_probe(np.zeros((3, 2)), [1, 1, 1], np.zeros((2, 2)), [1, 0])
    assert result.accuracy == 0.5 and result.majority == 0.5 and result.chance == 0.5
    with pytest.raises(ValueError, match="no subject has two clips"):
        identity_probe(np.zeros((3, 2)), [0, 1, 2])


def test_identity_probe_refuses_few_clips_per_subject():
    # CK+-like: two clips per subject leave one held-out clip each, and as many classes as training clips.
    subjects = np.repeat(np.arange(NUM_SUBJECTS), 2)
    with pytest.raises(ValueError, match="1.0 held-out clips per subject.*use identity_verification"):
        identity_probe(np.random.default_rng(0).normal(size=(len(subjects), DIM)), subjects)


def test_identity_verification_is_perfect_when_features_encode_the_subject():
    subjects = np.repeat(np.arange(NUM_SUBJECTS), 2)  # two clips each: too few for the probe, enough here
    features = np.eye(NUM_SUBJECTS)[subjects]
    result = identity_verification(features, subjects.astype(str))
    assert result.auc == pytest.approx(1.0) and result.eer == pytest.approx(0.0)
    assert result.same_pairs == NUM_SUBJECTS and result.different_pairs == (24 * 23 // 2) - NUM_SUBJECTS
    assert set(result.as_dict()) == {"auc", "eer", "same_pairs", "different_pairs"}


def test_identity_verification_is_near_half_for_features_independent_of_subject():
    rng = np.random.default_rng(5)
    subjects = np.repeat(np.arange(40), 5)
    result = identity_verification(rng.normal(size=(len(subjects), DIM)), subjects, seed=1)
    assert result.auc == pytest.approx(0.5, abs=0.05) and result.eer == pytest.approx(0.5, abs=0.05)
    capped = identity_verification(rng.normal(size=(len(subjects), DIM)), subjects, max_pairs=300, seed=1)
    assert capped.same_pairs == capped.different_pairs == 300  # 400 same and 19,600 different pairs, sampled
    assert capped.auc == pytest.approx(0.5, abs=0.1)


def test_identity_verification_with_labels_does_not_read_expression_as_identity():
    # CK+-like: each subject shows 3 different expressions; the features hold the expression only.
    rng = np.random.default_rng(2)
    subjects = np.repeat(np.arange(30), 3)
    labels = np.concatenate([rng.permutation(7)[:3] for _ in range(30)])
    features = np.eye(7)[labels] + rng.normal(scale=0.1, size=(len(labels), 7))
    confounded = identity_verification(features, subjects, seed=0)
    fair = identity_verification(features, subjects, labels=labels, seed=0)
    assert confounded.auc < 0.45  # shared expressions make different people look alike
    assert fair.auc == pytest.approx(0.5, abs=0.05) and fair.same_pairs == 90
    with pytest.raises(ValueError, match="different labels"):
        identity_verification(features, subjects, labels=np.zeros(len(labels)))


def test_identity_verification_needs_two_subjects_and_a_repeated_one():
    with pytest.raises(ValueError, match="needs at least two"):
        identity_verification(np.zeros((3, 2)), ["a", "a", "a"])
    with pytest.raises(ValueError, match="no subject has two rows"):
        identity_verification(np.zeros((3, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 feature rows but 2 subjects"):
        identity_verification(np.zeros((3, 2)), ["a", "a"])


class _OneHotEncoder(IdentityEncoder):
    """Encodes each image as the one-hot of a hidden id (a perfect recogniser), or noise when `noise`."""

    name, dim = "one-hot", 8

    def __init__(self, ids: np.ndarray, noise: bool = False):
        self.ids, self.noise = ids, noise

    def encode(self, images: np.ndarray) -> np.ndarray:
        if self.noise:
            return np.random.default_rng(0).normal(size=(len(images), self.dim)).astype(np.float32)
        return np.eye(self.dim, dtype=np.float32)[self.ids[: len(images)]]


def test_verification_auc_is_one_for_a_perfect_encoder_and_chance_for_noise() -> None:
    ids = np.repeat(np.arange(5), 6)
    images = np.zeros((len(ids), 4, 4, 3), np.uint8)
    perfect = verification_auc(_OneHotEncoder(ids), images, ids)
    assert perfect.auc == 1.0 and perfect.eer == 0.0
    assert perfect.same_pairs == 5 * 15 and perfect.different_pairs == 30 * 29 // 2 - 75
    noise = verification_auc(_OneHotEncoder(ids, noise=True), images, ids)
    assert 0.35 < noise.auc < 0.65 and noise.eer > 0.3
    with pytest.raises(ConfigError, match="two identities"):
        verification_auc(_OneHotEncoder(ids), images, np.zeros(len(ids)))


def test_standardise_leaves_constant_dimensions_centred_not_blown_up():
    # A saturated LSTM unit: exactly 1.0 on the fitting clips, one float32 step below on a held-out one.
    fit = np.column_stack([np.ones(6, np.float32), np.arange(6, dtype=np.float32)]).astype(np.float64)
    held = np.array([[np.nextafter(np.float32(1), np.float32(0)), 2.5]], dtype=np.float64)
    fit_part, held_part = standardise(fit, held)
    assert abs(held_part[0, 0]) < 1e-6 and np.allclose(fit_part[:, 0], 0)
    assert np.allclose(fit_part[:, 1].std(), 1) and held_part[0, 1] == pytest.approx(0.0)


def test_mutual_information_is_high_for_dependent_and_near_zero_for_independent_features():
    rng = np.random.default_rng(4)
    z_identity = rng.normal(size=(300, 4))
    dependent = np.concatenate([z_identity, rng.normal(size=(300, 4))], axis=1) + 0.3 * rng.normal(size=(300, 8))
    independent = rng.normal(size=(300, 8))
    high = mutual_information_estimate(dependent, z_identity, steps=200, hidden=64)
    low = mutual_information_estimate(independent, z_identity, steps=200, hidden=64)
    # True MI of the dependent pair: 4 · ½ log(1 + 1/0.09) ≈ 5 nats; DV on held pairs is a loose lower bound.
    assert high > 1.0
    assert low < 0.2
    with pytest.raises(ValueError, match="too few"):
        mutual_information_estimate(independent[:2], z_identity[:2])
