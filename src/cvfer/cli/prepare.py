"""`cvfer prepare`: a public dataset in its official layout → a prepared cvfer dataset folder."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

DATASETS = ("ckplus", "mmi", "afew", "oulu", "dfew", "folder", "pairs")
SHOWN_SKIPS = 20


def _run(args: argparse.Namespace) -> int:
    from cvfer.io import check_output_folder, run_lock

    with run_lock(check_output_folder(args.out, "--out")):  # one prepare at a time into one --out
        return _prepare(args)


def _prepare(args: argparse.Namespace) -> int:
    from cvfer.cluster import require_engine
    from cvfer.data.datasets import prepare_dataset

    if args.cluster is not None:
        require_engine()
    report = prepare_dataset(
        args.root,
        args.dataset,
        args.out,
        size=args.size,
        crop_faces=not args.no_crop,
        subject_pattern=args.subject_pattern,
        subjects_csv=args.subjects,
        folds=args.folds,
        seed=args.seed,
        detect_every=args.detect_every,
        workers=args.workers,
        morph_frames=args.morph_frames,
        apex=args.apex,
        cluster=args.cluster,
    )
    subjects = len({clip.subject for clip in report.clips})
    print(f"prepared {len(report.clips)} clips of {subjects} subjects, classes {', '.join(report.classes)}, written to {report.out}")
    if report.skipped:
        reasons = Counter(item.reason for item in report.skipped)
        print(f"warning: skipped {len(report.skipped)} (listed in {report.out / 'skipped.csv'}):", file=sys.stderr)
        for reason, count in reasons.most_common():
            print(f"  {count:5d} x {reason}", file=sys.stderr)
        for item in report.skipped[:SHOWN_SKIPS]:
            print(f"  {item.source}: {item.reason}", file=sys.stderr)
        if len(report.skipped) > SHOWN_SKIPS:
            print(f"  ... and {len(report.skipped) - SHOWN_SKIPS} more", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prepare` verb."""
    parser = subparsers.add_parser(
        "prepare",
        help="crop faces and re-encode a public dataset to the MIC format, with manifest and splits",
        description=(
            "Read ROOT in the dataset's official layout (docs/datasets.md), crop the face with one fixed box "
            "per clip, resize, re-encode to MPEG-4 (one I frame, no B frames) and write manifest.csv, "
            "dataset.json, splits.json and skipped.csv into --out. Exits 0 when at least one clip was "
            "prepared (skipped sources are listed as a warning), 2 when none was."
        ),
        epilog="examples:\n"
        "  cvfer prepare data/raw/CK+ --dataset ckplus --out data/ckplus\n"
        "  benchmarks/build_real_dev_set.sh      # CK+ neutral/peak stills -> data/real/ckplus-pairs (--dataset pairs)",
    )
    parser.add_argument("root", metavar="ROOT", help="folder the dataset was unpacked into")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="layout of ROOT")
    parser.add_argument("--out", required=True, help="output folder of the prepared dataset")
    parser.add_argument("--size", type=int, default=64, help="side of the square output frames (even; default 64)")
    parser.add_argument("--no-crop", action="store_true", help="no face detection: keep the centred square of each frame")
    subjects = parser.add_mutually_exclusive_group()
    subjects.add_argument(
        "--subject-pattern",
        metavar="REGEX",
        help="folder and pairs datasets: regex with a named group `subject` (pairs: and optionally `sequence`), "
        "searched in each clip's name",
    )
    subjects.add_argument("--subjects", metavar="CSV", help="folder dataset: CSV of `path,subject` (paths relative to ROOT)")
    parser.add_argument("--folds", type=int, default=10, help="subject-independent folds where the dataset has no official split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject k-fold split")
    parser.add_argument("--detect-every", type=int, default=10, help="re-detect the face every N frames (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="clips prepared in parallel processes (default 1)")
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS|local",
        help="prepare on a Dask cluster: a scheduler address (tcp://host:8786; its workers must see ROOT and --out "
        "at the same paths) or `local` (--workers processes on this machine); needs pip install 'cvfer[cluster]' "
        "(docs/scale.md)",
    )
    parser.add_argument(
        "--morph-frames", type=int, default=16, help="pairs dataset: frames of each clip morphed from neutral to peak (default 16)"
    )
    parser.add_argument(
        "--apex",
        choices=("last", "middle"),
        default="last",
        help="pairs dataset: peak at the end (CK+-style onset→apex, default) or in the middle (MMI-style, back to neutral)",
    )
    parser.set_defaults(func=_run)
