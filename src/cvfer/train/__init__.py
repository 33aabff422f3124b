"""Training: `TrainConfig` (+ presets) and `train`, Algorithm 1 of MIC for every `FERModel`."""

from cvfer.train.config import TrainConfig, preset_config, preset_names
from cvfer.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "preset_config", "preset_names", "train"]
