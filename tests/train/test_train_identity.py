"""Training the synthetic face recognisers and the cache `resolve_identity_weights` keeps them in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cvfer.eval.probes import verification_auc
from cvfer.models.identity import IdentityNet, SyntheticIdentityEncoder, load_identity_encoder
from cvfer.train import identity
from cvfer.train.identity import fit_identity_network, resolve_identity_weights, train_synthetic_identity_encoder


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
    reused = load_identity_encoder(resolve_identity_weights("synthetic"))
    assert reused.name == "synthetic" and reused.dim == 128


def test_resolve_gives_paths_as_they_are_and_trains_synthetic_weights_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CVFER_CACHE", str(tmp_path))
    assert resolve_identity_weights(tmp_path / "mine.pt", "tfen-face") == tmp_path / "mine.pt"
    trained: list[Path] = []

    def fake_training(path: Path) -> None:
        trained.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    monkeypatch.setattr(identity, "train_tfen_face_recogniser", fake_training)
    path = resolve_identity_weights("synthetic", "tfen-face")
    assert path == tmp_path / "identity" / identity.TFEN_FACE_CHECKPOINT_NAME and trained == [path]
    assert resolve_identity_weights("synthetic", "tfen-face") == path and trained == [path]  # cached


def test_the_trainer_resolves_tfen_face_weights_and_model_pt_does_without(fake_data, make_config, tmp_path, monkeypatch):
    """`face_weights="synthetic"` is trained into the cache before TFEN is built; config.json keeps the spec,
    model.pt's cfg leaves it out (F's weights are in its state dict), so `load_model` needs no cache."""
    import cvfer.models.tfen  # noqa: F401  (registers the models)
    from cvfer.eval.predict import load_model
    from cvfer.io import atomic_torch_save
    from cvfer.models.identity import SEResNetIdentityNet
    from cvfer.train import train

    monkeypatch.setenv("CVFER_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = SEResNetIdentityNet().state_dict()
    monkeypatch.setattr(identity, "train_tfen_face_recogniser", lambda path: atomic_torch_save(path, {"state_dict": weights}))
    config = make_config(model="tfen-no-adversary", epochs=1, model_cfg={"face_weights": "synthetic"})
    result = train(config, fake_data, 0, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_cfg"] == {"face_weights": "synthetic"}
    assert "face_weights" not in torch.load(result.model_path, weights_only=True)["cfg"]
    monkeypatch.setenv("CVFER_CACHE", str(tmp_path / "elsewhere"))
    face = load_model(result.model_path).module.face_extractor
    assert torch.equal(face[0][0].weight, weights["backbone.stem.0.weight"])
