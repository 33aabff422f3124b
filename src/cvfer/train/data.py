"""The data of one run: fold K of a prepared folder, f_I, the fold's datasets and the order training visits them in."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvfer.data.dataset import ClipDataset
from cvfer.data.manifest import Manifest, read_manifest
from cvfer.data.splits import OFFICIAL, Fold, check_subject_independent, read_splits
from cvfer.errors import ConfigError, DatasetError
from cvfer.models.base import FERModel
from cvfer.models.registry import builder_accepts
from cvfer.train.config import TrainConfig
from cvfer.train.identity import resolve_identity_weights


@dataclass
class FoldData:
    """The datasets of one fold: training, test (monitoring and outputs) and optional validation."""

    train: ClipDataset
    test: ClipDataset
    val: ClipDataset | None

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every clip that could not be read."""
        return [*self.train.skipped, *self.test.skipped, *(self.val.skipped if self.val else [])]


def read_fold(data_dir: Path, fold: int) -> tuple[Manifest, Fold]:
    """The manifest of the prepared folder `data_dir` and fold `fold` of its splits.json, refused (`DatasetError`)
    if a subject is in train and test of a fold; a dataset's official split is used as published, with a warning."""
    manifest = read_manifest(data_dir)
    splits = read_splits(data_dir)
    try:
        check_subject_independent(manifest, splits)
    except DatasetError as error:
        if splits.kind != OFFICIAL:
            raise
        warnings.warn(f"{error}; the dataset's official split is used as published", stacklevel=2)
    if not 0 <= fold < len(splits.folds):
        raise ConfigError(
            f"fold {fold} does not exist; splits.json has folds 0..{len(splits.folds) - 1} (pass --fold "
            f"0..{len(splits.folds) - 1})",
            data_dir / "splits.json",
        )
    return manifest, splits.folds[fold]


def load_identity_encoder_for(config: TrainConfig) -> Any:
    """The frozen f_I of `config`, loaded only when its model takes z_I (`identity_dim`); else None."""
    if not builder_accepts(config.model, "identity_dim"):
        return None
    if not config.identity_encoder:
        raise ConfigError(
            f"model {config.model!r} uses z_I but no identity encoder is set",
            fix="pass --identity-encoder auto (or synthetic, dlib, or a path)",
        )
    return _load_identity_encoder(config.identity_encoder)


def load_fold_data(
    config: TrainConfig,
    manifest: Manifest,
    split: Fold,
    model: FERModel,
    identity_encoder: Any,
    image_size: int,
    progress: bool,
) -> FoldData:
    """The fold's datasets with the inputs `model` reads (and z_I whenever there is an f_I, so features.npz can
    hold it for the MI probes), checked to be stored at the model's `image_size`."""
    train_paths, val_paths = _hold_out_subjects(manifest, list(split.train), config.val_fraction, config.seed)
    identity = ("identity",) if identity_encoder is not None else ()
    train_inputs = (*model.train_inputs, *model.test_inputs, *identity)
    eval_inputs = (*model.test_inputs, *identity)

    def dataset(paths: list[str], inputs: tuple[str, ...]) -> ClipDataset:
        return ClipDataset(
            manifest,
            paths,
            inputs,
            config.num_frames,
            identity_encoder,
            config.cache_dir,
            accumulate=config.accumulate,
            progress=progress,
        )

    data = FoldData(
        train=dataset(train_paths, train_inputs),
        test=dataset(list(split.test), eval_inputs),
        val=dataset(val_paths, eval_inputs) if val_paths else None,
    )
    if data.train.frame_size != (image_size, image_size):
        raise DatasetError(
            f"frames are {data.train.frame_size}, dataset.json says {image_size}",
            manifest.root / "dataset.json",
            "re-prepare the dataset with square frames",
        )
    return data


def image_size(manifest: Manifest) -> int:
    """Stored square frame side, from dataset.json (`image_size`, or `size` as int or [h, w])."""
    meta = manifest.meta
    size = meta.get("image_size", meta.get("size"))
    if isinstance(size, list | tuple) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or size <= 0:
        raise DatasetError(
            f"needs the square frame side as `image_size` (got {size!r})",
            manifest.root / "dataset.json",
            "re-prepare the dataset with `cvfer prepare` or `cvfer synth`",
        )
    return size


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled item order of `epoch`: a function of (seed, epoch) only, so resuming is exact."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


def global_batches(order: torch.Tensor, batch_size: int, world_size: int) -> list[torch.Tensor]:
    """Cut `order` into global batches; a last partial batch is kept only if it splits evenly over the
    processes with at least two clips each (MI estimators and BatchNorm need pairs)."""
    batches = list(torch.split(order, batch_size))
    tail = batches[-1] if batches else None
    if tail is not None and len(tail) < batch_size and (len(tail) % world_size or len(tail) < 2 * world_size):
        batches.pop()
    return batches


def _hold_out_subjects(manifest: Manifest, paths: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split training clips by subject: (train, validation), `fraction` of subjects held out."""
    if fraction <= 0:
        return paths, []
    subject_of = {clip.path: clip.subject for clip in manifest.clips}
    subjects = sorted({subject_of[path] for path in paths if path in subject_of})
    held_count = max(1, round(len(subjects) * fraction))
    if held_count >= len(subjects):
        raise ConfigError(f"val_fraction {fraction} leaves no training subject ({len(subjects)} subjects)")
    held = set(np.random.default_rng(seed).permutation(subjects)[:held_count].tolist())
    return [p for p in paths if subject_of.get(p) not in held], [p for p in paths if subject_of.get(p) in held]


def _load_identity_encoder(spec: str) -> Any:
    """f_I for `spec`: "dlib", "synthetic" (trained once, then cached) or a checkpoint path; imported when a
    model needs z_I."""
    from cvfer.models.identity import load_identity_encoder

    return load_identity_encoder(spec if spec == "dlib" else resolve_identity_weights(spec))
