"""Run-folder checks before a run starts: may `--out` be written, and which checkpoint does it continue from."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from cvfer.errors import CheckpointError, ConfigError
from cvfer.train.checkpoint import load_checkpoint
from cvfer.train.config import TrainConfig, resumable_options


def checkpoint_to_resume(config: TrainConfig, path: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint at `path` to continue from (None: a new run), after checking it belongs to `config`.

    An existing checkpoint without `resume` is an error rather than being overwritten."""
    if not path.exists():
        if resume:
            warnings.warn(f"{path}: no checkpoint to resume; starting a new run", stacklevel=4)
        return None
    if not resume:
        raise ConfigError(
            "already holds a training checkpoint", path, "pass --resume to continue that run, or choose another --out"
        )
    checkpoint = load_checkpoint(path)
    resumable = resumable_options(from_checkpoint=True)
    changed = config.changed_from(checkpoint["config"], ignore=resumable)
    if changed:
        raise CheckpointError(
            f"was written with different options {changed}",
            path,
            f"resume with the original options (only {', '.join(resumable)} may change)",
        )
    if checkpoint["epoch"] > config.epochs:
        raise CheckpointError(f"has {checkpoint['epoch']} epochs done, more than --epochs {config.epochs}", path)
    return checkpoint
