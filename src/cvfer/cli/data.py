"""`cvfer synth`: write the built-in synthetic face-video benchmark."""

from __future__ import annotations

import argparse
from collections import Counter

# Knob options: (SynthConfig field, type, help); unset options keep the preset's value.
_KNOBS: tuple[tuple[str, type, str], ...] = (
    ("num_subjects", int, "number of subjects"),
    ("clips_per_class", int, "clips per subject and class"),
    ("num_frames", int, "frames per clip"),
    ("size", int, "frame side in pixels (even)"),
    ("fps", float, "frame rate"),
    ("expression_scale", float, "multiplies every action-unit intensity (smaller = harder)"),
    ("intensity_min", float, "lowest subject expression intensity in [0, 1]"),
    ("asymmetry", float, "largest weakening of one face side in [0, 1]"),
    ("au_dropout", float, "chance a subject never recruits one core AU of an emotion"),
    ("confusion", float, "chance a subject blends an emotion with a confusable one"),
    ("au_jitter", float, "spread of each subject's per-AU gain"),
    ("head_motion", float, "scale of head translation and rotation (0 = still)"),
    ("illumination", float, "scale of lighting spread and drift (0 = fixed)"),
    ("lighting_drift", float, "lighting change within a clip, x illumination (default 0; 1 = the old generator)"),
    ("noise", float, "sensor noise standard deviation in grey levels"),
    ("folds", int, "subject-independent folds in splits.json"),
)


def _run(args: argparse.Namespace) -> int:
    from cvfer.data.synthetic import generate_benchmark

    knobs = {name: getattr(args, name) for name, _, _ in _KNOBS if getattr(args, name) is not None}
    if args.protocol is not None:
        knobs["protocol"] = args.protocol
    if args.neutral:
        knobs["include_neutral"] = True
    manifest = generate_benchmark(
        args.out, args.preset, args.seed, workers=args.workers, overwrite=args.force, progress=not args.quiet, **knobs
    )
    per_class = Counter(clip.label for clip in manifest.clips)
    print(
        f"wrote {len(manifest.clips)} clips of {len(manifest.subjects())} subjects to {args.out} "
        f"({', '.join(f'{label} {per_class[label]}' for label in manifest.classes)})"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` verb."""
    from cvfer.data.synthetic.benchmark import PRESETS, PROTOCOLS

    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic face-video benchmark (clips, apex frames, manifest, splits)",
        description=(
            "Render procedural faces whose expressions are combinations of action units, encode each clip "
            "as MPEG-4 with one GOP, and write clips/, apex/, manifest.csv, dataset.json and splits.json "
            "into OUT. The output depends only on the preset, the seed and the knobs (docs/synthetic.md)."
        ),
        epilog="examples:\n"
        "  cvfer synth data/synth-small --preset small --workers 2\n"
        "  cvfer synth data/synth-harder --preset small --expression-scale 0.7 --seed 1",
    )
    parser.add_argument("out", help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="size preset (default: tiny)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="ckplus (apex last), mmi (apex mid-clip) or mixed")
    parser.add_argument("--neutral", action="store_true", help="add a neutral class")
    for name, kind, text in _KNOBS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=f"{text} (default: preset's)")
    parser.add_argument("--workers", type=int, default=1, help="render in this many processes (default: 1)")
    parser.add_argument("--force", action="store_true", help="overwrite a dataset already in OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
