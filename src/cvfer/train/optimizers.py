"""The model's parameter groups, one optimizer and lr scheduler each, and Algorithm 1's update of them.

Each loss moves its own group only: its gradient is taken with respect to that group's parameters
(`torch.autograd.grad`), so e.g. MINE's statistics network ascends the bound the encoder descends. All
gradients are computed (and averaged over processes) before any optimizer steps, and a loss or gradient that
is not finite skips the update of every group.
"""

from __future__ import annotations

from typing import Literal

import torch

from cvfer.errors import ConfigError
from cvfer.models.base import FERModel
from cvfer.train.config import TrainConfig
from cvfer.train.distributed import DistributedContext
from cvfer.train.schedules import make_scheduler

NonFinite = Literal["loss", "gradient"]


class GroupOptimizers:
    """The parameter groups of `model`, each with its optimizer and per-epoch lr scheduler."""

    def __init__(self, model: FERModel, config: TrainConfig, context: DistributedContext):
        self.model_name = config.model
        self.context = context
        self.groups = _parameter_groups(model)
        unknown = sorted(set(config.group_lr) - set(self.groups))
        if unknown:
            raise ConfigError(f"group_lr names groups {unknown}; model {config.model!r} has {sorted(self.groups)}")
        self.optimizers = {name: _optimizer(config, name, params) for name, params in self.groups.items()}
        self.schedulers = {
            name: make_scheduler(optimizer, config.lr_schedule, config.lr_schedule_params, config.epochs)
            for name, optimizer in self.optimizers.items()
        }

    def step(self, losses: dict[str, torch.Tensor]) -> NonFinite | None:
        """Step the group of each loss with that loss's gradient, averaged over processes; None when done, else
        what was not finite ("loss" or "gradient"), and no group stepped. Groups without a loss are not stepped."""
        unknown = sorted(set(losses) - set(self.groups))
        if unknown:
            raise ConfigError(f"model {self.model_name!r} returned losses {unknown} with no parameter group")
        names = [name for name in self.groups if name in losses]
        finite_losses = all(bool(torch.isfinite(losses[name]).all()) for name in names)
        if not self.context.all_true(finite_losses):
            return "loss"
        gradients: dict[str, list[torch.Tensor | None]] = {}
        for name in names:
            params = self.groups[name]
            if losses[name].requires_grad:
                local = list(torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True))
            else:  # a constant loss (e.g. a term switched off this epoch) moves nothing
                local = [None] * len(params)
            gradients[name] = self.context.average_gradients(local)
        finite_gradients = all(
            bool(torch.isfinite(grad).all()) for grads in gradients.values() for grad in grads if grad is not None
        )
        if not finite_gradients:  # identical on every process: the gradients were averaged
            return "gradient"
        for name in names:
            for param, grad in zip(self.groups[name], gradients[name], strict=True):
                param.grad = grad
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
        return None

    def end_epoch(self) -> dict[str, float]:
        """Step every scheduler; returns the learning rate each group had this epoch."""
        rates = {name: optimizer.param_groups[0]["lr"] for name, optimizer in self.optimizers.items()}
        for scheduler in self.schedulers.values():
            scheduler.step()
        return rates


def _parameter_groups(model: FERModel) -> dict[str, list[torch.nn.Parameter]]:
    """The model's groups, checked to be non-empty and disjoint (a parameter has one optimizer)."""
    groups = {name: list(params) for name, params in model.parameter_groups().items()}
    owner: dict[int, str] = {}
    for name, params in groups.items():
        if not params:
            raise ConfigError(f"parameter group {name!r} of the model is empty")
        for param in params:
            if id(param) in owner:
                raise ConfigError(f"a parameter is in both groups {owner[id(param)]!r} and {name!r}")
            owner[id(param)] = name
    return groups


def _optimizer(config: TrainConfig, group: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    lr = config.group_lr.get(group, config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay)
