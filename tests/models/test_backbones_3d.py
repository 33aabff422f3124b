"""The 3D ResNet-18 stages and the frame preprocessing shared by the decoded-frame models."""

from __future__ import annotations

import pytest
import torch

from cvfer.errors import ConfigError
from cvfer.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BasicBlock3d,
    ResNet18,
    frames_to_images,
    resnet18_3d_stage,
)


def test_3d_stage_halves_time_and_space_and_widens():
    stage = resnet18_3d_stage(2).eval()
    out = stage(torch.randn(2, 128, 7, 8, 8))
    assert out.shape == (2, 256, 4, 4, 4)


def test_3d_widening_shortcut_is_parameter_free():
    widening = BasicBlock3d(128, 256, stride=2)
    body_only = sum(p.numel() for p in widening.body.parameters())
    assert sum(p.numel() for p in widening.parameters()) == body_only
    # With a zero body the block passes the subsampled input through, zero-padded to 256 channels.
    torch.nn.init.zeros_(widening.body[4].weight)
    torch.nn.init.zeros_(widening.body[4].bias)
    x = torch.rand(1, 128, 4, 4, 4)
    out = widening.eval()(x)
    assert torch.equal(out[:, :128], x[:, :, ::2, ::2, ::2])
    assert torch.count_nonzero(out[:, 128:]) == 0


def test_frames_to_images_normalises_and_resizes():
    frames = torch.ones(2, 3, 3, 10, 10) * torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    frames[:, :, :, 0, 0] += torch.tensor(IMAGENET_STD).view(1, 1, 3)
    images = frames_to_images(frames)
    assert images.shape == (6, 3, 10, 10)
    assert torch.allclose(images[:, :, 0, 0], torch.ones(6, 3))
    assert torch.allclose(images[:, :, 5, 5], torch.zeros(6, 3), atol=1e-6)
    assert frames_to_images(frames, input_size=6).shape == (6, 3, 6, 6)


def test_frames_to_images_rejects_wrong_layout():
    with pytest.raises(ConfigError, match="frames"):
        frames_to_images(torch.rand(2, 3, 10, 10))


def test_2d_resnet18_unchanged():
    assert ResNet18().eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512)
