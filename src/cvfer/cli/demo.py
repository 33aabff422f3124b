"""`cvfer demo`: the README's main job on the built-in synthetic benchmark."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    from cvfer.eval.demo import run_demo

    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    result = run_demo(
        args.out, preset=args.preset, seed=args.seed, models=models, folds=args.folds, epochs=args.epochs,
        threads=args.threads,
    )
    print(result.table_path.read_text(encoding="utf-8"))
    print(f"benchmark: {result.data_dir}\ntable: {result.table_path}\nreport: {result.report_path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` verb."""
    parser = subparsers.add_parser(
        "demo", help="generate the synthetic benchmark, train MIC and MIC-MI, evaluate, report",
        description="Synthetic benchmark -> cross-validated MIC vs MIC-MI -> comparison table and report. "
        "Re-running resumes where it stopped.",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "full"), help="synthetic preset")
    parser.add_argument("--models", default="mic,mic-mi", help="comma-separated models (default mic,mic-mi)")
    parser.add_argument("--folds", type=int, default=1, help="folds to run (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the demo preset's)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default 0)")
    parser.set_defaults(func=_demo)
