"""TFEN: shapes of every variant, Algorithm 1's alternation, the frozen F, the paper's parameter count."""

from __future__ import annotations

import pytest
import torch

import cvfer.models.tfen  # noqa: F401  (registers the models)
from cvfer.errors import CheckpointError, ConfigError
from cvfer.models import create_model
from cvfer.models.backbones import ResNet18
from cvfer.models.base import TrainState

VARIANTS = ["tfen", "tfen-no-decoupler", "tfen-no-adversary", "tfen-no-face-decoupling", "tfen-no-3d"]
ADVERSARIAL = ["tfen", "tfen-no-decoupler", "tfen-no-3d"]
NUM_FRAMES = 3


def small_model(name: str, **cfg):
    torch.manual_seed(0)
    cfg = {"num_classes": 3, "image_size": 40, "num_frames": NUM_FRAMES, "input_size": 32, "num_subjects": 5} | cfg
    return create_model(name, **cfg)


def small_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "frames": torch.rand(2, NUM_FRAMES, 3, 40, 40, generator=generator),
        "label": torch.tensor([0, 2]),
        "subject": torch.tensor([1, 4]),
    }


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_shapes(name):
    model = small_model(name).eval()
    out = model(small_batch())
    assert out.logits.shape == (2, 3)
    assert out.features.shape == (2, 512)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_every_group_step_is_finite_and_reaches_its_parameters(name, step_losses):
    model = small_model(name).train()
    groups = model.parameter_groups()
    seen = set()
    for step in (0, 1) if "adversary" in groups else (0,):
        losses, logs = step_losses(model, small_batch(), TrainState(step=step))
        assert all(torch.isfinite(torch.tensor(value)) for value in logs.values())
        for group, loss in losses.items():
            seen.add(group)
            grads = torch.autograd.grad(loss, groups[group], allow_unused=True)
            used = [g for g in grads if g is not None]
            assert used and all(torch.isfinite(g).all() for g in used)
            assert any(g.abs().sum() > 0 for g in used)
    assert seen == set(groups)


def test_adversary_trains_every_third_step_only(step_losses):
    model = small_model("tfen")
    outputs = []  # every forward pass of the model
    model.register_forward_hook(lambda module, args, output: outputs.append(output))
    returned = []
    for step in range(6):
        outputs.clear()
        batch, state = small_batch(), TrainState(step=step)
        forward = model.training_forward(batch, state)
        returned.append(set(model.training_losses(batch, forward, state)[0]))
        assert len(outputs) == (0 if step % 3 == 0 else 1)
        assert forward.output is (None if step % 3 == 0 else outputs[0])  # what the trainer scores train accuracy on
    assert returned == [{"adversary"}, {"main"}, {"main"}, {"adversary"}, {"main"}, {"main"}]
    plain = small_model("tfen-no-adversary")
    assert set(step_losses(plain, small_batch(), TrainState(step=0))[0]) == {"main"}
    assert set(plain.parameter_groups()) == {"main"}


def test_adversary_step_does_not_reach_the_expression_side(step_losses):
    model = small_model("tfen")
    losses, _ = step_losses(model, small_batch(), TrainState(step=0))
    main_params = model.parameter_groups()["main"]
    grads = torch.autograd.grad(losses["adversary"], main_params, allow_unused=True)
    assert all(g is None for g in grads)


def test_uniform_identity_term_reaches_the_decoupler(step_losses):
    model = small_model("tfen", alpha=0.0)
    losses, logs = step_losses(model, small_batch(), TrainState(step=1))
    assert losses["main"].item() == pytest.approx(logs["uniform_mse"], rel=1e-5)
    decoupler_params = list(model.recognizer.decoupler.parameters())
    grads = torch.autograd.grad(losses["main"], decoupler_params)
    assert any(g.abs().sum() > 0 for g in grads)


def test_face_extractor_is_frozen(step_losses):
    model = small_model("tfen").train()
    face = model.recognizer.face_extractor
    assert not face.training
    assert all(not p.requires_grad for p in face.parameters())
    group_ids = {id(p) for params in model.parameter_groups().values() for p in params}
    assert not group_ids & {id(p) for p in face.parameters()}
    before = {k: v.clone() for k, v in face.state_dict().items()}
    for step in (0, 1):
        losses, _ = step_losses(model, small_batch(), TrainState(step=step))
        sum(losses.values()).backward()
    assert all(p.grad is None for p in face.parameters())
    assert all(torch.equal(before[k], v) for k, v in face.state_dict().items())  # BN statistics too


