"""`cvfer inspect` (what MIC sees in a video) and `cvfer reencode` (convert to the MIC format)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    from cvfer.codec import CompressedFrame


def _runs(letters: str) -> str:
    """Run-length form of a GOP string: "IPPPP" -> "I P×4"."""
    runs: list[str] = []
    start = 0
    for index in range(1, len(letters) + 1):
        if index == len(letters) or letters[index] != letters[start]:
            count = index - start
            runs.append(letters[start] if count == 1 else f"{letters[start]}×{count}")
            start = index
    return " ".join(runs)


@dataclass
class ClipStatistics:
    """Motion and residual statistics over a clip's P frames, added one `CompressedFrame` at a time (so
    `cvfer inspect` holds one frame, not the clip), and the frame with the most residual energy."""

    pixels: int = 0
    magnitude_sum: float = 0.0
    magnitude_max: float = 0.0
    moving_pixels: int = 0
    residual_sum: float = 0.0
    strongest: CompressedFrame | None = None
    strongest_energy: float = -1.0

    def add(self, frame: CompressedFrame) -> None:
        """Count `frame`'s vectors and residual; keep it if its residual energy (sum |Δ|) is the largest so far."""
        field = frame.motion_vectors.astype(np.float32)
        magnitude = np.hypot(field[0], field[1])
        self.pixels += magnitude.size
        self.magnitude_sum += float(magnitude.sum(dtype=np.float64))
        self.magnitude_max = max(self.magnitude_max, float(magnitude.max()))
        self.moving_pixels += int(np.count_nonzero(magnitude))
        energy = float(np.abs(frame.residual).sum(dtype=np.int64))
        self.residual_sum += energy
        if energy > self.strongest_energy:
            self.strongest, self.strongest_energy = frame, energy

    def motion(self) -> dict[str, float]:
        """Mean and max vector magnitude (pixels) and the fraction of non-zero vectors over all pixels."""
        if not self.pixels:
            return {"mean": 0.0, "max": 0.0, "nonzero": 0.0}
        return {"mean": self.magnitude_sum / self.pixels, "max": self.magnitude_max, "nonzero": self.moving_pixels / self.pixels}

    def residual_mean(self) -> float:
        """Mean |Δ| over every residual value (pixels × 3 channels)."""
        return self.residual_sum / (3 * self.pixels) if self.pixels else 0.0


def flow_colours(field: np.ndarray) -> np.ndarray:
    """HSV flow colouring of a 2×H×W field: hue = direction, value = magnitude (scaled to the max)."""
    from matplotlib.colors import hsv_to_rgb

    x, y = field.astype(np.float32)
    magnitude = np.hypot(x, y)
    hue = (np.arctan2(y, x) / (2 * np.pi)) % 1.0
    value = magnitude / magnitude.max() if magnitude.max() > 0 else magnitude
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))


