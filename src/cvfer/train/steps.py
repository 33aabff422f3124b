"""The step loop: one epoch of training steps over the fold's training clips, and the epoch's train columns.

A step runs the model's forward pass (`training_forward`), then its losses (`training_losses`), and updates the
groups (`GroupOptimizers.step`). With `critic_steps` = k > 1 the critics get k − 1 more updates of their own
(`critic_losses`, on the step's detached features): after a good step, or with `critic_first` before the losses
are computed, so that the loss the encoder minimises reads critics fitted to this batch. A step whose loss or
gradient is not finite is skipped, and `max_bad_steps` bad steps in a row stop the run.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from tqdm.auto import tqdm

from cvfer.data.dataset import ClipDataset
from cvfer.errors import CvferError
from cvfer.models.base import FERModel, FEROutput, TrainingForward, TrainState
from cvfer.runs import CHECKPOINT_PT
from cvfer.train.config import TrainConfig
from cvfer.train.data import epoch_order, global_batches
from cvfer.train.distributed import DistributedContext
from cvfer.train.optimizers import GroupOptimizers


class StepLoop:
    """Trains `model` on `dataset` one epoch at a time; `step` counts the run's steps (skipped ones too)."""

    def __init__(
        self,
        model: FERModel,
        optimizers: GroupOptimizers,
        dataset: ClipDataset,
        config: TrainConfig,
        context: DistributedContext,
        step: int = 0,
    ):
        self.model = model
        self.optimizers = optimizers
        self.dataset = dataset
        self.config = config
        self.context = context
        self.step = step
        self.bad_in_a_row = 0

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; its history row's training columns: epoch, step, skipped steps, each group's lr,
        the logged terms averaged over the good steps of every process, and `train_acc`."""
        config, context, model = self.config, self.context, self.model
        model.train()
        batches = global_batches(epoch_order(len(self.dataset), config.seed, epoch), config.batch_size, context.world_size)
        log_sums: dict[str, float] = {}
        correct = seen = skipped = 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not context.is_main, leave=False)
        try:
            for position, batch_indices in enumerate(bar):
                batch = self.dataset.batch(context.shard(batch_indices), model.train_inputs)
                batch = {key: value.to(context.device) for key, value in batch.items()}
                result = self._train_step(batch, epoch)
                if result is None:
                    skipped += 1
                else:
                    output, logs = result
                    for key, value in logs.items():
                        log_sums[key] = log_sums.get(key, 0.0) + float(value)
                    if output is not None:
                        correct += int((output.logits.argmax(1) == batch["label"]).sum())
                        seen += len(batch["label"])
                self.step += 1
                good_so_far = max(position + 1 - skipped, 1)
                bar.set_postfix({key: f"{value / good_so_far:.4g}" for key, value in log_sums.items()})
        finally:
            bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "skipped_steps": skipped}
        row |= {f"lr_{name}": rate for name, rate in self.optimizers.end_epoch().items()}
        good_steps = len(batches) - skipped
        totals = context.sum_floats([*log_sums.values(), float(correct), float(seen)])
        for key, total in zip(log_sums, totals, strict=False):
            row[key] = total / max(good_steps * context.world_size, 1)
        row["train_acc"] = totals[-2] / totals[-1] if totals[-1] else math.nan
        return row

    def _train_step(
        self, batch: dict[str, torch.Tensor], epoch: int
    ) -> tuple[FEROutput | None, dict[str, float]] | None:
        """One training step on `batch`: (the model's output, its logs), or None when the step was skipped."""
        config = self.config
        state = TrainState(epoch=epoch, num_epochs=config.epochs, step=self.step, all_gather=self.context.all_gather)
        forward = self.model.training_forward(batch, state)
        if config.critic_first:
            self._fit_critics(forward, state, epoch)
        losses, logs = self.model.training_losses(batch, forward, state)
        non_finite = self.optimizers.step(losses)
        if non_finite is not None:
            self._warn_skipped(epoch, non_finite, losses)
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= config.max_bad_steps:
                raise CvferError(
                    f"training diverged: {self.bad_in_a_row} steps in a row had non-finite losses or gradients "
                    f"(epoch {epoch + 1}, step {self.step})",
                    fix=f"lower --lr, or check the data; the last good state is in {CHECKPOINT_PT}",
                )
            return None
        self.bad_in_a_row = 0
        if not config.critic_first:
            self._fit_critics(forward, state, epoch)
        return forward.output, logs

    def _fit_critics(self, forward: TrainingForward, state: TrainState, epoch: int) -> None:
        """`critic_steps` − 1 updates of the critics alone on `forward`'s detached features."""
        for repeat in range(1, self.config.critic_steps):
            losses = self.model.critic_losses(forward, state, repeat)
            if not losses:
                return
            non_finite = self.optimizers.step(losses)
            if non_finite is not None:
                self._warn_skipped(epoch, non_finite, losses)
                return

    def _warn_skipped(self, epoch: int, non_finite: str, losses: dict[str, torch.Tensor]) -> None:
        if self.context.is_main:
            values = ", ".join(f"{name}={float(loss.detach()):.4g}" for name, loss in losses.items())
            warnings.warn(
                f"epoch {epoch + 1} step {self.step}: non-finite {non_finite} ({values}); step skipped", stacklevel=3
            )
