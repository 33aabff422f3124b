"""Encode RGB frames into the MIC format: MPEG-4 Part 2, one GOP over the whole clip, no B frames."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from cvfer.io import atomic_open

# FFmpeg's FF_QP2LAMBDA: `-q:v q` on the command line is global_quality = q * 118 with the QSCALE flag.
_QP2LAMBDA = 118
MAX_GOP = 100_000


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
    whole clip, so the first frame is the only I frame. Width and height must be even.
    """
    path = Path(path)
    container_format = {".mp4": "mp4", ".avi": "avi", ".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower(), "mp4")
    with atomic_open(path, "wb") as handle:
        container = av.open(handle, mode="w", format=container_format)
        try:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if stream is None:
                    stream = container.add_stream(codec, rate=round(fps))
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.gop_size = gop_size
                    stream.codec_context.max_b_frames = max_b_frames
                    stream.codec_context.sample_aspect_ratio = 1
                    if codec == "mpeg4":
                        stream.options = {"flags": "+qscale", "global_quality": str(quality * _QP2LAMBDA)}
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                container.mux(stream.encode(video_frame))
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            container.mux(stream.encode(None))
        finally:
            container.close()
    return path
