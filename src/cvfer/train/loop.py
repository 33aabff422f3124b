"""`train`: Algorithm 1 of MIC for any `FERModel`, on one fold, from the parts in `cvfer.train`:

- `resume`: may the run folder be written, and which checkpoint does the run continue from;
- `data`: the fold's manifest, split, f_I and datasets, and the order training visits them in;
- `build`: the model (its options bound to its builder's signature first);
- `optimizers`: the parameter groups, one optimizer and scheduler each, and their update;
- `steps`: an epoch of training steps (critic updates, skipped steps, the epoch's train columns);
- `evaluate`: WAR/UAR, probabilities and z_E of a dataset;
- `outputs`: the files of the run folder.
"""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvfer.errors import ConfigError
from cvfer.io import check_output_folder, run_lock
from cvfer.runs import CHECKPOINT_PT, MODEL_PT
from cvfer.train.build import build_model, model_cfg
from cvfer.train.checkpoint import restore_training_state
from cvfer.train.config import TrainConfig
from cvfer.train.data import load_fold_data, load_identity_encoder_for, read_fold
from cvfer.train.distributed import DistributedContext, setup_distributed
from cvfer.train.evaluate import Evaluator
from cvfer.train.optimizers import GroupOptimizers
from cvfer.train.outputs import RunWriter, TrainResult
from cvfer.train.resume import checkpoint_to_resume
from cvfer.train.steps import StepLoop


def train(
    config: TrainConfig, data_dir: str | Path, fold: int, out_dir: str | Path, resume: bool = False
) -> TrainResult:
    """Train `config.model` on fold `fold` of the prepared dataset `data_dir`; files go to `out_dir`.

    Under `torchrun` every process trains on its shard of each global batch and only rank 0 writes; it holds
    `out_dir`'s `run_lock`, so a second run into the same folder is refused rather than mixed with this one.
    """
    out_dir = check_output_folder(out_dir, "--out")
    context = setup_distributed(config.device)
    previous_determinism = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        with run_lock(out_dir) if context.is_main else contextlib.nullcontext():
            if context.device.type == "cpu":
                torch.use_deterministic_algorithms(True, warn_only=True)
            return _run(config, Path(data_dir), fold, out_dir, context, resume)
    finally:
        torch.use_deterministic_algorithms(previous_determinism[0], warn_only=previous_determinism[1])
        context.close()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _run(
    config: TrainConfig, data_dir: Path, fold: int, out_dir: Path, context: DistributedContext, resume: bool
) -> TrainResult:
    """Check, build, train epoch by epoch (evaluating and writing after each), then write the final outputs."""
    # f_I "auto" becomes the dataset's before anything compares or records the config.
    config = config.for_data(data_dir)
    if config.batch_size % context.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split over {context.world_size} processes",
            fix="use a batch size divisible by the number of processes",
        )
    checkpoint_path = out_dir / CHECKPOINT_PT
    checkpoint = checkpoint_to_resume(config, checkpoint_path, resume)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    manifest, split = read_fold(data_dir, fold)  # dataset problems surface before f_I is loaded (or first trained)
    identity_encoder = load_identity_encoder_for(config)
    cfg = model_cfg(config, manifest, None if identity_encoder is None else int(identity_encoder.dim))
    model = build_model(config, cfg, context)
    data = load_fold_data(config, manifest, split, model, identity_encoder, cfg["image_size"], context.is_main)
    optimizers = GroupOptimizers(model, config, context)
    history: list[dict[str, Any]] = []
    step = start_epoch = 0
    if checkpoint is not None:
        restore_training_state(checkpoint, checkpoint_path, model, optimizers.optimizers, optimizers.schedulers)
        history, step, start_epoch = checkpoint["history"], checkpoint["step"], checkpoint["epoch"]
    else:
        context.broadcast_module(model)
    writer = RunWriter(out_dir, config, data_dir, fold)
    if context.is_main:
        writer.start()
    steps = StepLoop(model, optimizers, data.train, config, context, step)
    evaluator = Evaluator(model, len(manifest.classes), context.device)
    for epoch in range(start_epoch, config.epochs):
        row = steps.run_epoch(epoch)
        if context.is_main:  # test scores are for monitoring only: nothing in training reads them
            if data.val is not None:
                row.update(evaluator.scores(data.val, "val"))
            row.update(evaluator.scores(data.test, "test"))
        history.append(row)
        if context.is_main:
            writer.end_epoch(epoch, steps.step, model, optimizers, history)
        context.barrier()
    final = history[-1] if history else {}
    result = TrainResult(
        out_dir=out_dir,
        model_path=out_dir / MODEL_PT,
        epochs=len(history),
        history=history,
        test_war=float(final.get("test_war", math.nan)),
        test_uar=float(final.get("test_uar", math.nan)),
        skipped_clips=data.skipped,
    )
    if context.is_main:
        writer.finish(result, model, cfg, manifest, data, evaluator)
    return result
