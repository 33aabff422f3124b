"""Multi-process training under `torchrun`: per-group gradient averaging and global-batch gathers.

Why not `DistributedDataParallel`: the trainer takes each group's gradient with
`torch.autograd.grad(loss, group_params)`, which never fills `.grad` through DDP's bucket hooks, so DDP
would not synchronise anything. Instead every process computes its groups' gradients on its shard of
the global batch and `average_gradients` all-reduces them (mean over processes) before the optimizers
step: the same maths as DDP, and with equal shards the same as one process on the whole batch.

Across machines (`torchrun --nnodes N --rdzv-backend c10d`, docs/training.md) nothing changes: RANK and
WORLD_SIZE are global, LOCAL_RANK picks the GPU on each machine, and the gathers and all-reduces span
every process, so MINE's marginal is still drawn from the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as functional_collectives
from torch import nn

from cvfer.errors import ConfigError


@dataclass
class DistributedContext:
    """Where this process sits in the run: rank, number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def shard(self, batch_indices: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch (global order = concatenation over ranks)."""
        if not self.enabled:
            return batch_indices
        return torch.tensor_split(batch_indices, self.world_size)[self.rank]

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Autograd-aware gather of `tensor` from every process, concatenated in rank order (dim 0).

        Gradients flow back to each process's own slice (the backward is a reduce-scatter sum), so a loss
        over the gathered global batch (e.g. MINE's shuffled marginal) trains every shard's encoder.
        Shards must have equal sizes. (torch 2.13 deprecates torch.distributed.nn.functional.all_gather
        in favour of this functional collective.)
        """
        if not self.enabled:
            return tensor
        return functional_collectives.all_gather_single(tensor.contiguous(), 0, dist.group.WORLD)

    def average_gradients(self, gradients: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """Mean of each gradient over processes, with one all-reduce per call (flattened)."""
        if not self.enabled:
            return gradients
        present = [grad for grad in gradients if grad is not None]
        if not present:
            return gradients
        flat = torch.cat([grad.reshape(-1) for grad in present])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        averaged: list[torch.Tensor | None] = []
        offset = 0
        for grad in gradients:
            if grad is None:
                averaged.append(None)
                continue
            averaged.append(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
        return averaged

    def sum_floats(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over processes (epoch totals of logged terms and counts)."""
        if not self.enabled:
            return values
        totals = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return totals.tolist()

    def all_true(self, flag: bool) -> bool:
        """True only if `flag` is true on every process (so all processes skip a bad step together)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0.5)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if not self.enabled:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Tear down the process group if this context created it."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_process_group = False


def setup_distributed(device: str) -> DistributedContext:
    """Join the `torchrun` process group named by RANK/WORLD_SIZE (gloo on CPU, NCCL on CUDA), if any,
    on one machine or several (LOCAL_RANK is the process's index on its own machine)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device", fix="use --device cpu")
    if world_size <= 1:
        return DistributedContext(device=torch.device("cuda" if device == "cuda" else "cpu"))
    if "RANK" not in os.environ:
        raise ConfigError(
            f"WORLD_SIZE is {world_size} but RANK is not set", fix="start multi-process training with torchrun"
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    torch_device = torch.device("cpu")
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, device=torch_device, owns_process_group=owns)
