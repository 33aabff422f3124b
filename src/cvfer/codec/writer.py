"""Encode RGB frames into the MIC format: MPEG-4 Part 2, one GOP over the whole clip, no B frames."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cvfer.codec.reader import _reason
from cvfer.errors import CompressedVideoError, ConfigError
from cvfer.io import atomic_open

# FFmpeg's FF_QP2LAMBDA: `-q:v q` on the command line is global_quality = q * 118 with the QSCALE flag.
_QP2LAMBDA = 118
MAX_GOP = 100_000
# FFmpeg's own "never" value for the scene-change threshold: without it the MPEG-4 encoder starts a
# new GOP (an extra I frame) at every abrupt change, whatever gop_size says.
_NO_SCENE_CUTS = "1000000000"
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".avi": "avi", ".mkv": "matroska", ".mov": "mov"}


def _encoder_options(codec: str, quality: int, gop_size: int, max_b_frames: int) -> dict[str, str]:
    """Private encoder options that keep the GOP structure what was asked for."""
    if codec == "mpeg4":
        # FFmpeg's MPEG-4 encoder caps the GOP at 600 frames unless `strict` allows more.
        return {"sc_threshold": _NO_SCENE_CUTS, "strict": "experimental"}
    gop = f"keyint={gop_size}:min-keyint={gop_size}:scenecut=0:bframes={max_b_frames}"
    if codec == "libx264":
        return {"qp": str(quality), "x264-params": f"{gop}:ref=1"}
    if codec == "libx265":
        return {"x265-params": f"{gop}:log-level=error"}
    return {}


def _configure_context(context: av.codec.context.CodecContext, codec: str, quality: int, gop_size: int,
                       max_b_frames: int) -> None:
    """Set GOP length, B frames, square pixels and (MPEG-4) the fixed quantiser."""
    context.gop_size = gop_size
    context.max_b_frames = max_b_frames
    context.sample_aspect_ratio = Fraction(1, 1)
    if codec == "mpeg4":
        # `-q:v q` alone is clipped to the encoder's default qmin of 2; pinning qmin = qmax = q makes
        # every frame really use quantiser q (tests/codec checks q=1 differs from q=2).
        context.qscale = True
        context.global_quality = quality * _QP2LAMBDA
        context.qmin = quality
        context.qmax = quality


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 25.0,
    codec: str = "mpeg4",
    quality: int = 1,
    gop_size: int = MAX_GOP,
    max_b_frames: int = 0,
) -> Path:
    """Encode H×W×3 uint8 RGB `frames` to `path` (container from the suffix), atomically.

    Defaults are the paper's `ffmpeg -q:v 1 -g 300 -c:v mpeg4` with the GOP long enough to hold the
    whole clip and scene-cut detection off, so the first frame is the only I frame and every other
    frame is a P frame. `codec` may also be "libx264" or "libx265" (used to make test clips); for
    libx264 `quality` is the constant QP. Width and height must be even.
    """
    path = Path(path)
    if not 1 <= quality <= 31:
        raise ConfigError(f"quality {quality} is outside 1..31", path, "use 1 (best, the paper's -q:v 1) to 31")
    container_format = _CONTAINERS.get(path.suffix.lower(), "mp4")
    with atomic_open(path, "wb") as handle:
        try:
            container = av.open(handle, mode="w", format=container_format)
            try:
                stream = None
                for frame in frames:
                    frame = np.ascontiguousarray(frame, dtype=np.uint8)
                    if stream is None:
                        height, width = frame.shape[:2]
                        if height % 2 or width % 2:
                            raise ConfigError(f"frame size {height}×{width} is odd", path, "crop or resize to even sides")
                        stream = container.add_stream(
                            codec,
                            rate=Fraction(fps).limit_denominator(1001),
                            options=_encoder_options(codec, quality, gop_size, max_b_frames),
                        )
                        stream.height, stream.width = height, width
                        stream.pix_fmt = "yuv420p"
                        _configure_context(stream.codec_context, codec, quality, gop_size, max_b_frames)
                    video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                    container.mux(stream.encode(video_frame))
                if stream is None:
                    raise ConfigError("no frames to write", path, "pass at least one frame")
                container.mux(stream.encode(None))
            finally:
                container.close()
        except av.error.FFmpegError as error:
            raise CompressedVideoError(f"encoding failed ({_reason(error)})", path, "check the frames and the output folder") from error
    return path
