"""Shared by the model tests: one intra-op thread per test (these small models and tiny-op loops only slow
down when threads contend on a shared CPU; restored afterwards), and `step_losses`, a training step in one call."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from cvfer.models.base import FERModel, TrainState


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each test with one torch intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def step_losses() -> Callable[[FERModel, dict[str, torch.Tensor], TrainState], tuple[dict, dict]]:
    """`step_losses(model, batch, state)`: the losses and logs of a training step, from its two calls (the
    forward pass, then the losses), as the trainer makes them when no critic update comes in between."""

    def run(model: FERModel, batch: dict[str, torch.Tensor], state: TrainState) -> tuple[dict, dict]:
        return model.training_losses(batch, model.training_forward(batch, state), state)

    return run
