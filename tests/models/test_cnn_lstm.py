"""CNN-LSTM reference: shapes, a finite training step, and that frame order matters."""

from __future__ import annotations

import torch

from cvfer.models import create_model
from cvfer.models.base import TrainState


def test_shapes_step_and_order_sensitivity(step_losses):
    torch.manual_seed(0)
    model = create_model("cnn-lstm", num_classes=4, image_size=40, num_frames=5, input_size=32)
    batch = {"frames": torch.rand(2, 5, 3, 40, 40), "label": torch.tensor([1, 3])}
    losses, logs = step_losses(model.train(), batch, TrainState())
    grads = torch.autograd.grad(losses["main"], model.parameter_groups()["main"])
    assert all(torch.isfinite(g).all() for g in grads) and logs["ce"] > 0
    model.eval()
    out = model(batch)
    assert out.logits.shape == (2, 4) and out.features.shape == (2, 512)
    reversed_out = model({"frames": batch["frames"].flip(1)})
    assert not torch.allclose(out.features, reversed_out.features)
