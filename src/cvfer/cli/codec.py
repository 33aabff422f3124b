"""`cvfer inspect` (what MIC sees in a video) and `cvfer reencode` (convert to the MIC format)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cvfer.codec import CompressedVideo


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


def motion_statistics(motion_vectors: np.ndarray) -> dict[str, float]:
    """Mean and max vector magnitude (pixels) and the fraction of non-zero vectors over all pixels."""
    magnitude = np.hypot(motion_vectors[:, 0].astype(np.float32), motion_vectors[:, 1].astype(np.float32))
    return {
        "mean": float(magnitude.mean()) if magnitude.size else 0.0,
        "max": float(magnitude.max()) if magnitude.size else 0.0,
        "nonzero": float((magnitude > 0).mean()) if magnitude.size else 0.0,
    }


def flow_colours(field: np.ndarray) -> np.ndarray:
    """HSV flow colouring of a 2×H×W field: hue = direction, value = magnitude (scaled to the max)."""
    from matplotlib.colors import hsv_to_rgb

    x, y = field.astype(np.float32)
    magnitude = np.hypot(x, y)
    hue = (np.arctan2(y, x) / (2 * np.pi)) % 1.0
    value = magnitude / magnitude.max() if magnitude.max() > 0 else magnitude
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))


def _draw(video: CompressedVideo, out: Path) -> None:
    """I frame, the P frame with the largest residual, and that frame's motion field, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cvfer.io import atomic_savefig

    strongest = int(np.abs(video.residuals.reshape(len(video.residuals), -1)).sum(axis=1).argmax())
    residual = video.residuals[strongest].astype(np.float32)
    limit = max(float(np.abs(residual).max()), 1.0)
    index = int(video.frame_indices[strongest])
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    axes[0].imshow(video.iframe)
    axes[0].set_title("I frame")
    axes[1].imshow(np.clip(0.5 + residual / (2 * limit), 0, 1))
    axes[1].set_title(f"residual, frame {index} (grey = 0, ±{limit:.0f})")
    axes[2].imshow(flow_colours(video.motion_vectors[strongest]))
    axes[2].set_title(f"motion vectors, frame {index} (hue = direction)")
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(video.path.name)
    figure.tight_layout()
    atomic_savefig(out, figure, dpi=100)
    plt.close(figure)


def _inspect(args: argparse.Namespace) -> int:
    from cvfer.codec import probe, read_compressed
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
    try:
        video = read_compressed(args.video, residual=args.residual)
    except CompressedVideoError as error:
        print(f"MIC-ready:  no: {error.problem} ({error.fix})")
        return 1
    stats = motion_statistics(video.motion_vectors)
    print("MIC-ready:  yes")
    print(
        f"motion:     mean |v| {stats['mean']:.2f} px, max |v| {stats['max']:.1f} px, "
        f"non-zero {stats['nonzero']:.1%} of pixels"
    )
    print(f"residual:   mean |Δ| {np.abs(video.residuals).mean():.2f} ({args.residual})")
    if args.png:
        _draw(video, Path(args.png))
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
    )
    convert.add_argument("src", help="video file or folder of images")
    convert.add_argument("dst", help="output video file (.mp4, .avi, .mkv); a folder or SRC itself is refused")
    convert.add_argument("--size", type=int, nargs="+", metavar="N",
                         help="output size: N for N×N, or H W (even numbers)")
    convert.add_argument("--quality", type=int, default=1, help="MPEG-4 quantiser 1 (best, default) to 31")
    convert.add_argument("--fps", type=float, help="frame rate > 0 (default: the source's, 25 for images)")
    convert.set_defaults(func=_reencode)