def _draw(path: Path, frame: CompressedFrame, out: Path) -> None:
    """I frame, the P frame with the largest residual, and that frame's motion field, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cvfer.io import atomic_savefig

    residual = frame.residual.astype(np.float32)
    limit = max(float(np.abs(residual).max()), 1.0)
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    axes[0].imshow(frame.iframe)
    axes[0].set_title("I frame")
    axes[1].imshow(np.clip(0.5 + residual / (2 * limit), 0, 1))
    axes[1].set_title(f"residual, frame {frame.index} (grey = 0, ±{limit:.0f})")
    axes[2].imshow(flow_colours(frame.motion_vectors))
    axes[2].set_title(f"motion vectors, frame {frame.index} (hue = direction)")
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(path.name)
    figure.tight_layout()
    atomic_savefig(out, figure, dpi=100)
    plt.close(figure)


def _inspect(args: argparse.Namespace) -> int:
    from cvfer.codec import iter_compressed, probe
    from cvfer.errors import CompressedVideoError
    from cvfer.io import check_output_file

    if args.png:
        check_output_file(args.png, "--png")
    info = probe(args.video)
    height, width = info.size
    print(f"file:       {info.path}")
    print(f"codec:      {info.codec}")
    print(f"size:       {height}×{width} (height×width), {info.fps:.3g} fps")
    counts = ", ".join(f"{info.frame_types.count(letter)} {letter}" for letter in "IPB")
    print(f"frames:     {len(info.frame_types)}  ({counts})")
    print(f"GOP:        {_runs(info.frame_types)}")
    statistics = ClipStatistics()
    try:
        # One P frame at a time: memory does not grow with the clip (docs/codec.md, "Memory").
        for frame in tqdm(iter_compressed(args.video, residual=args.residual), total=len(info.frame_types) - 1,
                          desc="reading P frames", unit="frame", leave=False, disable=None):
            statistics.add(frame)
    except CompressedVideoError as error:
        print(f"MIC-ready:  no: {error.problem} ({error.fix})")
        return 1
    stats = statistics.motion()
    print("MIC-ready:  yes")
    print(
        f"motion:     mean |v| {stats['mean']:.2f} px, max |v| {stats['max']:.1f} px, "
        f"non-zero {stats['nonzero']:.1%} of pixels"
    )
    print(f"residual:   mean |Δ| {statistics.residual_mean():.2f} ({args.residual})")
    if args.png:
        _draw(info.path, statistics.strongest, Path(args.png))
        print(f"figure:     {args.png}")
    return 0


def _reencode(args: argparse.Namespace) -> int:
    from cvfer.codec import probe, reencode
    from cvfer.errors import ConfigError

    size = None
    if args.size:
        if len(args.size) > 2:
            raise ConfigError(f"--size takes one or two numbers, not {len(args.size)}", fix="use --size 160 or --size 240 320")
        size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    out = reencode(args.src, args.dst, size=size, quality=args.quality, fps=args.fps)
    info = probe(out)
    print(f"wrote {out}: {info.codec} {info.size[0]}×{info.size[1]}, {len(info.frame_types)} frames ({_runs(info.frame_types)})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `inspect` and `reencode` verbs."""
    inspect = subparsers.add_parser(
        "inspect",
        help="show a video's codec, GOP structure and motion-vector statistics",
        description="Print codec, size, frame count, the picture type of every frame and, when MIC can read "
        "the video, motion-vector and residual statistics. Exit status 1 when the video decodes but MIC cannot "
        "use it (the reason is printed), 2 with one error line when it cannot be read at all (missing, not a "
        "video, corrupt).",
        epilog="examples:\n"
        "  cvfer inspect runs/demo/data/clips/S001_anger_1.mp4\n"
        "  cvfer inspect my_video.mp4 --png my_video_inspect.png",
    )
    inspect.add_argument("video", help="video file")
    inspect.add_argument(
        "--png", metavar="OUT.png", help="also draw the I frame, a residual and its motion field into this file (not a folder)"
    )
    inspect.add_argument("--residual", choices=("rgb", "codec"), default="rgb", help="residual kind (default rgb)")
    inspect.set_defaults(func=_inspect)

    convert = subparsers.add_parser(
        "reencode",
        help="convert a video or a folder of images to the MIC format",
        description="Re-encode anything PyAV decodes (video file, or a folder of images sorted by name) to "
        "MPEG-4 Part 2 with one GOP over the whole clip, no B frames, square pixels and even sides.",
        epilog="examples:\n"
        "  cvfer reencode my_video.mov my_clip.mp4 --size 64\n"
        "  cvfer reencode frames_folder/ my_clip.mp4 --fps 25",
    )
    convert.add_argument("src", help="video file or folder of images")
    convert.add_argument("dst", help="output video file (.mp4, .avi, .mkv); a folder or SRC itself is refused")
    convert.add_argument("--size", type=int, nargs="+", metavar="N",
                         help="output size: N for N×N, or H W (even numbers)")
    convert.add_argument("--quality", type=int, default=1, help="MPEG-4 quantiser 1 (best, default) to 31")
    convert.add_argument("--fps", type=float, help="frame rate > 0 (default: the source's, 25 for images)")
    convert.set_defaults(func=_reencode)
