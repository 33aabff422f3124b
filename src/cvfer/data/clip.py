"""One clip -> model inputs, with no label: the loader training (`ClipDataset`) and prediction share.

As pytorchvideo keeps `EncodedVideo` apart from its labelled datasets, `load_clip` reads one video (through
`cvfer.codec`) into compact arrays of the batch keys a model asks for, and `stack_input` batches and scales
them as `cvfer.models.base.BATCH_KEYS` documents; `cvfer.data.dataset` adds labels, subjects, apex and z_I.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cvfer import codec
from cvfer.errors import DatasetError

# Keys every training item carries whatever the model asks for; never read from the video.
TARGET_KEYS = ("label", "subject")
COMPRESSED_KEYS = ("residuals", "motion_vectors", "iframe")


@dataclass(frozen=True)
class ClipSpec:
    """What a model reads from a clip: the batch keys `inputs` (targets dropped, each once), T = `num_frames`
    P frames (and decoded frames), and whether vectors and residuals are traced back to the I frame (CoViAR)."""

    inputs: tuple[str, ...]
    num_frames: int
    accumulate: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(dict.fromkeys(key for key in self.inputs if key not in TARGET_KEYS)))


def load_clip(
    path: Path, spec: ClipSpec, *, length: int | None = None, cache_dir: Path | None = None
) -> dict[str, np.ndarray]:
    """Compact arrays of the video at `path` for `spec`: int16 residuals/motion vectors, uint8 I frame and frames.

    The I frame is read whenever a compressed input or z_I ("identity") is asked for. Decoded frames are
    `spec.num_frames` frames spread over the clip's `length` frames (counted by demuxing when None).
    `cache_dir` caches `read_compressed` results on disk across runs.
    """
    arrays: dict[str, np.ndarray] = {}
    if any(key in spec.inputs for key in (*COMPRESSED_KEYS, "identity")):
        params = {"num_frames": spec.num_frames, "residual": "rgb", "accumulate": spec.accumulate}
        if cache_dir is None:
            video = codec.read_compressed(path, **params)
        else:
            from cvfer.codec.cache import read_compressed_cached

            video = read_compressed_cached(path, cache_dir, **params)
        if len(video.residuals) != spec.num_frames:
            raise DatasetError(f"has {len(video.residuals)} P frames, {spec.num_frames} needed", path)
        arrays["iframe"] = np.asarray(video.iframe, dtype=np.uint8)
        if "residuals" in spec.inputs:
            arrays["residuals"] = np.asarray(video.residuals, dtype=np.int16)
        if "motion_vectors" in spec.inputs:
            arrays["motion_vectors"] = np.asarray(video.motion_vectors, dtype=np.int16)
    if "frames" in spec.inputs:
        last = max((codec.count_frames(path) if length is None else length) - 1, 0)
        indices = np.linspace(0, last, spec.num_frames).round().astype(int).tolist()
        arrays["frames"] = np.asarray(codec.read_frames(path, indices=indices), dtype=np.uint8)
        if len(arrays["frames"]) != spec.num_frames:
            raise DatasetError(f"decoded {len(arrays['frames'])} frames, {spec.num_frames} needed", path)
    return arrays


def stack_input(key: str, clips: Sequence[dict[str, np.ndarray]]) -> torch.Tensor:
    """The `key` arrays of `clips` (from `load_clip`) as one float batch laid out and scaled as `BATCH_KEYS` says."""
    stacked = torch.from_numpy(np.stack([arrays[key] for arrays in clips]))
    if key == "motion_vectors":  # (B, T, 2, H, W) pixels -> / 16
        return stacked.float().div_(16.0)
    if key in ("residuals", "frames"):  # (B, T, H, W, 3) -> (B, T, 3, H, W); residuals in [-1, 1], frames [0, 1]
        channels_first = stacked.permute(0, 1, 4, 2, 3)
    else:  # iframe, apex: (B, H, W, 3) uint8 -> (B, 3, H, W) in [0, 1]
        channels_first = stacked.permute(0, 3, 1, 2)
    return channels_first.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
