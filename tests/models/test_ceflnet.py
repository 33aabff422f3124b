"""CEFLNet: overlapping clip sampling, the Eq. 11 loss, shapes of the Table 6 rows, the paper's size and cost."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cvfer.errors import ConfigError
from cvfer.models import create_model
from cvfer.models.base import TrainState
from cvfer.models.ceflnet import EmotionIntensityActivation, clip_aware_loss, clip_frame_indices

VARIANTS = ["ceflnet", "ceflnet-sal-lrl", "ceflnet-sal", "ceflnet-resnet18"]


def test_paper_clips_of_75_frames():
    indices = clip_frame_indices(75)
    assert indices.shape == (7, 5)
    # Sub-video k covers frames [10k, 10k + 15): 15 frames, 5 shared with the next one.
    assert indices.tolist()[0] == [1, 4, 7, 10, 13]
    assert torch.equal(indices, indices[:1] + 10 * torch.arange(7)[:, None])


def test_random_clips_stay_in_their_bins():
    torch.manual_seed(0)
    for _ in range(20):
        indices = clip_frame_indices(75, random=True)
        start = 10 * torch.arange(7)[:, None] + 3 * torch.arange(5)
        assert ((indices >= start) & (indices < start + 3)).all()


@pytest.mark.parametrize("num_frames", [1, 8, 16, 200])
def test_any_length_gives_ordered_clips_in_range(num_frames):
    indices = clip_frame_indices(num_frames, num_clips=7, frames_per_clip=5)
    assert indices.shape == (7, 5)
    assert indices.min() >= 0 and indices.max() < num_frames
    assert (indices.diff(dim=1) >= 0).all() and (indices[:, 0].diff() >= 0).all()
    assert indices[-1, -1] >= (num_frames - 1) * 0.9  # the clips reach the end of the video


def test_impossible_clip_layout_is_a_config_error():
    with pytest.raises(ConfigError, match="clips"):
        create_model("ceflnet", num_clips=0)


def test_clip_aware_loss_matches_eq_11():
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 5, 2, 2])
    p = logits.softmax(dim=1)
    y = torch.nn.functional.one_hot(labels, 6).float()
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).sum(dim=1).mean()
    assert clip_aware_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    extreme = torch.tensor([[80.0, 0.0, -80.0]], requires_grad=True)
    loss = clip_aware_loss(extreme, torch.tensor([2]))
    loss.backward()
    assert loss.item() == pytest.approx(240.0, rel=1e-4)  # −log p_2 = 160, −log(1 − p_0) = 80
    assert torch.isfinite(extreme.grad).all()


def test_emotional_scores_are_a_distribution_over_clips():
    eian = EmotionIntensityActivation(num_classes=4, dim=16)
    scores = eian.emotional_scores(torch.randn(2, 16, 7))
    assert scores.shape == (2, 4, 7)
    assert torch.allclose(scores.sum(dim=-1), torch.ones(2, 4))


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_a_finite_training_step(name, step_losses):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=32, num_frames=9, num_clips=3, frames_per_clip=2)
    batch = {"frames": torch.rand(2, 9, 3, 32, 32), "label": torch.tensor([0, 2])}
    losses, logs = step_losses(model.train(), batch, TrainState())
    assert set(losses) == {"main"} and torch.isfinite(losses["main"])
    grads = torch.autograd.grad(losses["main"], model.parameter_groups()["main"])
    assert all(torch.isfinite(g).all() for g in grads)
    out = model.eval()(batch)
    assert out.logits.shape == (2, 3) and out.features.shape == (2, 512)


def test_eval_predictions_are_deterministic():
    torch.manual_seed(0)
    model = create_model("ceflnet", num_classes=3, image_size=32, num_frames=20).eval()
    batch = {"frames": torch.rand(1, 20, 3, 32, 32)}
    assert torch.equal(model(batch).logits, model(batch).logits)


def test_size_and_cost_match_the_paper():
    # Paper, Table 8: 12.83 M parameters, 63.8 GMACs per video of 7 clips × 5 frames at 224×224.
    with torch.device("meta"):
        model = create_model("ceflnet", num_classes=6, image_size=224, num_frames=75, input_size=224).eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(12.83e6, rel=0.05)
    with FlopCounterMode(display=False) as counter:
        model({"frames": torch.empty(1, 75, 3, 224, 224, device="meta")})
    assert counter.get_total_flops() / 2 == pytest.approx(63.8e9, rel=0.05)


def test_preset_is_a_valid_training_config():
    from dataclasses import fields

    from cvfer.models.ceflnet import CEFLNET_PRESET
    from cvfer.train.config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig.from_dict({k: v for k, v in CEFLNET_PRESET.items() if k in names})
    model_cfg = {k: v for k, v in CEFLNET_PRESET.items() if k not in names}
    assert (config.optimizer, config.lr, config.batch_size, config.epochs) == ("adam", 1e-4, 8, 120)
    with torch.device("meta"):
        model = create_model(config.model, num_frames=config.num_frames, **model_cfg)
    assert (model.num_clips, model.frames_per_clip, model.input_size) == (7, 5, 224)
