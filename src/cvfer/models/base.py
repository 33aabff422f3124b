"""The contract every cvfer model meets, so one trainer, one evaluator and one benchmark serve them all.

A batch is a dict of tensors built by `cvfer.data.dataset` (see `BATCH_KEYS`). A model names the keys it
needs for training (`train_inputs`) and at test time (`test_inputs`); the data loader loads only those.

A training step is two calls, so that the trainer can update the critics in between (`critic_first`):
`training_forward` runs the forward pass and returns it (`TrainingForward`: the model's output, which the
trainer scores train accuracy on, plus whatever the losses read), and `training_losses` turns it into one
scalar loss per *parameter group*, e.g. ``{"fer": ..., "mine": ..., "decoder": ...}``; `parameter_groups`
returns the parameters each loss updates. The trainer takes the gradient of each loss with respect to its
own group only (so the MINE statistics network can maximise the bound while the encoder minimises it,
Algorithm 1 of MIC), and steps one optimizer per group. Groups absent from the returned dict are not
stepped this iteration (alternating schedules such as TFEN's every-S-steps adversary). `critic_losses`
gives the critics' losses alone on a forward pass's detached features, for the trainer's extra critic
updates (`critic_steps`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

# Keys a batch may hold; shapes with B = batch, T = time steps, H×W = stored frame size.
BATCH_KEYS: dict[str, str] = {
    "residuals": "float32 (B, T, 3, H, W): Δ_t / 255, in [-1, 1]",
    "motion_vectors": "float32 (B, T, 2, H, W): T_t in pixels / 16 (x, y)",
    "iframe": "float32 (B, 3, H, W): the I frame, RGB in [0, 1]",
    "frames": "float32 (B, T, 3, H, W): decoded RGB frames in [0, 1] (decoded-domain models)",
    "apex": "float32 (B, 3, H, W): the apex frame, RGB in [0, 1]",
    "identity": "float32 (B, D): z_I, the frozen face recogniser's feature of the I frame",
    "label": "int64 (B,): expression class",
    "subject": "int64 (B,): subject index (for probes and adversaries; never used at test time)",
}


@dataclass
class TrainState:
    """What a model may know of the training run in a training step."""

    epoch: int = 0
    num_epochs: int = 1
    step: int = 0
    # Gathers a tensor over all processes (autograd-aware); identity when not distributed.
    all_gather: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda tensor: tensor)


@dataclass
class FEROutput:
    """Test-time output: class logits and the expression feature z_E they come from."""

    logits: torch.Tensor
    features: torch.Tensor


@dataclass
class TrainingForward:
    """The forward pass of one training step: the model's output on the batch (None when the step runs none,
    e.g. TFEN's adversary steps). A model subclasses it to keep what its losses and critics read."""

    output: FEROutput | None


class FERModel(nn.Module, abc.ABC):
    """Base class of every registered model."""

    train_inputs: tuple[str, ...] = ()
    test_inputs: tuple[str, ...] = ()

    @abc.abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> FEROutput:
        """Logits and z_E from the `test_inputs` of a batch."""

    def training_forward(self, batch: dict[str, torch.Tensor], state: TrainState) -> TrainingForward:
        """The forward pass of a training step on `batch` (its `train_inputs`)."""
        return TrainingForward(self(batch))

    def training_losses(
        self, batch: dict[str, torch.Tensor], forward: TrainingForward, state: TrainState
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Losses per parameter group of the step whose forward pass is `forward`, plus scalar logs (each loss
        term) for progress and history. Default: cross-entropy of the output's logits."""
        loss = nn.functional.cross_entropy(forward.output.logits, batch["label"])
        return {"main": loss}, {"ce": float(loss.detach())}

    def critic_losses(self, forward: TrainingForward, state: TrainState, repeat: int) -> dict[str, torch.Tensor]:
        """Losses of the critics alone (e.g. MINE's T_θ) on `forward`'s detached features, for the trainer's
        `critic_steps` − 1 extra critic updates of a step (`repeat` = 1, 2, ...). A model without critics
        returns {}."""
        return {}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters of each loss returned by `training_losses`."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def inference_module(self) -> nn.Module:
        """The part that runs at test time (what `cvfer predict` loads and `cvfer bench` times)."""
        return self
