"""Training the synthetic face recognisers, the files cvfer ships (cvfer/weights/) and how "synthetic" finds them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cvfer.errors import CheckpointError
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


def test_synthetic_resolves_to_the_shipped_file_or_your_own_and_trains_nothing(tmp_path: Path, monkeypatch) -> None:
    for trainer in ("train_synthetic_identity_encoder", "train_tfen_face_recogniser", "_fit_on_synthetic_identities"):
        monkeypatch.setattr(identity, trainer, lambda *args, **kwargs: pytest.fail("trained on first use"))
    monkeypatch.delenv("CVFER_CACHE", raising=False)
    assert resolve_identity_weights(tmp_path / "mine.pt", "tfen-face") == tmp_path / "mine.pt"
    shipped = identity.shipped_weights_dir()
    assert resolve_identity_weights("synthetic") == shipped / identity.SYNTHETIC_CHECKPOINT_NAME
    assert resolve_identity_weights("synthetic", "tfen-face") == shipped / identity.TFEN_FACE_CHECKPOINT_NAME
    # Your own file of the same name in $CVFER_CACHE/identity replaces the shipped one.
    monkeypatch.setenv("CVFER_CACHE", str(tmp_path))
    own = tmp_path / "identity" / identity.TFEN_FACE_CHECKPOINT_NAME
    own.parent.mkdir()
    own.touch()
    assert resolve_identity_weights("synthetic", "tfen-face") == own
    assert resolve_identity_weights("synthetic") == shipped / identity.SYNTHETIC_CHECKPOINT_NAME
    # A package without its weights names the command that writes them.
    monkeypatch.setattr(identity, "shipped_weights_dir", lambda: tmp_path / "empty")
    with pytest.raises(CheckpointError, match="cvfer weights retrain"):
        resolve_identity_weights("synthetic")


def test_shipped_files_are_small_recorded_and_verify_as_recorded() -> None:
    """Each shipped file is what weights.json describes (size, SHA-256), a few MB at most; f_I verifies the
    held-out identities exactly as recorded; TFEN's file holds F alone (conv1..conv3_x), as float16."""
    record = identity.read_shipped_record()
    assert record["format"] == identity.SHIPPED_RECORD_FORMAT
    for recogniser, name in identity.SHIPPED_FILES.items():
        path = identity.shipped_weights_dir() / name
        entry = record["files"][name]
        assert entry["recogniser"] == recogniser and entry["bytes"] == path.stat().st_size < 3_000_000
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["verification"]["auc"] > 0.99 and entry["training"]["half_precision"]
    f_i = record["files"][identity.SYNTHETIC_CHECKPOINT_NAME]
    encoder = load_identity_encoder(resolve_identity_weights("synthetic"))
    measured = identity.held_out_verification(encoder, f_i["training"], f_i["verification"]["held_out_identities"])
    assert measured == pytest.approx(f_i["verification"]["auc"], abs=1e-4)
    face = torch.load(resolve_identity_weights("synthetic", "tfen-face"), weights_only=True)["state_dict"]
    assert all(key.startswith(identity.FACE_EXTRACTOR_PREFIXES) for key in face)
    assert any(key.startswith("backbone.stages.1.") for key in face)
    assert {value.dtype for value in face.values() if value.is_floating_point()} == {torch.float16}


@pytest.mark.slow
@pytest.mark.parametrize("recogniser", list(identity.SHIPPED_FILES))
def test_a_reduced_retrain_matches_the_figure_recorded_beside_the_weights(recogniser) -> None:
    """The shipped recipe's code, at the reduced size weights.json records, verifies as well as it did when the
    shipped files were trained (`cvfer weights retrain` records the figure; a full retrain takes 20+ minutes)."""
    torch.set_num_threads(1)
    check = identity.read_shipped_record()["files"][identity.SHIPPED_FILES[recogniser]]["reduced_check"]
    auc = identity.reduced_check_auc(recogniser, check["options"])
    assert auc == pytest.approx(check["auc"], abs=identity.REDUCED_CHECK_TOLERANCE)


def test_retrain_writes_files_and_record_that_resolve_and_list_use(tmp_path, monkeypatch, capsys) -> None:
    """`cvfer weights retrain --out DIR` at a tiny size (the recipe patched down) writes both files and the
    record; `cvfer weights list --dir DIR` shows them; the files load as f_I and as TFEN's F."""
    import cvfer.models.tfen  # noqa: F401  (registers the models)
    from cvfer.cli import main
    from cvfer.models import create_model

    tiny = {"num_identities": 4, "per_identity": 2, "held_out_identities": 2, "epochs": 1, "progress": False}
    trainers = {name: getattr(identity, name) for name in ("train_synthetic_identity_encoder", "train_tfen_face_recogniser")}
    for name, trainer in trainers.items():
        monkeypatch.setattr(identity, name, lambda path, trainer=trainer, **options: trainer(path, size=32, **{**options, **tiny}))
    small_check = {"num_identities": 3, "per_identity": 2, "held_out_identities": 2, "epochs": 1, "size": 32}
    monkeypatch.setattr(identity, "REDUCED_CHECK_OPTIONS", {name: small_check for name in identity.SHIPPED_FILES})
    out = tmp_path / "weights"
    assert main(["weights", "retrain", "--out", str(out)]) == 0
    record = identity.read_shipped_record(out)
    assert set(record["files"]) == set(identity.SHIPPED_FILES.values())
    assert all(0.0 <= entry["reduced_check"]["auc"] <= 1.0 for entry in record["files"].values())
    assert main(["weights", "list", "--dir", str(out)]) == 0
    listing = capsys.readouterr().out
    assert identity.SYNTHETIC_CHECKPOINT_NAME in listing and "held-out AUC" in listing and "missing" not in listing
    assert load_identity_encoder(out / identity.SYNTHETIC_CHECKPOINT_NAME).dim == 128
    model = create_model("tfen", num_classes=7, image_size=32, num_frames=2, face_weights=out / identity.TFEN_FACE_CHECKPOINT_NAME)
    face = torch.load(out / identity.TFEN_FACE_CHECKPOINT_NAME, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.recognizer.face_extractor[0][0].weight, face["backbone.stem.0.weight"].float())


def test_the_trainer_resolves_tfen_face_weights_and_model_pt_does_without(fake_data, make_config, tmp_path, monkeypatch):
    """`face_weights="synthetic"` is resolved (here to your own file in $CVFER_CACHE/identity) before TFEN is
    built; config.json keeps the spec, model.pt's cfg leaves it out (F's weights are in its state dict), so
    `load_model` needs no weights file."""
    import cvfer.models.tfen  # noqa: F401  (registers the models)
    from cvfer.eval.predict import load_model
    from cvfer.io import atomic_torch_save
    from cvfer.models.identity import SEResNetIdentityNet
    from cvfer.train import train

    monkeypatch.setenv("CVFER_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = SEResNetIdentityNet().state_dict()
    atomic_torch_save(identity.identity_cache_dir() / identity.TFEN_FACE_CHECKPOINT_NAME, {"state_dict": weights})
    config = make_config(model="tfen-no-adversary", epochs=1, model_cfg={"face_weights": "synthetic"})
    result = train(config, fake_data, 0, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_cfg"] == {"face_weights": "synthetic"}
    assert "face_weights" not in torch.load(result.model_path, weights_only=True)["cfg"]
    monkeypatch.setenv("CVFER_CACHE", str(tmp_path / "elsewhere"))
    face = load_model(result.model_path).module.face_extractor
    assert torch.equal(face[0][0].weight, weights["backbone.stem.0.weight"])
