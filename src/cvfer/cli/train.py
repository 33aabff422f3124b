"""`cvfer train`: train one model on one fold of a prepared dataset (resumable, torchrun-aware)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cvfer.runs import (
    CHECKPOINT_PT,
    CONFIG_JSON,
    CURVES_PNG,
    FEATURES_NPZ,
    HISTORY_CSV,
    HISTORY_JSONL,
    MODEL_PT,
    PREDICTIONS_CSV,
)
from cvfer.train.config import TrainConfig, build_config, flag_fields, value_type


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of the options `add_train_config_arguments` adds: preset / JSON file, options, model
    options, then --set; f_I "auto" resolved for the training data (--data, or cv's --train-data), so cv.json
    and every fold record the same f_I."""
    config = build_config(
        preset=args.preset,
        config_path=args.config,
        options=training_flag_values(args),
        model_options={"alpha": args.alpha, "mi_estimator": args.mi_estimator},
        settings=args.set,
    )
    data = getattr(args, "data", None) or getattr(args, "train_data", None)
    return config.for_data(data) if data else config


def add_training_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, exclude: tuple[str, ...] = ()
) -> None:
    """One flag per `TrainConfig` field with `help` metadata but those in `exclude` (`batch_size` →
    `--batch-size`), of the field's type and choices; a bool field is a switch. A flag not given reads None,
    so the layer below (preset, config file) keeps its value."""
    for item in flag_fields():
        if item.name in exclude:
            continue
        flag, help_text = "--" + item.name.replace("_", "-"), item.metadata["help"]
        if value_type(item) is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, type=value_type(item), choices=item.metadata.get("choices"), help=help_text)


def training_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` fields set by `add_training_flags`' flags: None for a flag not given (or not added)."""
    return {item.name: getattr(args, item.name, None) for item in flag_fields()}


def add_train_config_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the training options that `train_config_from_args` reads (shared by `train` and `cv`)."""
    parser.add_argument(
        "--preset",
        help="start from a preset: one of the model's own, or of MIC's, which serve any model (docs/training.md)",
    )
    parser.add_argument("--config", help=f"start from a TrainConfig JSON file (e.g. a run's {CONFIG_JSON})")
    add_training_flags(parser)
    parser.add_argument("--alpha", type=float, help="MIC: weight of the MI term (model.alpha)")
    parser.add_argument("--mi-estimator", choices=("mine", "club"), help="MIC: MI estimator (model.mi_estimator)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any TrainConfig field (JSON value), or model.KEY for a model option; repeatable",
    )


def _run(args: argparse.Namespace) -> int:
    from cvfer.train import train

    config = train_config_from_args(args)
    result = train(config, args.data, args.fold, args.out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for path, reason in result.skipped_clips:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    print(
        f"trained {config.model} for {result.epochs} epochs on fold {args.fold}: "
        f"test WAR {result.test_war:.4f}, UAR {result.test_uar:.4f} → {result.model_path}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` verb."""
    parser = subparsers.add_parser(
        "train",
        help="train a model on one fold of a prepared dataset",
        description=(
            "Train on the train clips of fold K of splits.json; the fold's test clips are scored after every "
            f"epoch for monitoring only. Writes {CHECKPOINT_PT} (every epoch), {HISTORY_CSV}, {HISTORY_JSONL}, "
            f"{CURVES_PNG}, {CONFIG_JSON} and, at the end, {MODEL_PT}, {PREDICTIONS_CSV} and {FEATURES_NPZ} "
            "into --out. "
            "Run under `torchrun --nproc_per_node N` for multi-process training (docs/training.md)."
        ),
        epilog="examples:\n"
        "  cvfer train --data runs/demo/data --model mic --fold 0 --out runs/mic-fold0\n"
        "  cvfer train --data runs/demo/data --model mic --fold 0 --out runs/mic-fold0 --resume",
    )
    parser.add_argument("--data", required=True, help="prepared dataset folder (manifest.csv, splits.json)")
    parser.add_argument("--fold", type=int, default=0, help="fold of splits.json to train on (default 0)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help=f"continue the run in --out from its {CHECKPOINT_PT}")
    add_train_config_arguments(parser)
    parser.set_defaults(func=_run)
