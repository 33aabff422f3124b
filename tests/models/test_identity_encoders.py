"""Identity encoders f_I: the interface, checkpoints, dlib (training: tests/train/test_train_identity.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cvfer.errors import CheckpointError, ConfigError
from cvfer.models import identity
from cvfer.models.identity import DlibIdentityEncoder, IdentityNet, SyntheticIdentityEncoder, load_identity_encoder


def test_synthetic_encoder_output_is_unit_norm_float32_and_checks_input() -> None:
    torch.manual_seed(0)
    encoder = SyntheticIdentityEncoder(IdentityNet(24, 16), batch_size=3)
    features = encoder.encode(np.random.default_rng(0).integers(0, 256, (7, 20, 20, 3), dtype=np.uint8))
    assert features.shape == (7, 24) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ConfigError, match="uint8"):
        encoder.encode(np.zeros((2, 16, 16, 3), np.float32))


def test_bad_specs_and_files_are_cvfer_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resolve_identity_weights"):  # models only read files they are given
        load_identity_encoder("synthetic")
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
