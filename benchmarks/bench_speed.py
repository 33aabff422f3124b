"""Test-time speed of MIC against the decoded-domain CNN-LSTM reference and bare decoding (MIC §4.1, Tables 1, 3, 4).

Usage: python benchmarks/bench_speed.py [CLIP ...] [--models mic,mic-resnet6,cnn-lstm] [--threads 1]
       [--batch 1,8] [--repeats 3] [--clock cpu] [--json OUT.json]
Without clips, 14 synthetic face clips (64×64, 20 frames, CK+-like onset → apex) are generated in a
temporary folder. Models given by name have random weights (speed does not depend on them). Prints the
`cvfer bench` table and the two ratios the docs target: MIC fps / CNN-LSTM fps (≥ 3) and bare-decode fps /
MIC fps (≤ 2).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cvfer.eval.bench import BenchResult, bench_table, benchmark
from cvfer.io import atomic_write_json


def synthetic_clips(folder: Path) -> list[Path]:
    """Two subjects × seven expressions of the synthetic benchmark, at the `full` preset's size."""
    from cvfer.data.synthetic import generate_benchmark

    manifest = generate_benchmark(folder, preset="full", seed=1, num_subjects=2, clips_per_class=1, progress=False)
    return [manifest.video_path(clip) for clip in manifest.clips]


def ratios(result: BenchResult, model: str = "mic", reference: str = "cnn-lstm") -> list[str]:
    """Lines stating the speed-up over the reference and the distance to the decode floor, per batch size."""
    timings = {timing.name: timing for timing in result.models}
    if model not in timings:
        return []
    lines = []
    for size in result.batch_sizes:
        fps = timings[model].fps[size]
        if reference in timings:
            lines.append(f"batch {size}: {model} / {reference} = {fps / timings[reference].fps[size]:.2f}× (target ≥ 3)")
        if result.decode_fps:
            lines.append(f"batch {size}: bare decode / {model} = {result.decode_fps / fps:.2f}× (target ≤ 2)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", help="clips to time (default: generated synthetic clips)")
    parser.add_argument("--models", default="mic,mic-resnet6,cnn-lstm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cvfer-bench-") as folder:
        clips = [Path(clip) for clip in args.clips] or synthetic_clips(Path(folder))
        result = benchmark(
            clips,
            [name.strip() for name in args.models.split(",") if name.strip()],
            threads=args.threads,
            batch_sizes=[int(size) for size in args.batch.split(",")],
            repeats=args.repeats,
            num_frames=args.num_frames,
            clock=args.clock,
        )
    print(bench_table(result))
    print()
    print("\n".join(ratios(result)))
    if args.json:
        atomic_write_json(args.json, result.as_dict())


if __name__ == "__main__":
    main()
