"""Speed of the compressed-domain readers against bare PyAV decoding, their compile time, and the memory of
`cvfer inspect` on a long 1080p clip.

Usage:
  python benchmarks/bench_codec.py [--frames 60] [--repeats 7]   # speed table, one thread and all cores
  python benchmarks/bench_codec.py --compile                     # first-call (numba compile) times
  python benchmarks/bench_codec.py --inspect-memory [--seconds 30] [--clip /tmp/cvfer-bench/drift_1080p.mp4]

Speed clips are generated: a smooth random texture drifting by a few pixels a frame, with a little noise,
encoded in the MIC format (MPEG-4 Part 2, q=1, one GOP). "bare decode" is PyAV decoding every frame to an
RGB array (`frame.to_ndarray(format="rgb24")`) and dropping it, the least any reader of the pixels does;
"bare, one converter" does the same with one converter for all frames, on one thread, as the readers do;
`read_frames` keeps the frames. The
compressed-domain columns count the I frame plus every P frame: `read_compressed` (rgb: the I frame, dense
motion vectors and RGB residuals; accumulate; codec) returns the whole clip, `iter_compressed` yields P
frame after P frame and the benchmark drops each.

"1 thread": the process is pinned to one CPU (`os.sched_setaffinity`), so FFmpeg's automatic thread count
is 1 too, and each reader is timed by this process's CPU time. "all cores": every CPU, wall-clock time.
The readers take turns, `--repeats` rounds, and each keeps its best round, so a burst of load from
other processes hits them alike and leaves the best rounds untouched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scipy.ndimage import gaussian_filter

from cvfer.codec import iter_compressed, read_compressed, read_frames, write_video

SIZES = ((120, 160), (240, 320), (480, 640))
CLOCKS = {"1 thread": time.process_time, "all cores": time.perf_counter}


def drifting_texture(height: int, width: int, num_frames: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`num_frames` RGB frames of a smooth texture on a random walk (reflected to stay within 32 px of
    its start), plus sensor-like noise (four noise fields, taken in turn)."""
    rng = np.random.default_rng(seed)
    margin = 32
    canvas = gaussian_filter(rng.random((height + 2 * margin, width + 2 * margin, 3), dtype=np.float32), sigma=(4, 4, 0))
    canvas = (255 * (canvas - canvas.min()) / np.ptp(canvas)).astype(np.float32)
    noise = [rng.normal(0, 2, (height, width, 3)).astype(np.float32) for _ in range(4)]
    position = np.zeros(2, dtype=np.int64)
    for index in range(num_frames):
        position += rng.integers(-3, 4, size=2) // 2
        position = np.where(np.abs(position) > margin, np.sign(position) * (2 * margin - np.abs(position)), position)
        top, left = margin + position
        crop = canvas[top : top + height, left : left + width]
        yield np.clip(crop + noise[index % 4], 0, 255).astype(np.uint8)


def bare_decode(path: Path) -> int:
    """Decode every frame to RGB with plain PyAV; returns the frame count."""
    with av.open(str(path)) as container:
        return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


def bare_decode_one_converter(path: Path) -> int:
    """`bare_decode` with one RGB converter for all frames, on one thread, as the readers do (`frame.to_ndarray`
    sets up a new one, with its threads, for every frame)."""
    to_rgb = VideoReformatter()
    with av.open(str(path)) as container:
        frames = container.decode(video=0)
        return sum(1 for frame in frames if to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray() is not None)


READERS: dict[str, Callable[[Path], int]] = {
    "bare decode": bare_decode,
    "bare, one converter": bare_decode_one_converter,
    "read_frames": lambda path: len(read_frames(path)),
    "rgb": lambda path: 1 + len(read_compressed(path).frame_indices),
    "iter rgb": lambda path: 1 + sum(1 for _ in iter_compressed(path)),
    "rgb accumulate": lambda path: 1 + len(read_compressed(path, accumulate=True).frame_indices),
    "codec": lambda path: 1 + len(read_compressed(path, residual="codec").frame_indices),
}


