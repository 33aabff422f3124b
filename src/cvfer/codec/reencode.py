"""Convert anything PyAV decodes (a video, or a folder of images) to the MIC format, in pure PyAV."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cvfer.codec.frames import _decoded_frames
from cvfer.codec.reader import _fps, _open_video
from cvfer.codec.writer import write_video
from cvfer.errors import CompressedVideoError, ConfigError
from cvfer.io import check_output_file

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
DEFAULT_FPS = 25.0


def _folder_frames(folder: Path) -> Iterator[av.VideoFrame]:
    images = sorted(child for child in folder.iterdir() if child.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise CompressedVideoError(
            "folder holds no images", folder, f"put frames named in order ({', '.join(sorted(IMAGE_SUFFIXES))}) in it"
        )
    for image in images:
        yield next(_decoded_frames(image))


def _target_size(
    frame: av.VideoFrame, size: int | tuple[int, int] | None, aspect: Fraction | None, src: Path
) -> tuple[int, int]:
    """(height, width) of the output: `size` if given, else the square-pixel size cut down to even sides."""
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if height <= 0 or width <= 0 or height % 2 or width % 2:
            raise ConfigError(f"size {size} must be positive and even", src, "pass e.g. 160 or (240, 320)")
        return height, width
    width = round(frame.width * float(aspect)) if aspect else frame.width
    return frame.height - frame.height % 2, width - width % 2


def _rgb_at(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """RGB pixels of `frame` at height×width: the odd last row/column cropped, otherwise resampled."""
    if frame.height - height in (0, 1) and frame.width - width in (0, 1):
        return frame.to_ndarray(format="rgb24")[:height, :width]
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()


def reencode(
    src: str | Path, dst: str | Path, *, size: int | tuple[int, int] | None = None, quality: int = 1,
    fps: float | None = None,
) -> Path:
    """Re-encode `src` (video file or folder of images sorted by name) to MPEG-4 Part 2 at `dst`.

    One GOP over the whole clip, no B frames, square pixels, even sides (`ffmpeg -vf setsar=1:1 -q:v 1
    -g <all> -c:v mpeg4`). `size` is (height, width), or an int for a square frame; without it the
    frame keeps its display size (anamorphic pixels resampled square) with an odd last row/column cut.
    `fps` defaults to the source's rate, or 25 for a folder of images. `ConfigError` before any work when
    `fps` is not a positive finite number, `dst` is a folder or not writable, or `dst` is `src` itself.
    """
    src, dst = Path(src), check_output_file(dst, "destination")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"frame rate {fps} is not a positive finite number", fix="pass a rate such as 25 or 29.97")
    if src.exists() and dst.exists() and os.path.samefile(src, dst):
        raise ConfigError(f"destination is the source {src} itself", dst, "write the re-encoded video to another path")
    if src.is_dir():
        frames = _folder_frames(src)
        rate, aspect = fps or DEFAULT_FPS, None
    else:
        with _open_video(src) as (_, stream):
            rate = fps or _fps(stream) or DEFAULT_FPS
            aspect = stream.codec_context.sample_aspect_ratio
        frames = _decoded_frames(src)
    first = next(frames)
    height, width = _target_size(first, size, aspect, src)
    if height < 2 or width < 2:
        raise CompressedVideoError(f"frame of {first.height}×{first.width} is too small", src, "use frames at least 2×2")

    def rgb_frames() -> Iterator[np.ndarray]:
        yield _rgb_at(first, height, width)
        for frame in frames:
            yield _rgb_at(frame, height, width)

    return write_video(dst, rgb_frames(), fps=rate, quality=quality)
