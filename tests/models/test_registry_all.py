"""timm-style: every registered model, at tiny sizes, runs forward and a training step of every group.

A new model is tested here the moment it is registered: it must build from the common keyword arguments,
return (B, C) logits from its `test_inputs` (and from a training step's forward pass, when it runs one), give
finite losses per parameter group whose gradients reach that group (the trainer's
`torch.autograd.grad(loss, group)`), and log plain finite floats.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cvfer.models import create_model, list_models, registry
from cvfer.models.base import BATCH_KEYS, FERModel, FEROutput, TrainState
from cvfer.train.config import TrainConfig, build_config

NUM_CLASSES, SIZE, FRAMES, IDENTITY_DIM, SUBJECTS, BATCH = 5, 32, 3, 16, 4, 2
# Steps tried so that alternating schedules (e.g. an adversary every S steps) step every group once.
MAX_STEPS = 6


def _build(name: str) -> FERModel:
    extras = {"identity_dim": IDENTITY_DIM, "num_subjects": SUBJECTS}
    torch.manual_seed(0)
    return create_model(
        name,
        num_classes=NUM_CLASSES,
        image_size=SIZE,
        num_frames=FRAMES,
        **{key: value for key, value in extras.items() if registry.builder_accepts(name, key)},
    )


def _batch(keys: set[str], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = (BATCH, FRAMES)
    makers = {
        "residuals": lambda: 0.05 * torch.randn(*frames, 3, SIZE, SIZE, generator=generator),
        "motion_vectors": lambda: torch.randn(*frames, 2, SIZE, SIZE, generator=generator),
        "iframe": lambda: torch.rand(BATCH, 3, SIZE, SIZE, generator=generator),
        "frames": lambda: torch.rand(*frames, 3, SIZE, SIZE, generator=generator),
        "apex": lambda: torch.rand(BATCH, 3, SIZE, SIZE, generator=generator),
        "identity": lambda: torch.nn.functional.normalize(torch.randn(BATCH, IDENTITY_DIM, generator=generator), dim=1),
        "label": lambda: torch.tensor([0, NUM_CLASSES - 1]),
        "subject": lambda: torch.tensor([0, SUBJECTS - 1]),
    }
    assert set(makers) == set(BATCH_KEYS), "a batch key was added: teach this test to make it"
    return {key: makers[key]() for key in keys | {"label", "subject"}}


@pytest.mark.parametrize("name", list_models())
def test_model_forward_and_one_step_of_every_group(name: str) -> None:
    model = _build(name)
    assert isinstance(model, FERModel)
    assert set(model.train_inputs) | set(model.test_inputs) <= set(BATCH_KEYS)
    groups = model.parameter_groups()
    assert groups and all(params for params in groups.values())
    optimizers = {group: torch.optim.SGD(params, lr=1e-2) for group, params in groups.items()}
    stepped: set[str] = set()
    model.train()
    for step in range(MAX_STEPS):
        batch = _batch(set(model.train_inputs) | set(model.test_inputs), seed=step)
        state = TrainState(epoch=0, num_epochs=2, step=step)
        forward = model.training_forward(batch, state)
        assert forward.output is None or forward.output.logits.shape == (BATCH, NUM_CLASSES)
        losses, logs = model.training_losses(batch, forward, state)
        assert set(losses) <= set(groups), f"losses {set(losses) - set(groups)} have no parameter group"
        assert all(isinstance(value, float) and torch.isfinite(torch.tensor(value)) for value in logs.values())
        # As the trainer: every group's gradient first (losses may share one graph), then every step.
        gradients = {}
        for group, loss in losses.items():
            assert loss.dim() == 0 and torch.isfinite(loss), f"group {group}: loss {loss}"
            grads = torch.autograd.grad(loss, groups[group], retain_graph=True, allow_unused=True)
            assert any(grad is not None and grad.abs().sum() > 0 for grad in grads), f"{group}: no gradient"
            assert all(grad is None or torch.isfinite(grad).all() for grad in grads)
            gradients[group] = grads
        for group, grads in gradients.items():
            params = groups[group]
            before = [param.detach().clone() for param in params]
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            optimizers[group].step()
            optimizers[group].zero_grad(set_to_none=True)
            assert any(not torch.equal(old, param) for old, param in zip(before, params, strict=True))
            stepped.add(group)
        if stepped == set(groups):
            break
    assert stepped == set(groups), f"groups never stepped in {MAX_STEPS} steps: {set(groups) - stepped}"

    model.eval()
    test_batch = {key: value for key, value in _batch(set(model.test_inputs), 99).items() if key in model.test_inputs}
    with torch.no_grad():
        output = model.inference_module()(test_batch)
    assert isinstance(output, FEROutput)
    assert output.logits.shape == (BATCH, NUM_CLASSES) and torch.isfinite(output.logits).all()
    assert output.features.shape[0] == BATCH


def test_builder_accepts_reads_the_builder_signature() -> None:
    assert registry.builder_accepts("mic", "identity_dim")
    assert registry.builder_accepts("tfen", "num_subjects")
    assert not registry.builder_accepts("cnn-lstm", "identity_dim")
    assert not registry.builder_accepts("no-such-model", "num_classes")


def test_ablation_builders_fix_their_components() -> None:
    assert not registry.builder_accepts("tfen-no-3d", "temporal_3d")
    assert not registry.builder_accepts("ceflnet-sal", "activation")
    with pytest.raises(TypeError, match="decoupling"):
        create_model("tfen", decoupling="none")
    assert create_model("tfen-no-adversary", image_size=SIZE, num_frames=FRAMES).adversary is None


# Every preset of every system, with each model it serves: the system's variants.
PRESETS = [(name, preset) for name in list_models() for preset in registry.model_presets(name)]


@pytest.mark.parametrize(("name", "preset"), PRESETS)
def test_every_registered_preset_is_valid_for_each_variant(name: str, preset: str) -> None:
    """A preset names a model of its system, and each key is a TrainConfig field or an option of that model's
    builder (what `TrainConfig.from_flat` checks); a variant started from it gets only options it takes."""
    settings = registry.model_presets(name)[preset].settings
    assert registry.same_family(name, settings["model"])
    fields = {item.name for item in dataclasses.fields(TrainConfig)}
    assert set(settings) <= fields | set(registry.builder_options(settings["model"]))
    assert TrainConfig.from_flat(settings).model == settings["model"]
    config = build_config(preset=preset, options={"model": name})
    assert config.model == name and set(config.model_cfg) <= set(registry.builder_options(name))


def test_presets_are_registered_once_per_system_with_their_comparison_start() -> None:
    assert registry.compare_preset("mic-mv") == "demo" and registry.compare_preset("no-such-model") is None
    assert registry.compare_preset("tfen-no-3d") == registry.compare_preset("ceflnet-sal") == "cpu"
    assert registry.compare_preset("cnn-lstm") is None and registry.model_presets("no-such-model") == {}
    demo = registry.model_presets("mic")["demo"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_presets("mic-mi", {"demo": demo}, compare="demo")
    with pytest.raises(ValueError, match="before its presets"):
        registry.register_presets("no-such-model", {"demo": demo}, compare="demo")
    assert not registry.builder_accepts("tfen-no-face-decoupling", "face_weights")  # no F: a preset's F is dropped