def test_face_weights_initialise_f_and_the_adversary(tmp_path):
    recogniser = ResNet18(squeeze_excitation=True)
    path = tmp_path / "face.pt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in recogniser.state_dict().items()}}, path)
    model = small_model("tfen", face_weights=path)
    face = model.recognizer.face_extractor
    assert torch.equal(face[0][0].weight, recogniser.stem[0].weight)
    assert torch.equal(face[2][1].body[3].weight, recogniser.stages[1][1].body[3].weight)
    assert torch.equal(model.adversary[0][1][0].body[0].weight, recogniser.stages[3][0].body[0].weight)


def test_bad_face_weights_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="stem.0.weight"):
        small_model("tfen", face_weights={"fc.weight": torch.zeros(2, 2)})
    plain = ResNet18(squeeze_excitation=False).state_dict()
    with pytest.raises(CheckpointError, match="does not fit"):
        small_model("tfen", face_weights=plain)
    with pytest.raises(CheckpointError, match="missing.pt"):
        small_model("tfen", face_weights=tmp_path / "missing.pt")


def test_subject_outside_the_adversary_is_a_config_error(step_losses):
    batch = small_batch() | {"subject": torch.tensor([0, 5])}
    with pytest.raises(ConfigError, match="num_subjects"):
        step_losses(small_model("tfen"), batch, TrainState(step=1))


def test_parameter_count_matches_the_paper():
    # Paper: 32.386 M for the network used at test time (F, E, Decoupler, 3D network, classifier).
    with torch.device("meta"):
        model = create_model("tfen", num_classes=7, image_size=224, num_frames=7, input_size=224)
    count = sum(p.numel() for p in model.inference_module().parameters())
    assert count == pytest.approx(32.386e6, rel=0.05)


def test_preset_is_a_valid_training_config():
    from dataclasses import fields

    from cvfer.models.tfen import TFEN_PRESET
    from cvfer.train.config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig.from_dict({k: v for k, v in TFEN_PRESET.items() if k in names})
    model_cfg = {k: v for k, v in TFEN_PRESET.items() if k not in names}
    assert config.weight_decay == 0.008 and config.num_frames == 7
    with torch.device("meta"):
        model = create_model(config.model, num_frames=config.num_frames, **model_cfg)
    assert model.alpha == 5.0 and model.adversary_every == 3 and model.recognizer.input_size == 224


def test_synthetic_face_recogniser_becomes_f_and_is_cached(tmp_path, monkeypatch):
    """TFEN's F on synthetic data: cvfer's SE-ResNet-18 recogniser, trained once on synthetic identities and
    resolved to its cached file before the model is built (a "synthetic" reaching TFEN is an error)."""
    from cvfer.models.backbones import frames_to_images
    from cvfer.models.identity import SEResNetIdentityNet
    from cvfer.train import identity

    monkeypatch.setenv("CVFER_CACHE", str(tmp_path))
    checkpoint = identity.train_tfen_face_recogniser(
        identity.identity_cache_dir() / identity.TFEN_FACE_CHECKPOINT_NAME,
        num_identities=4,
        per_identity=2,
        size=32,
        held_out_identities=2,
        epochs=1,
        progress=False,
    )
    assert checkpoint["format"] == identity.TFEN_FACE_FORMAT and 0.0 <= checkpoint["verification"]["auc"] <= 1.0
    monkeypatch.setattr(identity, "train_tfen_face_recogniser", lambda *args, **kwargs: pytest.fail("retrained"))
    model = small_model("tfen", face_weights=identity.resolve_identity_weights("synthetic", "tfen-face"))
    recogniser = SEResNetIdentityNet(input_size=32).eval()
    recogniser.load_state_dict(checkpoint["state_dict"])
    images = frames_to_images(small_batch()["frames"], 32)
    body = recogniser.backbone
    with torch.no_grad():
        torch.testing.assert_close(model.recognizer.face_extractor(images), body.stages[1](body.stages[0](body.stem(images))))
    with pytest.raises(ConfigError, match="resolve_identity_weights"):
        small_model("tfen", face_weights="synthetic")
