"""`ClipDataset`: the clips of one split, decoded once into memory, served as batches of `BATCH_KEYS`.

FER datasets are small (hundreds of clips), so every clip is decoded once up front (with a progress
bar) by `cvfer.data.clip.load_clip`, the loader prediction uses too, and kept in compact integer form;
items are normalised as `cvfer.models.base.BATCH_KEYS` says when they are read. Clips that cannot be read
are skipped with a warning naming the file and the reason.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cvfer import codec
from cvfer.data.clip import TARGET_KEYS, ClipSpec, load_clip, stack_input
from cvfer.data.manifest import ClipRecord, Manifest
from cvfer.errors import CvferError, DatasetError
from cvfer.models.base import BATCH_KEYS

# Manifest columns that may name a clip's apex image (relative to the dataset folder).
APEX_COLUMNS = ("apex_path", "apex")
IDENTITY_BATCH = 64


class ClipDataset(torch.utils.data.Dataset):
    """The clips `clip_paths` of `manifest`, with the batch keys `inputs` (+ label and subject).

    `num_frames` is T, the number of P frames (and decoded frames) per clip. `identity_encoder`
    (an `IdentityEncoder`) computes z_I from each clip's I frame once, at load time; it is needed only
    when "identity" is in `inputs`. `cache_dir` caches decoded inputs on disk across runs.
    """

    def __init__(
        self,
        manifest: Manifest,
        clip_paths: Sequence[str],
        inputs: Iterable[str],
        num_frames: int,
        identity_encoder: Any = None,
        cache_dir: str | Path | None = None,
        *,
        accumulate: bool = False,
        progress: bool = True,
    ):
        self.manifest = manifest
        self.spec = ClipSpec(tuple(inputs), num_frames, accumulate)
        unknown = [key for key in self.inputs if key not in BATCH_KEYS]
        if unknown:
            raise DatasetError(f"unknown batch keys {unknown}; known: {sorted(BATCH_KEYS)}")
        if "identity" in self.inputs and identity_encoder is None:
            raise DatasetError(
                "the model needs z_I (batch key 'identity') but no identity encoder was given",
                fix="pass --identity-encoder synthetic (or dlib, or a path)",
            )
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        by_path = {clip.path: clip for clip in manifest.clips}
        missing = [path for path in clip_paths if path not in by_path]
        if missing:
            raise DatasetError(
                f"split names {len(missing)} clips absent from manifest.csv (first: {missing[0]})",
                manifest.root / "splits.json",
                "regenerate splits.json for this manifest",
            )
        subject_index = {subject: index for index, subject in enumerate(manifest.subjects())}
        self.skipped: list[tuple[str, str]] = []
        loaded: list[tuple[ClipRecord, dict[str, np.ndarray]]] = []
        for path in tqdm(clip_paths, desc="loading clips", unit="clip", disable=not progress, leave=False):
            clip = by_path[path]
            try:
                loaded.append((clip, self._load_clip(clip)))
            except (CvferError, OSError, ValueError) as error:
                self._skip(clip, getattr(error, "problem", None) or str(error))
        # Clips are batched together, so all must have one shape: the most common one, whatever the load order.
        shapes = Counter(_shapes(arrays) for _, arrays in loaded)
        common, count = shapes.most_common(1)[0] if shapes else ((), 0)
        self.records: list[ClipRecord] = []
        self._arrays: list[dict[str, np.ndarray]] = []
        for clip, arrays in loaded:
            if _shapes(arrays) == common:
                self.records.append(clip)
                self._arrays.append(arrays)
            else:
                key, shape = next(item for item in _shapes(arrays) if item not in common)
                self._skip(clip, f"wrong size: {key} {shape}, the other {count} clips {dict(common).get(key)}")
        if not self.records:
            raise DatasetError(
                f"none of the {len(clip_paths)} clips could be read (first: {self.skipped[0][1] if self.skipped else '-'})",
                manifest.root,
                "check the videos with `cvfer inspect`",
            )
        self.labels = torch.tensor([manifest.label_index(clip) for clip in self.records], dtype=torch.int64)
        self.subjects = torch.tensor([subject_index[clip.subject] for clip in self.records], dtype=torch.int64)
        self.identity = self._encode_identities(identity_encoder) if "identity" in self.inputs else None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The batch keys loaded (targets excluded)."""
        return self.spec.inputs

    @property
    def paths(self) -> list[str]:
        """Manifest paths of the clips kept, in item order."""
        return [clip.path for clip in self.records]

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the stored frames."""
        first = self._arrays[0]
        for key in ("iframe", "apex"):
            if key in first:
                return first[key].shape[0], first[key].shape[1]
        for key in ("residuals", "frames"):
            if key in first:
                return first[key].shape[1], first[key].shape[2]
        return first["motion_vectors"].shape[2], first["motion_vectors"].shape[3]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.batch([index]).items()}

    def batch(self, indices: Sequence[int] | torch.Tensor, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Stacked, normalised tensors of the items `indices` for `keys` (default: all loaded) + targets."""
        indices = [int(index) for index in indices]
        wanted = self.inputs if keys is None else tuple(key for key in keys if key not in TARGET_KEYS)
        clips = [self._arrays[index] for index in indices]
        batch = {key: self.identity[indices] if key == "identity" else stack_input(key, clips) for key in wanted}
        batch["label"] = self.labels[indices]
        batch["subject"] = self.subjects[indices]
        return batch

    def _skip(self, clip: ClipRecord, reason: str) -> None:
        """List `clip` as skipped for `reason`, with a warning naming its file."""
        self.skipped.append((clip.path, reason))
        warnings.warn(f"{self.manifest.video_path(clip)}: skipped ({reason})", stacklevel=3)

    def _load_clip(self, clip: ClipRecord) -> dict[str, np.ndarray]:
        """Compact arrays of one clip (`load_clip`), plus its apex image when asked for."""
        arrays = load_clip(self.manifest.video_path(clip), self.spec, length=clip.num_frames, cache_dir=self.cache_dir)
        if "apex" in self.inputs:
            arrays["apex"] = self._load_apex(clip)
        return arrays

    def _load_apex(self, clip: ClipRecord) -> np.ndarray:
        """The apex image: the manifest's apex PNG if it names one, else the frame at `apex_index`."""
        for column in APEX_COLUMNS:
            if clip.extra.get(column):
                from skimage.io import imread

                image_path = self.manifest.root / clip.extra[column]
                if not image_path.is_file():
                    raise DatasetError(f"apex image {image_path} is missing", self.manifest.root / "manifest.csv")
                image = np.asarray(imread(image_path))
                if image.ndim == 2:
                    image = np.repeat(image[..., None], 3, axis=2)
                return np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        frame = codec.read_frames(self.manifest.video_path(clip), indices=[clip.apex_index])
        return np.asarray(frame[0], dtype=np.uint8)

    def _encode_identities(self, identity_encoder: Any) -> torch.Tensor:
        """z_I of every clip's I frame, once, in batches."""
        features = []
        for start in range(0, len(self._arrays), IDENTITY_BATCH):
            iframes = np.stack([arrays["iframe"] for arrays in self._arrays[start : start + IDENTITY_BATCH]])
            features.append(np.asarray(identity_encoder.encode(iframes), dtype=np.float32))
        return torch.from_numpy(np.concatenate(features))


def _shapes(arrays: dict[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The shape of each of a clip's arrays, by key, in key order."""
    return tuple(sorted((key, array.shape) for key, array in arrays.items()))
