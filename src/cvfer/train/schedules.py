"""Per-epoch learning-rate factors (constant, step, cosine), as torch `LambdaLR` schedulers."""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch

from cvfer.errors import ConfigError


def schedule_factor(schedule: str, params: dict[str, Any], epochs: int, epoch: int) -> float:
    """Factor of the base lr at `epoch` (0-based) of a run of `epochs` epochs."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        milestones = list(params.get("milestones", []))
        passed = bisect.bisect_right(milestones, epoch)
        if "factors" in params:
            return 1.0 if passed == 0 else float(params["factors"][passed - 1])
        return float(params.get("gamma", 0.1)) ** passed
    if schedule == "cosine":
        warmup = int(params.get("warmup_epochs", 0))
        min_factor = float(params.get("min_factor", 0.0))
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(epochs - warmup, 1)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown lr_schedule {schedule!r}", fix="use constant, step or cosine")


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, params: dict[str, Any], epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` stepped once per epoch.

    The factor is a plain closure, so the scheduler's state holds only counters: resuming with a larger
    `epochs` (extending a run) uses the new length.
    """
    schedule_factor(schedule, params, epochs, 0)  # fail now, not at the first epoch

    def factor(epoch: int) -> float:
        return schedule_factor(schedule, params, epochs, epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
