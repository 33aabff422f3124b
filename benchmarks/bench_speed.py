"""Test-time speed of MIC against the decoded-domain peers at each system's own input size (MIC §4.1, Tables 1, 3, 4).

Usage: python benchmarks/bench_speed.py [CLIP ...] [--data DIR --num-clips 8] [--models mic,cnn-lstm,tfen,ceflnet]
       [--size both] [--threads 1] [--batch 1] [--repeats 3] [--num-frames 8] [--clock cpu] [--json OUT.json]
       [--png OUT.png]
Clips: those given, else `--num-clips` clips spread over the manifest of the prepared dataset `--data` (as
`cvfer compare` picks them), else 14 synthetic face clips (64×64, 20 frames) generated in a temporary folder.
Models given by name have random weights (speed does not depend on them). Prints the `cvfer bench` table
(native and equal-size rows) and MIC's speed-up over each peer, pre-processing included, against the targets:
≥ 4× the CNN-LSTM and ≥ 5× TFEN and CEFLNet at native sizes; `--png` draws the fps as bars.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cvfer.eval.bench import SIZE_CHOICES, BenchResult, bench_table, benchmark
from cvfer.io import atomic_savefig, atomic_write_json

# MIC's fps over each peer's at their native sizes: the speed issue's acceptance targets.
NATIVE_TARGETS = {"cnn-lstm": 4.0, "tfen": 5.0, "ceflnet": 5.0}


def synthetic_clips(folder: Path) -> list[Path]:
    """Two subjects × seven expressions of the synthetic benchmark, at the `full` preset's size."""
    from cvfer.data.synthetic import generate_benchmark

    manifest = generate_benchmark(folder, preset="full", seed=1, num_subjects=2, clips_per_class=1, progress=False)
    return [manifest.video_path(clip) for clip in manifest.clips]


def ratios(result: BenchResult, model: str = "mic") -> list[str]:
    """MIC's speed-up over every other model timed at the same size label (native and equal), per batch size,
    with the target where there is one, and the bare decode's lead over MIC."""
    mic = next((timing for timing in result.models if timing.name == model), None)
    if mic is None:
        return []
    lines = []
    for size in result.batch_sizes:
        for timing in result.models:
            if timing is mic or timing.size not in ("native", "equal", "native = equal"):
                continue
            target = NATIVE_TARGETS.get(timing.name) if timing.size != "equal" else None
            speedup = mic.fps[size] / timing.fps[size]
            verdict = "" if target is None else f" (target ≥ {target:g}: {'met' if speedup >= target else 'NOT met'})"
            where = f"{timing.name} at {timing.size} ({timing.input_size} px)"
            lines.append(f"batch {size}: {model} / {where} = {speedup:.2f}×{verdict}")
        if result.decode_fps:
            lines.append(f"batch {size}: bare decode / {model} = {result.decode_fps / mic.fps[size]:.2f}×")
    return lines


def plot_fps(result: BenchResult, path: Path) -> None:
    """Bars of each row's fps at the first batch size (log scale; native sizes blue, equal size grey), with the
    bare decode as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = result.batch_sizes[0]
    timings = result.models
    labels = [f"{timing.name}\n{timing.size}, {timing.input_size} px" for timing in timings]
    figure, axis = plt.subplots(figsize=(7, 0.55 * len(timings) + 1.5))
    colours = ["tab:blue" if timing.size in ("native", "native = equal", "as trained", "given") else "tab:gray"
               for timing in timings]
    positions = range(len(timings))
    axis.barh(positions, [timing.fps[batch] for timing in timings], color=colours)
    for position, timing in zip(positions, timings):
        axis.text(timing.fps[batch], position, f" {timing.fps[batch]:.0f}", va="center", fontsize=8)
    if result.decode_fps:
        axis.axvline(result.decode_fps, color="black", linestyle="--", linewidth=1)
        axis.text(result.decode_fps, len(timings) - 0.5, "bare decode ", ha="right", fontsize=8)
    axis.set_yticks(list(positions), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel(f"video frames per second, pre-processing included (batch {batch}, {result.threads} thread(s))")
    axis.set_title(f"Test-time speed on {len(result.clips)} clips of {result.clip_size}×{result.clip_size}"
                   " (blue: native input size, grey: equal size)", fontsize=9)
    figure.tight_layout()
    atomic_savefig(path, figure, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", help="clips to time (default: --data's, else generated synthetic clips)")
    parser.add_argument("--data", help="a prepared dataset folder to take the clips from")
    parser.add_argument("--num-clips", type=int, default=8, help="clips taken from --data (default 8)")
    parser.add_argument("--models", default="mic,cnn-lstm,tfen,ceflnet")
    parser.add_argument("--size", choices=SIZE_CHOICES, default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", default="1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--png", help="also draw the fps of every row here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cvfer-bench-") as folder:
        if args.clips:
            clips = [Path(clip) for clip in args.clips]
        elif args.data:
            from cvfer.eval.compare import bench_clip_paths

            clips = bench_clip_paths(args.data, args.num_clips)
        else:
            clips = synthetic_clips(Path(folder))
        result = benchmark(
            clips,
            [name.strip() for name in args.models.split(",") if name.strip()],
            threads=args.threads,
            batch_sizes=[int(size) for size in args.batch.split(",")],
            repeats=args.repeats,
            num_frames=args.num_frames,
            clock=args.clock,
            size=args.size,
        )
    print(bench_table(result))
    print()
    print("\n".join(ratios(result)))
    if args.json:
        atomic_write_json(args.json, result.as_dict())
    if args.png:
        plot_fps(result, Path(args.png))


if __name__ == "__main__":
    main()
