"""`cvfer train`: train one model on one fold of a prepared dataset (resumable, torchrun-aware)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from cvfer.train.config import TrainConfig


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of the options `add_train_config_arguments` adds: preset / JSON file, options, model
    options, then --set; f_I "auto" resolved for the training data (--data, or cv's --train-data), so cv.json
    and every fold record the same f_I."""
    from cvfer.train.config import build_config

    config = build_config(
        preset=args.preset,
        config_path=args.config,
        options={
            "model": args.model,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "num_frames": args.num_frames,
            "identity_encoder": args.identity_encoder,
            "seed": args.seed,
            "device": args.device,
            "threads": args.threads,
            "cache_dir": args.cache_dir,
            "critic_steps": args.critic_steps,
            "critic_first": args.critic_first or None,
        },
        model_options={"alpha": args.alpha, "mi_estimator": args.mi_estimator},
        settings=args.set,
    )
    data = getattr(args, "data", None) or getattr(args, "train_data", None)
    return config.for_data(data) if data else config


def add_train_config_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the training options that `train_config_from_args` reads (shared by `train` and `cv`)."""
    parser.add_argument("--preset", choices=("demo", "ckplus", "mmi", "afew"), help="start from a preset")
    parser.add_argument("--config", help=f"start from a TrainConfig JSON file (e.g. a run's {CONFIG_JSON})")
    parser.add_argument("--model", help="registered model name (default mic)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size (split over torchrun processes)")
    parser.add_argument("--lr", type=float, help="base learning rate of every parameter group")
    parser.add_argument("--num-frames", type=int, help="P frames (T) per clip")
    parser.add_argument("--alpha", type=float, help="MIC: weight of the MI term (model.alpha)")
    parser.add_argument("--mi-estimator", choices=("mine", "club"), help="MIC: MI estimator (model.mi_estimator)")
    parser.add_argument("--critic-steps", type=int, help="updates of T_θ (or the adversary) per training step")
    parser.add_argument(
        "--critic-first", action="store_true",
        help="do the extra critic updates before the encoder's step, on the same batch (critic_first)",
    )
    parser.add_argument(
        "--identity-encoder",
        help="frozen face recogniser for z_I: auto (default: synthetic on `cvfer synth` data, else dlib), synthetic, "
        "dlib or a path",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cache-dir", help="decoded-input cache shared by runs")
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
    )
    parser.add_argument("--data", required=True, help="prepared dataset folder (manifest.csv, splits.json)")
    parser.add_argument("--fold", type=int, default=0, help="fold of splits.json to train on (default 0)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help=f"continue the run in --out from its {CHECKPOINT_PT}")
    add_train_config_arguments(parser)
    parser.set_defaults(func=_run)
