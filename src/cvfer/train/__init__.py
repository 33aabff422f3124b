"""Training: `TrainConfig` (+ presets) and `train`, Algorithm 1 of MIC for every `FERModel`.

`train` and `TrainResult` are imported on first use, so reading `TrainConfig` (e.g. the CLI building its
flags) does not import torch.
"""

from __future__ import annotations

from typing import Any

from cvfer.train.config import TrainConfig, preset_config, preset_names

__all__ = ["TrainConfig", "TrainResult", "preset_config", "preset_names", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from cvfer.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'cvfer.train' has no attribute {name!r}")
