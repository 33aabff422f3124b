"""`train`: Algorithm 1 of MIC for any `FERModel`: one loss and one optimizer per parameter group.

Each iteration asks the model for `{group: loss}` and takes the gradient of each loss with respect to
that group's parameters only (`torch.autograd.grad`), so e.g. MINE's statistics network ascends the
bound the encoder descends. All gradients are computed before any optimizer steps. A step whose loss
or gradient is not finite is skipped (all groups), and `max_bad_steps` bad steps in a row stop the run.
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cvfer.data.dataset import ClipDataset
from cvfer.data.manifest import Manifest, read_manifest
from cvfer.data.splits import Fold, read_splits
from cvfer.errors import CheckpointError, ConfigError, CvferError, DatasetError
from cvfer.eval.metrics import accuracy, mean_class_accuracy
from cvfer.io import atomic_write_json, atomic_write_text
from cvfer.models import create_model
from cvfer.models.base import FERModel, FEROutput, TrainState
from cvfer.models.registry import builder_accepts
from cvfer.runs import (
    CHECKPOINT_PT,
    CONFIG_JSON,
    FEATURES_NPZ,
    MODEL_PT,
    PREDICTIONS_CSV,
    RESULT_JSON,
    SplitFeatures,
    save_inference_model,
    write_features,
    write_history,
    write_predictions,
)
from cvfer.train.checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from cvfer.train.config import TrainConfig, resumable_options
from cvfer.train.distributed import DistributedContext, setup_distributed
from cvfer.train.history import plot_curves
from cvfer.train.identity import resolve_identity_weights
from cvfer.train.schedules import make_scheduler

EVAL_BATCH = 64
CURVES_EVERY = 10  # epochs between redraws of curves.png (drawing costs about a second)


@dataclass
class TrainResult:
    """What a finished run left in `out_dir`, with its final test metrics."""

    out_dir: Path
    model_path: Path
    epochs: int
    history: list[dict[str, Any]]
    test_war: float
    test_uar: float
    skipped_clips: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Data:
    """The datasets of one fold: training, test (monitoring and outputs) and optional validation."""

    train: ClipDataset
    test: ClipDataset
    val: ClipDataset | None


def train(
    config: TrainConfig, data_dir: str | Path, fold: int, out_dir: str | Path, resume: bool = False
) -> TrainResult:
    """Train `config.model` on fold `fold` of the prepared dataset `data_dir`; files go to `out_dir`.

    Under `torchrun` every process trains on its shard of each global batch and only rank 0 writes.
    """
    context = setup_distributed(config.device)
    previous_determinism = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        if context.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        return _Trainer(config, Path(data_dir), fold, Path(out_dir), context).run(resume)
    finally:
        torch.use_deterministic_algorithms(previous_determinism[0], warn_only=previous_determinism[1])
        context.close()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


class _Trainer:
    """One run: data, model, optimizers and the epoch loop (split up only for readability)."""

    def __init__(self, config: TrainConfig, data_dir: Path, fold: int, out_dir: Path, context: DistributedContext):
        self.config = config
        self.data_dir = data_dir
        self.fold = fold
        self.out_dir = out_dir
        self.context = context
        self.checkpoint_path = out_dir / CHECKPOINT_PT

    # ----------------------------------------------------------------- setup
    def run(self, resume: bool) -> TrainResult:
        # f_I "auto" becomes the dataset's before anything compares or records the config.
        self.config = config = self.config.for_data(self.data_dir)
        if config.batch_size % self.context.world_size:
            raise ConfigError(
                f"batch_size {config.batch_size} does not split over {self.context.world_size} processes",
                fix="use a batch size divisible by the number of processes",
            )
        checkpoint = self._checkpoint_to_resume(resume)
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.manifest = read_manifest(self.data_dir)
        split = self._fold_split()  # dataset problems surface before f_I is loaded (or first trained)
        identity_encoder, identity_dim = self._identity_encoder()
        self.model = self._build_model(identity_dim)
        self.data = self._load_data(split, identity_encoder)
        image_size = self.model_cfg["image_size"]
        if self.data.train.frame_size != (image_size, image_size):
            raise DatasetError(
                f"frames are {self.data.train.frame_size}, dataset.json says {image_size}",
                self.data_dir / "dataset.json",
                "re-prepare the dataset with square frames",
            )
        self.groups = _parameter_groups(self.model)
        unknown_groups = sorted(set(config.group_lr) - set(self.groups))
        if unknown_groups:
            raise ConfigError(
                f"group_lr names groups {unknown_groups}; model {config.model!r} has {sorted(self.groups)}"
            )
        self.optimizers = {name: self._optimizer(name, params) for name, params in self.groups.items()}
        self.schedulers = {
            name: make_scheduler(optimizer, config.lr_schedule, config.lr_schedule_params, config.epochs)
            for name, optimizer in self.optimizers.items()
        }
        self.history: list[dict[str, Any]] = []
        self.step = self.bad_in_a_row = 0
        start_epoch = 0
        if checkpoint is not None:
            restore_training_state(checkpoint, self.checkpoint_path, self.model, self.optimizers, self.schedulers)
            self.history, self.step, start_epoch = checkpoint["history"], checkpoint["step"], checkpoint["epoch"]
        else:
            self.context.broadcast_module(self.model)
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / CONFIG_JSON, config.to_json() + "\n")
        for epoch in range(start_epoch, config.epochs):
            self._train_epoch(epoch)
        return self._finish()

    def _build_model(self, identity_dim: int | None) -> FERModel:
        """`create_model` with the dataset's sizes (+ identity_dim / num_subjects where the builder takes them).

        TFEN's `face_weights` ("synthetic": trained once, then cached) is resolved to a file here and kept out of
        `self.model_cfg`, model.pt's cfg: F's weights travel in model.pt's state dict."""
        config = self.config
        options = dict(config.model_cfg)
        face_weights = options.pop("face_weights", None)
        self.model_cfg = {
            "num_classes": len(self.manifest.classes),
            "image_size": _image_size(self.manifest),
            "num_frames": config.num_frames,
            **({"identity_dim": identity_dim} if identity_dim is not None else {}),
            **({"num_subjects": len(self.manifest.subjects())} if builder_accepts(config.model, "num_subjects") else {}),
            **options,
        }
        if face_weights is not None and builder_accepts(config.model, "face_weights"):
            face_weights = resolve_identity_weights(face_weights, "tfen-face")
        torch.manual_seed(config.seed)
        try:
            model = create_model(
                config.model, **self.model_cfg, **({} if face_weights is None else {"face_weights": face_weights})
            )
        except TypeError as error:  # an option the builder does not take, e.g. --alpha for cnn-lstm
            raise ConfigError(
                f"model {config.model!r} rejects its options ({error})",
                fix="drop the model options (--alpha, --mi-estimator, --set model.KEY) it does not take",
            ) from None
        if not isinstance(model, FERModel):
            raise ConfigError(f"model {config.model!r} is not a cvfer FERModel")
        if config.sync_batchnorm and self.context.enabled:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.context.device)

    def _checkpoint_to_resume(self, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to continue from, after checking it belongs to this configuration."""
        if not self.checkpoint_path.exists():
            if resume:
                warnings.warn(f"{self.checkpoint_path}: no checkpoint to resume; starting a new run", stacklevel=3)
            return None
        if not resume:
            raise ConfigError(
                "already holds a training checkpoint",
                self.checkpoint_path,
                "pass --resume to continue that run, or choose another --out",
            )
        checkpoint = load_checkpoint(self.checkpoint_path)
        resumable = resumable_options(from_checkpoint=True)
        changed = self.config.changed_from(checkpoint["config"], ignore=resumable)
        if changed:
            raise CheckpointError(
                f"was written with different options {changed}",
                self.checkpoint_path,
                f"resume with the original options (only {', '.join(resumable)} may change)",
            )
        if checkpoint["epoch"] > self.config.epochs:
            raise CheckpointError(
                f"has {checkpoint['epoch']} epochs done, more than --epochs {self.config.epochs}",
                self.checkpoint_path,
            )
        return checkpoint

    def _identity_encoder(self) -> tuple[Any, int | None]:
        """The frozen f_I and its dimension, loaded only when the model takes `identity_dim`."""
        if not builder_accepts(self.config.model, "identity_dim"):
            return None, None
        if not self.config.identity_encoder:
            raise ConfigError(
                f"model {self.config.model!r} uses z_I but no identity encoder is set",
                fix="pass --identity-encoder auto (or synthetic, dlib, or a path)",
            )
        encoder = _load_identity_encoder(self.config.identity_encoder)
        return encoder, int(encoder.dim)

    def _fold_split(self) -> Fold:
        """Fold `self.fold` of splits.json."""
        splits = read_splits(self.data_dir)
        if not 0 <= self.fold < len(splits.folds):
            raise ConfigError(
                f"fold {self.fold} does not exist; splits.json has folds 0..{len(splits.folds) - 1}",
                self.data_dir / "splits.json",
            )
        return splits.folds[self.fold]

    def _load_data(self, split: Fold, identity_encoder: Any) -> _Data:
        train_paths, val_paths = _hold_out_subjects(self.manifest, list(split.train), self.config.val_fraction, self.config.seed)
        model = self.model
        # z_I is loaded whenever there is an encoder, so features.npz can hold it for the MI probes.
        identity = ("identity",) if identity_encoder is not None else ()
        train_inputs = (*model.train_inputs, *model.test_inputs, *identity)
        eval_inputs = (*model.test_inputs, *identity)

        def dataset(paths: list[str], inputs: tuple[str, ...]) -> ClipDataset:
            return ClipDataset(
                self.manifest,
                paths,
                inputs,
                self.config.num_frames,
                identity_encoder,
                self.config.cache_dir,
                accumulate=self.config.accumulate,
                progress=self.context.is_main,
            )

        return _Data(
            train=dataset(train_paths, train_inputs),
            test=dataset(list(split.test), eval_inputs),
            val=dataset(val_paths, eval_inputs) if val_paths else None,
        )

    def _optimizer(self, group: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        config = self.config
        lr = config.group_lr.get(group, config.lr)
        if config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
        return torch.optim.Adam(params, lr=lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay)

    # ----------------------------------------------------------------- epoch
    def _train_epoch(self, epoch: int) -> None:
        config, context, model = self.config, self.context, self.model
        model.train()
        batches = global_batches(epoch_order(len(self.data.train), config.seed, epoch), config.batch_size, context.world_size)
        log_sums: dict[str, float] = {}
        correct = seen = skipped = 0
        captured: list[FEROutput] = []
        hook = model.register_forward_hook(lambda module, args, output: captured.append(output))
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not context.is_main, leave=False)
        try:
            for position, batch_indices in enumerate(bar):
                captured.clear()
                batch = self.data.train.batch(context.shard(batch_indices), model.train_inputs)
                batch = {key: value.to(context.device) for key, value in batch.items()}
                state = TrainState(epoch=epoch, num_epochs=config.epochs, step=self.step, all_gather=context.all_gather)
                if config.critic_first:
                    state.fit_critics = functools.partial(self._critic_updates, state, epoch)
                losses, logs = model.training_losses(batch, state)
                if self._step(losses, epoch):
                    self.bad_in_a_row = 0
                    if not config.critic_first:
                        self._critic_updates(state, epoch)
                    for key, value in logs.items():
                        log_sums[key] = log_sums.get(key, 0.0) + float(value)
                    outputs = [output for output in captured if isinstance(output, FEROutput)]
                    if outputs and len(outputs[0].logits) == len(batch["label"]):
                        correct += int((outputs[0].logits.argmax(1) == batch["label"]).sum())
                        seen += len(batch["label"])
                else:
                    skipped += 1
                    self.bad_in_a_row += 1
                    if self.bad_in_a_row >= config.max_bad_steps:
                        raise CvferError(
                            f"training diverged: {self.bad_in_a_row} steps in a row had non-finite losses or gradients "
                            f"(epoch {epoch + 1}, step {self.step})",
                            fix=f"lower --lr, or check the data; the last good state is in {CHECKPOINT_PT}",
                        )
                self.step += 1
                good_so_far = max(position + 1 - skipped, 1)
                bar.set_postfix({key: f"{value / good_so_far:.4g}" for key, value in log_sums.items()})
        finally:
            hook.remove()
            bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "skipped_steps": skipped}
        for name, optimizer in self.optimizers.items():
            row[f"lr_{name}"] = optimizer.param_groups[0]["lr"]
        for scheduler in self.schedulers.values():
            scheduler.step()
        good_steps = len(batches) - skipped
        totals = context.sum_floats([*log_sums.values(), float(correct), float(seen)])
        for key, total in zip(log_sums, totals, strict=False):
            row[key] = total / max(good_steps * context.world_size, 1)
        row["train_acc"] = totals[-2] / totals[-1] if totals[-1] else math.nan
        if context.is_main:
            if self.data.val is not None:
                row.update(_prefixed("val", self._evaluate(self.data.val)))
            row.update(_prefixed("test", self._evaluate(self.data.test)))
            self.history.append(row)
            write_history(self.out_dir, self.history)
            if (epoch + 1) % CURVES_EVERY == 0 or epoch + 1 == config.epochs:
                plot_curves(self.out_dir, self.history)
            save_checkpoint(
                self.checkpoint_path,
                epoch=epoch + 1,
                step=self.step,
                config=config.to_dict(),
                model=model,
                optimizers=self.optimizers,
                schedulers=self.schedulers,
                history=self.history,
            )
        else:
            self.history.append(row)
        context.barrier()

    def _critic_updates(self, state: TrainState, epoch: int) -> None:
        """`critic_steps` − 1 updates of the critics alone on the stored detached features."""
        for repeat in range(1, self.config.critic_steps):
            critic_losses = self.model.critic_losses(state, repeat)
            if not critic_losses or not self._step(critic_losses, epoch):
                break

    def _step(self, losses: dict[str, torch.Tensor], epoch: int) -> bool:
        """Per-group gradients, averaged over processes; step every group unless anything is non-finite."""
        context = self.context
        unknown = sorted(set(losses) - set(self.groups))
        if unknown:
            raise ConfigError(f"model {self.config.model!r} returned losses {unknown} with no parameter group")
        names = [name for name in self.groups if name in losses]
        finite_losses = all(bool(torch.isfinite(losses[name]).all()) for name in names)
        if not context.all_true(finite_losses):
            self._warn_bad_step(epoch, "loss", losses)
            return False
        gradients: dict[str, list[torch.Tensor | None]] = {}
        for name in names:
            params = self.groups[name]
            if losses[name].requires_grad:
                local = list(torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True))
            else:  # a constant loss (e.g. a term switched off this epoch) moves nothing
                local = [None] * len(params)
            gradients[name] = context.average_gradients(local)
        finite_gradients = all(
            bool(torch.isfinite(grad).all()) for grads in gradients.values() for grad in grads if grad is not None
        )
        if not finite_gradients:  # identical on every process: the gradients were averaged
            self._warn_bad_step(epoch, "gradient", losses)
            return False
        for name in names:
            for param, grad in zip(self.groups[name], gradients[name], strict=True):
                param.grad = grad
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
        return True

    def _warn_bad_step(self, epoch: int, what: str, losses: dict[str, torch.Tensor]) -> None:
        if self.context.is_main:
            values = ", ".join(f"{name}={float(loss.detach()):.4g}" for name, loss in losses.items())
            warnings.warn(
                f"epoch {epoch + 1} step {self.step}: non-finite {what} ({values}); step skipped", stacklevel=3
            )

    # ----------------------------------------------------------------- evaluation and outputs
    def _predict(self, dataset: ClipDataset) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and z_E of every clip of `dataset` (eval mode, test inputs only)."""
        model = self.model
        was_training = model.training
        model.eval()
        probabilities, features = [], []
        with torch.no_grad():
            for start in range(0, len(dataset), EVAL_BATCH):
                indices = range(start, min(start + EVAL_BATCH, len(dataset)))
                batch = {key: value.to(self.context.device) for key, value in dataset.batch(indices, model.test_inputs).items()}
                output = model(batch)
                probabilities.append(torch.softmax(output.logits.float(), dim=1).cpu().numpy())
                features.append(output.features.float().reshape(len(indices), -1).cpu().numpy())
        model.train(was_training)
        return np.concatenate(probabilities), np.concatenate(features)

    def _evaluate(self, dataset: ClipDataset) -> dict[str, float]:
        probabilities, _ = self._predict(dataset)
        labels = dataset.labels.numpy()
        predictions = probabilities.argmax(1)
        num_classes = len(self.manifest.classes)
        return {"war": accuracy(labels, predictions), "uar": mean_class_accuracy(labels, predictions, num_classes)}

    def _finish(self) -> TrainResult:
        """Rank 0 writes `model.pt`, `predictions.csv` and `features.npz`; every rank returns the result."""
        data, model = self.data, self.model
        final = self.history[-1] if self.history else {}
        result = TrainResult(
            out_dir=self.out_dir,
            model_path=self.out_dir / MODEL_PT,
            epochs=len(self.history),
            history=self.history,
            test_war=float(final.get("test_war", math.nan)),
            test_uar=float(final.get("test_uar", math.nan)),
            skipped_clips=[*data.train.skipped, *data.test.skipped, *(data.val.skipped if data.val else [])],
        )
        if not self.context.is_main:
            return result
        save_inference_model(
            result.model_path,
            name=self.config.model,
            cfg=self.model_cfg,
            classes=self.manifest.classes,
            module=model.inference_module(),
            data={
                "image_size": self.model_cfg["image_size"],
                "num_frames": self.config.num_frames,
                "inputs": list(model.test_inputs),
                "residual": "rgb",
                "accumulate": self.config.accumulate,
                "face_crop": _face_cropped(self.manifest),
            },
        )
        test_probabilities, test_features = self._predict(data.test)
        write_predictions(
            self.out_dir / PREDICTIONS_CSV,
            data.test.paths,
            data.test.labels.tolist(),
            test_probabilities,
            self.manifest.classes,
        )
        write_features(
            self.out_dir / FEATURES_NPZ,
            self.manifest.classes,
            train=_split_features(data.train, self._predict(data.train)[1]),
            test=_split_features(data.test, test_features),
        )
        summary = {"epochs": result.epochs, "test_war": result.test_war, "test_uar": result.test_uar}
        summary |= {"skipped_clips": result.skipped_clips, "fold": self.fold, "data": str(self.data_dir)}
        atomic_write_json(self.out_dir / RESULT_JSON, summary)
        return result


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


def _split_features(dataset: ClipDataset, features: np.ndarray) -> SplitFeatures:
    """`features.npz`'s rows of `dataset`: z_E `features` with the clips' labels, subjects, paths and z_I."""
    return SplitFeatures(
        features=features,
        labels=dataset.labels.numpy(),
        subjects=[clip.subject for clip in dataset.records],
        paths=dataset.paths,
        identity=None if dataset.identity is None else dataset.identity.numpy(),
    )


def _face_cropped(manifest: Manifest) -> bool:
    """Whether the clips are face crops (`cvfer prepare` writes `"crop": "face"`), so predict crops too."""
    return bool(manifest.meta.get("face_crop", manifest.meta.get("crop") == "face"))


def _image_size(manifest: Manifest) -> int:
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


def _load_identity_encoder(spec: str) -> Any:
    """f_I for `spec`: "dlib", "synthetic" (trained once, then cached) or a checkpoint path; imported when a
    model needs z_I."""
    from cvfer.models.identity import load_identity_encoder

    return load_identity_encoder(spec if spec == "dlib" else resolve_identity_weights(spec))


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{key}": value for key, value in metrics.items()}
