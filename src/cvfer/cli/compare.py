"""`cvfer compare`: cross-validate and time several models the same way; one table (compare.md/.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvfer.cli.train import add_training_flags, training_flag_values
from cvfer.runs import COMPARE_JSON, COMPARE_MD, MODEL_PT


def _run(args: argparse.Namespace) -> int:
    from cvfer.eval.compare import comparison_table, run_compare

    result = run_compare(
        args.data,
        args.models.split(","),
        args.out,
        num_folds=args.folds,
        options=training_flag_values(args),
        settings=args.set,
        bench_clips=args.bench_clips,
        bench_threads=args.bench_threads,
        bench_batch=args.bench_batch,
        bench_repeats=args.bench_repeats,
        mine_steps=args.mine_steps,
    )
    print(comparison_table(result))
    for row in result.models:
        if row.error is not None:
            print(f"{row.name} failed: {row.error.splitlines()[0]}")
    print(f"wrote {Path(args.out) / COMPARE_MD} and {COMPARE_JSON}")
    return 1 if any(row.error is not None for row in result.models) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compare` verb."""
    parser = subparsers.add_parser(
        "compare",
        help="cross-validate and time several models the same way; one table",
        description=(
            "Runs `cvfer cv` for each model into OUT/MODEL/ (finished folds are reused, so re-running resumes), "
            f"then times every model's fold-0 {MODEL_PT} on the same clips, and writes OUT/{COMPARE_MD} and "
            f"OUT/{COMPARE_JSON}. Each model starts from its own preset (docs/compare.md); the training options "
            "below override it for every model. A model that fails is listed with its error and the exit code "
            "is 1; the others still run."
        ),
        epilog="examples:\n"
        "  cvfer compare --data runs/demo/data --models mic,mic-mi,tfen --folds 3 --out runs/compare\n"
        "  cvfer compare --data data/real/ckplus-pairs --models mic,mic-mi --folds 10 --epochs 8 --threads 1 "
        "--out runs/real",
    )
    parser.add_argument("--data", required=True, help="prepared dataset folder (manifest.csv, splits.json)")
    parser.add_argument("--models", required=True, help="comma-separated registered model names")
    parser.add_argument("--out", required=True, help="comparison folder (re-running resumes it)")
    parser.add_argument("--folds", type=int, help="run folds 0..N-1 (default: every fold in splits.json)")
    parser.add_argument("--mine-steps", type=int, default=300, help="training steps of the post-hoc MI estimator")
    bench = parser.add_argument_group("speed measurement (cvfer bench)")
    bench.add_argument("--bench-clips", type=int, default=8, help="clips of the dataset timed for every model (default 8)")
    bench.add_argument("--bench-threads", type=int, default=1, help="torch threads while timing (default 1)")
    bench.add_argument("--bench-batch", type=int, default=1, help="clips per forward pass while timing (default 1)")
    bench.add_argument("--bench-repeats", type=int, default=3, help="timed passes over the clips (default 3)")
    train = parser.add_argument_group("training options for every model (see cvfer.train.TrainConfig)")
    add_training_flags(train, exclude=("model",))  # --models names them
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[MODEL:]KEY=VALUE",
        help="any TrainConfig field or model.KEY, for every model or only MODEL (e.g. tfen:model.alpha=1); repeatable",
    )
    parser.set_defaults(func=_run)
