"""Identity encoders f_I: the interface, verification metrics, the trainer, checkpoints, dlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cvfer.errors import CheckpointError, ConfigError
from cvfer.models import identity
from cvfer.models.identity import (
    DlibIdentityEncoder,
    IdentityEncoder,
    IdentityNet,
    SyntheticIdentityEncoder,
    fit_identity_network,
    load_identity_encoder,
    train_synthetic_identity_encoder,
    verification_auc,
)


def _pattern_faces(num_identities: int, per_identity: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16×16 images: identity = a fixed 4×4 binary layout; per image a random tint, offset and noise, so
    colour statistics (all an untrained network sees) say little about who it is."""
    layouts = np.random.default_rng(0).integers(0, 2, (num_identities, 4, 4))
    rng = np.random.default_rng(seed)
    images, ids = [], []
    for person in range(num_identities):
        for _ in range(per_identity):
            pattern = np.kron(layouts[person], np.ones((4, 4)))[..., None]
            image = pattern * rng.uniform(0.2, 1.0, 3) * 200 + rng.uniform(0, 55) + rng.normal(0, 10, (16, 16, 3))
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            ids.append(person)
    return np.stack(images), np.array(ids)


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
    assert perfect.positive_pairs == 5 * 15 and perfect.negative_pairs == 30 * 29 // 2 - 75
    noise = verification_auc(_OneHotEncoder(ids, noise=True), images, ids)
    assert 0.35 < noise.auc < 0.65 and noise.eer > 0.3
    with pytest.raises(ConfigError, match="two identities"):
        verification_auc(_OneHotEncoder(ids), images, np.zeros(len(ids)))


def test_fit_identity_network_learns_identity_an_untrained_network_misses() -> None:
    train_images, train_ids = _pattern_faces(8, 12, seed=1)
    test_images, test_ids = _pattern_faces(8, 6, seed=2)
    torch.manual_seed(0)
    untrained = verification_auc(SyntheticIdentityEncoder(IdentityNet(32, 16)), test_images, test_ids)
    network, logs = fit_identity_network(
        train_images, train_ids, dim=32, input_size=16, epochs=15, batch_size=32, progress=False
    )
    trained = verification_auc(SyntheticIdentityEncoder(network), test_images, test_ids)
    assert trained.auc > 0.95 and trained.auc > untrained.auc + 0.1
    assert set(logs) == {"loss", "train_accuracy", "seconds"}


def test_synthetic_encoder_output_is_unit_norm_float32_and_checks_input() -> None:
    torch.manual_seed(0)
    encoder = SyntheticIdentityEncoder(IdentityNet(24, 16), batch_size=3)
    features = encoder.encode(np.random.default_rng(0).integers(0, 256, (7, 20, 20, 3), dtype=np.uint8))
    assert features.shape == (7, 24) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ConfigError, match="uint8"):
        encoder.encode(np.zeros((2, 16, 16, 3), np.float32))


def test_trained_checkpoint_round_trips_and_is_found_by_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "identity.pt"
    encoder = train_synthetic_identity_encoder(
        checkpoint, num_identities=4, per_identity=3, size=16, held_out_identities=2, epochs=1, progress=False
    )
    saved = torch.load(checkpoint, weights_only=True)
    assert 0.0 <= saved["verification"]["auc"] <= 1.0 and saved["training"]["num_identities"] == 4
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(load_identity_encoder(checkpoint).encode(images), encoder.encode(images), atol=1e-6)
    # "synthetic" reuses the cached checkpoint instead of training again.
    monkeypatch.setenv("CVFER_CACHE", str(tmp_path / "cache"))
    cached = identity.identity_cache_dir() / identity.SYNTHETIC_CHECKPOINT_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(checkpoint.read_bytes())
    monkeypatch.setattr(identity, "train_synthetic_identity_encoder", lambda *args, **kwargs: pytest.fail("retrained"))
    reused = load_identity_encoder("synthetic")
    assert reused.name == "synthetic" and reused.dim == 128


def test_bad_specs_and_files_are_cvfer_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither 'dlib', 'synthetic'"):
        load_identity_encoder(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_identity_encoder(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a cvfer identity encoder"):
        load_identity_encoder(foreign)
    mismatched = tmp_path / "mismatched.pt"
    network = IdentityNet(16, 16)
    torch.save(
        {"format": identity.CHECKPOINT_FORMAT, "dim": 32, "input_size": 16, "widths": list(network.widths),
         "state_dict": network.state_dict()},
        mismatched,
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_identity_encoder(mismatched)


def test_dlib_encoder_embeds_faces_and_falls_back_to_the_whole_image() -> None:
    from cvfer.data.synthetic import identity_images

    faces, _ = identity_images(2, 1, 64, seed=0)
    blank = np.full((1, 64, 64, 3), 127, np.uint8)
    encoder = DlibIdentityEncoder()
    features = encoder.encode(np.concatenate([faces, blank]))
    assert features.shape == (3, 128) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    assert encoder.faces_missed >= 1  # the blank image has no face: whole-image box
    assert not np.allclose(features[0], features[1])
