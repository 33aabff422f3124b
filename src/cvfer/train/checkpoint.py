"""Training checkpoints (`checkpoint.pt`): everything needed to resume a run bit-exactly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvfer.errors import CheckpointError
from cvfer.io import atomic_torch_save, load_torch_file

CHECKPOINT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    *,
    epoch: int,
    step: int,
    config: dict[str, Any],
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    history: list[dict[str, Any]],
) -> None:
    """Write `checkpoint.pt` atomically after `epoch` completed epochs."""
    atomic_torch_save(
        path,
        {
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "step": step,
            "config": config,
            "model": model.state_dict(),
            "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
            "schedulers": {name: scheduler.state_dict() for name, scheduler in schedulers.items()},
            "rng": capture_rng_state(),
            "history": history,
        },
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint; `CheckpointError` if missing, damaged (checksum mismatch), unreadable or
    not one of ours."""
    path = Path(path)
    checkpoint = load_torch_file(
        path,
        "training checkpoint",
        missing_fix="train without --resume to start a new run",
        unreadable_fix="delete it and retrain",
        corrupt_fix="delete it and run the same `cvfer train` without --resume: no older checkpoint is kept, "
        "so the run starts again from epoch 0",
        weights_only=False,
        expect_checksum=True,
    )
    if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError("not a cvfer training checkpoint", path, "delete it and retrain")
    return checkpoint


def restore_training_state(
    checkpoint: dict[str, Any],
    path: str | Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
) -> None:
    """Load model, optimizer, scheduler and RNG states from `checkpoint` (read from `path`)."""
    if set(checkpoint["optimizers"]) != set(optimizers):
        raise CheckpointError(
            f"has parameter groups {sorted(checkpoint['optimizers'])}, the model has {sorted(optimizers)}",
            path,
            "resume with the same model and options, or start a new --out",
        )
    try:
        model.load_state_dict(checkpoint["model"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
            schedulers[name].load_state_dict(checkpoint["schedulers"][name])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"does not match the model ({error})", path, "resume with the same model and options"
        ) from None
    restore_rng_state(checkpoint["rng"])
