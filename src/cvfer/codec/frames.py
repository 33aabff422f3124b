"""Decoded frames and header facts of any video or image PyAV reads: the door for code that needs no
compressed domain (dataset preparation, prediction, `cvfer bench`).

Files are opened and judged by the reader's own checks (`_open_video`, `_packets`, `_decode`: the header's frame
count or length, the decoder's corrupt flag), so a missing, truncated or corrupt file is the same
`CompressedVideoError`, naming it, as `read_compressed` raises, and never a shorter clip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from cvfer.codec.reader import _decode, _fps, _open_video, _packets, _rgb_frames


@dataclass(frozen=True)
class StreamHeader:
    """What a video's header says about its first video stream, read without decoding."""

    path: Path
    codec: str
    size: tuple[int, int]  # (height, width)
    fps: float  # 0.0 when the header states no rate


def read_header(path: str | Path) -> StreamHeader:
    """Codec, frame size and frame rate of the first video stream (opens the file, decodes nothing)."""
    path = Path(path)
    with _open_video(path) as (_, stream):
        context = stream.codec_context
        return StreamHeader(path=path, codec=context.name, size=(context.height, context.width), fps=_fps(stream))


def count_frames(path: str | Path) -> int:
    """Frames of the first video stream, counted by demuxing (no decoding); a truncated file is refused."""
    path = Path(path)
    with _open_video(path) as (container, stream):
        return sum(1 for _ in _packets(path, container, stream))


def _decoded_frames(path: Path, *, single_thread: bool = False) -> Iterator[av.VideoFrame]:
    """Every frame of the video (or image) at `path`, in display order, demuxed and decoded one packet at a
    time (memory does not grow with the file; a truncated file is refused once its end is reached)."""
    with _open_video(path) as (container, stream):
        if single_thread:
            stream.thread_type = "NONE"
        yield from _decode(path, stream.codec_context, _packets(path, container, stream))


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decoded H×W×3 uint8 RGB frames of a video, one at a time, in display order."""
    yield from _rgb_frames(_decoded_frames(Path(path)))


def read_image(path: str | Path) -> np.ndarray:
    """H×W×3 uint8 RGB pixels of an image file (of a video: its first frame, once the whole file is checked)."""
    count_frames(path)  # a demux pass: a truncated video is refused even though its first frame decodes
    with contextlib.closing(_decoded_frames(Path(path))) as frames:
        return next(_rgb_frames(frames))


def decode_all(path: str | Path) -> int:
    """Decode every frame to RGB on one thread and keep nothing (the floor `cvfer bench` times); returns the count.

    One converter for the clip, as the readers use (`frame.to_ndarray` would set up a new one every frame)."""
    return sum(1 for _ in _rgb_frames(_decoded_frames(Path(path), single_thread=True)))
