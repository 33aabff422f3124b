"""One clip's frames → its fixed crop box → a `size`×`size` MIC-format clip: the one path by which `cvfer
prepare` makes a dataset's clips and `cvfer predict` re-encodes an input, so both crop alike.

The frames are read twice when the box is the tracked face's (find the box, then crop): decoded once and
kept while they fit in `FRAME_MEMORY_BYTES`, else decoded a second time. The centred square needs one pass.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from cvfer.codec.writer import write_video
from cvfer.data import faces
from cvfer.errors import DatasetError

# Decoded frames kept between finding the face box and cropping (e.g. 4 s of 1080p at 30 fps); a longer
# clip is decoded a second time instead.
FRAME_MEMORY_BYTES = 768 * 2**20
DETECT_EVERY = 10  # frames between face detections (`faces.track_face`)


def _timed(items: Iterable[np.ndarray], timing: dict[str, float], key: str) -> Iterator[np.ndarray]:
    """`items`, adding the seconds spent producing each one to `timing[key]`."""
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        item = next(iterator, None)
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - start
        if item is None:
            return
        yield item


class _TwoPassFrames:
    """A clip's frames for two passes (find the face box, then crop): decoded once and kept while they fit in
    `FRAME_MEMORY_BYTES`, else decoded again for the second pass. Decoding time goes to `timing["decode_s"]`."""

    def __init__(self, read: Callable[[], Iterator[np.ndarray]], timing: dict[str, float]):
        self.read = read
        self.timing = timing
        self.kept: list[np.ndarray] | None = []

    def first_pass(self) -> Iterator[np.ndarray]:
        """Every frame, keeping them for `second_pass` while they fit."""
        kept_bytes = 0
        for frame in _timed(self.read(), self.timing, "decode_s"):
            if self.kept is not None:
                kept_bytes += frame.nbytes
                self.kept.append(frame)
                if kept_bytes > FRAME_MEMORY_BYTES:
                    self.kept = None
            yield frame

    def second_pass(self) -> Iterator[np.ndarray]:
        """Every frame again: the kept ones, or decoded anew."""
        if self.kept is not None:
            return iter(self.kept)
        return _timed(self.read(), self.timing, "decode_s")


def _counted(frames: Iterable[np.ndarray], counter: list[int]) -> Iterator[np.ndarray]:
    for frame in frames:
        counter[0] += 1
        yield frame


def write_cropped_clip(
    read: Callable[[], Iterator[np.ndarray]],
    destination: Path,
    size: int,
    crop_faces: bool,
    fps: float,
    *,
    source: str | Path,
    detect_every: int = DETECT_EVERY,
    timing: dict[str, float] | None = None,
) -> tuple[faces.FaceBox, int]:
    """Crop the frames `read()` yields (a fresh iterator on each call) to the tracked face's box
    (`faces.track_face`) or, without `crop_faces`, the first frame's centred square; resize to `size` and
    write them in the MIC format at `destination`. Returns (the box, the number of frames). A clip with no
    frames is a `DatasetError`, one with no face a `faces.FaceNotFoundError`, both naming `source`. Adds the
    seconds of decoding, detection and crop + encode to `timing` ("decode_s", "detect_s", "crop_encode_s")."""
    timing = {} if timing is None else timing
    counter = [0]
    if crop_faces:
        frames = _TwoPassFrames(read, timing)
        start, decoded = time.perf_counter(), timing.get("decode_s", 0.0)
        track = faces.track_face(frames.first_pass(), detect_every=detect_every)
        timing["detect_s"] = timing.get("detect_s", 0.0) + time.perf_counter() - start - (timing["decode_s"] - decoded)
        if track is None:
            raise faces.FaceNotFoundError("no face found in any checked frame", Path(source), "pass a clip showing a frontal face")
        box, remaining = track.clip_box, _counted(frames.second_pass(), counter)
    else:
        remaining = _counted(_timed(read(), timing, "decode_s"), counter)
        first = next(remaining, None)
        if first is None:
            raise DatasetError("has no frames", Path(source))
        box, remaining = faces.center_box(*first.shape[:2]), itertools.chain([first], remaining)
    start, decoded = time.perf_counter(), timing.get("decode_s", 0.0)
    try:
        write_video(destination, faces.crop_frames(remaining, box, size), fps=fps)
    finally:
        timing["crop_encode_s"] = (
            timing.get("crop_encode_s", 0.0) + time.perf_counter() - start - (timing.get("decode_s", 0.0) - decoded)
        )
    return box, counter[0]