def frames_per_second(readers: dict[str, Callable[[], int]], repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Frames per second of `clock` of each reader (which returns how many frames it produced), best round."""
    best = dict.fromkeys(readers, float("inf"))
    counts = dict.fromkeys(readers, 0)
    for _ in range(repeats):
        for name, read in readers.items():
            start = clock()
            counts[name] = read()
            best[name] = min(best[name], clock() - start)
    return {name: counts[name] / best[name] for name in readers}


def speed_table(num_frames: int, repeats: int) -> None:
    all_cpus = os.sched_getaffinity(0)
    columns = " | ".join(f"{name} fps" for name in READERS)
    print(f"| size (H×W) | threads | {columns} | rgb / bare | iter / bare | rgb / bare, one converter |")
    print("|" + "---|" * (len(READERS) + 5))
    with tempfile.TemporaryDirectory() as tmp:
        for height, width in SIZES:
            path = write_video(Path(tmp) / f"clip_{height}x{width}.mp4", drifting_texture(height, width, num_frames))
            read_compressed(path, num_frames=2)  # compile (or load) the kernels outside the timings
            for threads, clock in CLOCKS.items():
                os.sched_setaffinity(0, {min(all_cpus)} if threads == "1 thread" else all_cpus)
                bound = {name: (lambda read=read: read(path)) for name, read in READERS.items()}
                rates = frames_per_second(bound, repeats, clock)
                cells = " | ".join(f"{rate:.0f}" for rate in rates.values())
                bare = rates["bare decode"]
                one_converter = rates["bare, one converter"]
                ratios = f"{rates['rgb'] / bare:.2f} | {rates['iter rgb'] / bare:.2f} | {rates['rgb'] / one_converter:.2f}"
                print(f"| {height}×{width} | {threads} | {cells} | {ratios} |", flush=True)
    os.sched_setaffinity(0, all_cpus)


FIRST_CALLS = """
import sys, time
start = time.perf_counter()
from cvfer.codec import read_compressed
imported = time.perf_counter()
for _ in range(2):
    read_compressed(sys.argv[1], accumulate=False)
    read_compressed(sys.argv[1], accumulate=True)
    print(f"{time.perf_counter() - imported:.2f}", end=" ")
    imported = time.perf_counter()
print()
"""


def compile_times() -> None:
    """First and second call of read_compressed (rgb, then accumulate) in fresh processes, with an empty
    numba cache and then with the cache it left."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "clip.mp4", drifting_texture(64, 96, 8))
        environment = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")}
        print("| numba cache | first calls (s) | second calls (s) |\n|---|---|---|")
        for cache in ("empty", "filled"):
            command = [sys.executable, "-c", FIRST_CALLS, str(path)]
            run = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
            first, second = run.stdout.split()
            print(f"| {cache} | {first} | {second} |")


def write_one_gop(path: Path, frames: Iterator[np.ndarray], fps: int = 25) -> None:
    """MPEG-4, q=1, one GOP of any length: `write_video`'s settings plus `strict=experimental`, without which
    FFmpeg's MPEG-4 encoder caps the GOP at 600 frames (a second I frame at frame 600)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"sc_threshold": "1000000000", "strict": "experimental"})
        context = stream.codec_context
        context.gop_size, context.max_b_frames = 1_000_000, 0
        context.qscale, context.global_quality, context.qmin, context.qmax = True, 118, 1, 1
        for index, frame in enumerate(frames):
            if index == 0:
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def inspect_memory(seconds: float, clip: Path) -> None:
    """Peak resident memory of `cvfer inspect` on a 1080p clip of `seconds` (made once, kept at `clip`)."""
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_one_gop(clip, drifting_texture(1080, 1920, int(25 * seconds)))
        print(f"wrote {clip} ({clip.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")
    command = [str(Path(sys.executable).with_name("cvfer")), "inspect", str(clip)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    print(output.rstrip())
    print("| clip | exit | wall (s) | peak RSS (MiB) |\n|---|---|---|---|")
    print(f"| {clip.name} | {os.waitstatus_to_exitcode(status)} | {elapsed:.0f} | {usage.ru_maxrss / 1024:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per generated speed clip")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of timings (each cell keeps its best)")
    parser.add_argument("--compile", action="store_true", help="time the first calls (numba compile) instead")
    parser.add_argument("--inspect-memory", action="store_true", help="measure `cvfer inspect`'s peak memory instead")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the 1080p clip for --inspect-memory")
    parser.add_argument(
        "--clip", type=Path, default=Path("/tmp/cvfer-bench/drift_1080p.mp4"), help="the 1080p clip (made if missing)"
    )
    args = parser.parse_args()
    if args.compile:
        compile_times()
    elif args.inspect_memory:
        inspect_memory(args.seconds, args.clip)
    else:
        speed_table(args.frames, args.repeats)


if __name__ == "__main__":
    main()
