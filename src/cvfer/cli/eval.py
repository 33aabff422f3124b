"""Evaluation verbs: `cv` (cross-validation, cross-dataset, sweeps), `bench`, `predict`, `report`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cvfer.cli.train import add_train_config_arguments, train_config_from_args
from cvfer.errors import ConfigError
from cvfer.runs import CONFUSION_PNG, METRICS_JSON, MODEL_PT, REPORT_MD, SWEEP_JSON, SWEEP_MD


def _run_cv(args: argparse.Namespace) -> int:
    from cvfer.eval.protocol import run_cv, run_sweep, sweep_table

    data = args.data or args.train_data
    if data is None:
        raise ConfigError("no training data", fix="give --data DIR (or --train-data A --test-data B)")
    if args.data and args.train_data:
        raise ConfigError("give --data or --train-data, not both")
    config = train_config_from_args(args)
    options = {"num_folds": args.folds, "test_data": args.test_data, "seed": config.seed, "mine_steps": args.mine_steps}
    if args.sweep:
        rows = run_sweep(data, config, args.out, args.sweep, **options)
        print(sweep_table(rows))
        print(f"wrote {Path(args.out) / SWEEP_MD} and {SWEEP_JSON}")
        return 0
    result = run_cv(data, config, args.out, **options)
    summary = result.summary()
    names = ("war", "uar", "macro_f1", "identity_probe_accuracy", "identity_probe_chance", "mutual_information",
             "mutual_information_null")
    for name in names:
        entry = summary[name]
        if entry["folds"]:
            print(f"{name:>24}: {entry['mean']:.4f} ± {entry['std']:.4f} ({entry['folds']} folds)")
    print(f"wrote {Path(args.out) / METRICS_JSON} and {CONFUSION_PNG}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give a number >= 1")
    return value


def _positive_ints(text: str) -> list[int]:
    """argparse type: comma-separated integers ≥ 1, at least one."""
    values = [_positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one number, e.g. 1,8")
    return values


def _workers(text: str) -> int | str:
    """argparse type of `--workers`: `auto` or an integer ≥ 1."""
    from cvfer.cluster import AUTO

    return AUTO if text == AUTO else _positive_int(text)


def _run_bench(args: argparse.Namespace) -> int:
    from cvfer.eval.bench import benchmark, bench_table

    models = [name.strip() for name in args.models.split(",") if name.strip()]
    result = benchmark(
        args.videos,
        models,
        threads=args.threads,
        batch_sizes=args.batch,
        repeats=args.repeats,
        decode_floor=True,
        num_frames=args.num_frames,
        clock=args.clock,
        size=args.size,
    )
    print(bench_table(result))
    if args.json:
        from cvfer.io import atomic_write_json

        atomic_write_json(args.json, result.as_dict())
        print(f"wrote {args.json}")
    return 0


def _run_timeline(args: argparse.Namespace) -> int:
    from cvfer.eval.predict import load_model
    from cvfer.eval.timeline import NO_FACE, STRIDE_SECONDS, WINDOW_SECONDS, predict_timeline

    if args.out is None:
        raise ConfigError("--timeline needs --out", fix="give --out DIR for the CSV, JSON and PNG")
    predictor = load_model(args.checkpoint)
    window = WINDOW_SECONDS if args.window is None else args.window
    stride = (STRIDE_SECONDS if args.window is None else window) if args.stride is None else args.stride
    for path in args.paths:
        result = predict_timeline(
            predictor, path, args.out, window_seconds=window, stride_seconds=stride, per_gop=args.per_gop
        )
        searched = any(row.face_searched for row in result.rows)
        faceless = sum(row.status == NO_FACE for row in result.rows)
        faces = f"{faceless} without a face" if searched else "centred square, no face search"
        print(
            f"{path}: {len(result.rows)} windows ({faces}), "
            f"{result.timing['video_s_per_wall_s']:.2f} video s per wall s; wrote {result.csv_path}, "
            f"{result.json_path.name} and {result.png_path.name}"
        )
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    import time

    if args.timeline:
        return _run_timeline(args)
    if args.window is not None or args.stride is not None or args.per_gop or args.out is not None:
        raise ConfigError("--window, --stride, --per-gop and --out apply to --timeline only", fix="add --timeline")

    from cvfer.cluster import require_engine
    from cvfer.eval.predict import load_model, predict_paths

    if args.cluster is not None:
        require_engine()
    predictor = load_model(args.checkpoint)
    start = time.perf_counter()
    predictions, failures = predict_paths(
        predictor, args.paths, cache_dir=args.cache_dir, workers=args.workers, cluster=args.cluster
    )
    elapsed = time.perf_counter() - start
    where = f"on --cluster {args.cluster}" if args.cluster else f"with --workers {args.workers}"
    print(
        f"predicted {len(predictions)} clips ({len(failures)} failed or skipped) in {elapsed:.1f} s: "
        f"{len(predictions) / max(elapsed, 1e-9):.1f} clips/s {where}",
        file=sys.stderr,
    )
    if args.json:
        document = {
            "checkpoint": str(args.checkpoint),
            "predictions": [prediction.as_dict() for prediction in predictions],
            "failures": [{"path": str(path), "error": reason} for path, reason in failures],
        }
        print(json.dumps(document, indent=2))
    else:
        for prediction in predictions:
            print(f"{prediction.path}\t{prediction.label}\t{prediction.probabilities[prediction.label]:.3f}")
        for path, reason in failures:
            print(f"{path}\tFAILED\t{reason}", file=sys.stderr)
    return 1 if failures else 0


def _run_report(args: argparse.Namespace) -> int:
    from cvfer.eval.report import write_report

    print(f"wrote {write_report(args.run)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `cv`, `bench`, `predict` and `report` verbs."""
    cv = subparsers.add_parser(
        "cv",
        help="subject-independent k-fold cross-validation (or cross-dataset, or a sweep)",
        epilog="examples:\n"
        "  cvfer cv --data runs/demo/data --model mic-mi --folds 3 --epochs 6 --out runs/cv-mic-mi\n"
        "  cvfer cv --data runs/demo/data --model mic --folds 3 --sweep alpha=0,0.1,0.5 --out runs/sweep-alpha",
    )
    cv.add_argument("--data", help="prepared dataset folder (train and test on its folds)")
    cv.add_argument("--train-data", help="cross-dataset: train on this dataset's folds ...")
    cv.add_argument("--test-data", help="... and test on this one's folds, over the shared classes")
    cv.add_argument("--out", required=True, help="run folder (re-running resumes it)")
    cv.add_argument("--folds", type=int, help="run folds 0..N-1 (default: every fold in splits.json)")
    cv.add_argument("--sweep", help="repeat for each value of one option, e.g. alpha=0,0.05,0.1,0.2,0.5")
    cv.add_argument("--mine-steps", type=int, default=300, help="training steps of the post-hoc MI estimator")
    train_options = cv.add_argument_group("training options (see cvfer.train.TrainConfig)")
    add_train_config_arguments(train_options)
    cv.set_defaults(func=_run_cv)

    bench = subparsers.add_parser(
        "bench",
        help="frames per second, parameters and GMACs of test-time models",
        epilog="examples:\n"
        "  cvfer bench runs/demo/data/clips/S001_*.mp4 --models mic,tfen,cnn-lstm --threads 1\n"
        "  cvfer bench my_clip.mp4 --models runs/demo/mic/fold_00/model.pt --batch 1",
    )
    bench.add_argument("videos", nargs="+", help="clips to time (the same clips for every model)")
    bench.add_argument(
        "--models", required=True, help=f"comma-separated {MODEL_PT} paths or registered names (NAME:key=value for options)"
    )
    bench.add_argument("--threads", type=_positive_int, default=1, help="torch intra-op threads (default 1)")
    bench.add_argument("--batch", type=_positive_ints, default=[1, 8], help="comma-separated batch sizes (default 1,8)")
    bench.add_argument("--repeats", type=_positive_int, default=3, help="timed passes over the clips (default 3)")
    bench.add_argument(
        "--num-frames", type=_positive_int, default=8, help="time steps T of models given by name (default 8)"
    )
    bench.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="elapsed time, or this process's CPU time (shared machines)"
    )
    bench.add_argument(
        "--size",
        choices=("native", "equal", "both"),
        default="both",
        help="models given by name at their system's own input size (MIC: the clip as stored; peers: frames resized "
        "to their paper's size), at the clips' size, or both rows (default)",
    )
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.set_defaults(func=_run_bench)

    predict = subparsers.add_parser(
        "predict",
        help="expression of videos (any format PyAV reads) or image folders",
        description="A file is one clip. A folder holding images is one clip (its frames, in natural order). Any "
        "other folder gives its files (each a video) and its direct sub-folders holding images (each a clip); "
        "it is read one level deep: a sub-folder without images (e.g. of videos) is not searched but listed as "
        "skipped, as is anything beside the frames of an image folder; an empty folder is listed as failed. "
        "Hidden files are ignored. Skipped and failed inputs are listed on stderr (or under \"failures\" with "
        "--json) and the exit code is then 1.",
        epilog="examples:\n"
        "  cvfer predict runs/demo/mic/fold_00/model.pt my_video.mp4 --json\n"
        "  cvfer predict runs/demo/mic/fold_00/model.pt long_video.mp4 --timeline --out runs/timeline",
    )
    predict.add_argument("checkpoint", help=f"a {MODEL_PT} written by training")
    predict.add_argument("paths", nargs="+", help="video files or folders (of images, or of videos and image folders)")
    predict.add_argument("--json", action="store_true", help="print all class probabilities and timings as JSON")
    predict.add_argument("--cache-dir", help="keep re-encoded clips in this writable folder (default: a temporary one)")
    predict.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        help="clips predicted in parallel single-threaded processes (default auto: every CPU once the first clip "
        "shows the rest would take over 5 s in one process; 1: one process)",
    )
    predict.add_argument(
        "--cluster",
        metavar="ADDRESS|local",
        help="predict on a Dask cluster: a scheduler address (tcp://host:8786) or `local` (--workers processes on "
        "this machine); needs pip install 'cvfer[cluster]' (docs/scale.md)",
    )
    timeline = predict.add_argument_group("timeline of a long video (cvfer.eval.timeline)")
    timeline.add_argument(
        "--timeline", action="store_true",
        help="classify each video window by window; write OUT/<name>_timeline.csv, .json and .png",
    )
    timeline.add_argument("--window", type=float, help="window length in seconds (default 1.0)")
    timeline.add_argument("--stride", type=float, help="seconds between window starts (default 0.5, or --window when given)")
    timeline.add_argument(
        "--per-gop", action="store_true", help="one window per GOP (I frame to I frame; a longer GOP is cut at --window)"
    )
    timeline.add_argument("--out", help="folder for the timeline files")
    predict.set_defaults(func=_run_predict)

    report = subparsers.add_parser(
        "report", help=f"write RUN/{REPORT_MD} with tables and figures", epilog="example:\n  cvfer report runs/demo/mic"
    )
    report.add_argument("run", help="a run folder written by `cvfer cv`")
    report.set_defaults(func=_run_report)
