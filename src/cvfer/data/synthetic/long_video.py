"""A long synthetic video with known expression boundaries: `write_long_video(path, expressions, ...)`.

One identity (drawn from its own seed space, so it is none of the benchmark's subjects) shows the
expressions in a row, one segment each of `seconds_each` seconds: neutral, a rise to the apex, the apex
held, a fall back to neutral (or, with `held=True`, the apex for the whole segment). The segment
`BLANK` shows the background only, no face. The face is rendered by `render_face` at `face_size` and
placed in the middle of a `size` frame; faces are cached per (expression, intensity step), so an hour
of 720p costs little more than encoding it. Frames are made and encoded one at a time (memory stays flat).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from cvfer.codec.writer import write_video
from cvfer.data.synthetic.expressions import _ease_in, emotion_action_units
from cvfer.data.synthetic.render import Lighting, render_face, sample_identity
from cvfer.errors import ConfigError

BLANK = "blank"  # a segment without a face
NEUTRAL = "neutral"
LONG_VIDEO_SPACE = 4  # seed space of the long video's identity, apart from the benchmark's (0-3)
INTENSITY_STEPS = 32  # rendered intensity levels per expression (the cache's resolution)
# Fractions of a segment: neutral until RISE_START, apex from RISE_END to FALL_START, neutral after FALL_END.
RISE_START, RISE_END, FALL_START, FALL_END = 0.15, 0.4, 0.6, 0.85
APEX_INTENSITY = 0.9
NOISE_STD = 2.0  # sensor noise on the face's square, grey levels (as the benchmark's default)


class Segment(NamedTuple):
    """One ground-truth segment: [start, end) in seconds and the expression shown (`BLANK`: no face)."""

    start: float
    end: float
    expression: str


def segment_intensity(progress: np.ndarray | float, held: bool = False) -> np.ndarray:
    """Expression intensity in [0, 1] at `progress` (0..1) through a segment: neutral → apex → neutral."""
    progress = np.asarray(progress, dtype=float)
    if held:
        return np.ones_like(progress)
    rise = _ease_in((progress - RISE_START) / (RISE_END - RISE_START))
    fall = _ease_in((FALL_END - progress) / (FALL_END - FALL_START))
    return np.minimum(np.minimum(rise, fall), 1.0)


def _check(expressions: Sequence[str], seconds_each: float, fps: float, size: tuple[int, int], face_size: int) -> None:
    height, width = size
    checks = [
        (len(expressions) > 0, "give at least one expression"),
        (seconds_each * fps >= 3, f"seconds_each={seconds_each} at fps={fps} gives fewer than 3 frames a segment"),
        (height % 2 == 0 and width % 2 == 0, f"frame size {height}×{width} must have even sides"),
        (16 <= face_size <= min(height, width) and face_size % 2 == 0,
         f"face_size={face_size} must be even, >= 16 and fit the {height}×{width} frame"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"long video: {message}", fix="see cvfer.data.synthetic.long_video")
    for expression in expressions:
        if expression != BLANK:
            emotion_action_units(expression)  # ConfigError naming the known emotions


def write_long_video(
    path: str | Path,
    expressions: Sequence[str],
    seconds_each: float = 4.0,
    fps: float = 25.0,
    size: tuple[int, int] = (720, 1280),
    seed: int = 0,
    *,
    face_size: int | None = None,
    held: bool = False,
    gop_seconds: float = 2.0,
    codec: str = "mpeg4",
    quality: int = 4,
    progress: bool = True,
) -> list[Segment]:
    """Write the video to `path` and return its ground truth: one `Segment` per expression, in order.

    `size` is (height, width); `face_size` (default: half the shorter side, even) the rendered face's
    side. `gop_seconds` sets the I-frame interval (so `cvfer predict --timeline --per-gop` has GOPs).
    Frame k shows time k / fps; segment i covers frames [round(i·n), round((i+1)·n)), n = seconds_each·fps.
    """
    height, width = size
    face_size = face_size or (min(height, width) // 4) * 2
    _check(expressions, seconds_each, fps, size, face_size)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(LONG_VIDEO_SPACE,)))
    identity = sample_identity(rng)
    frames_each = seconds_each * fps
    bounds = [round(index * frames_each) for index in range(len(expressions) + 1)]
    top, left = (height - face_size) // 2, (width - face_size) // 2
    background = np.full((height, width, 3), np.rint(np.asarray(identity.background) * 255), dtype=np.uint8)
    faces: dict[tuple[str, int], np.ndarray] = {}

    def face(expression: str, step: int) -> np.ndarray:
        if (expression, step) not in faces:
            action_units = emotion_action_units(expression, APEX_INTENSITY * step / INTENSITY_STEPS)
            rendered = render_face(identity, action_units, None, Lighting(), face_size)
            faces[expression, step] = rendered.astype(np.float32) + 0.5  # + 0.5: the uint8 cast below rounds
        return faces[expression, step]

    def frames() -> Iterator[np.ndarray]:
        for index, expression in enumerate(expressions):
            count = bounds[index + 1] - bounds[index]
            steps = np.rint(segment_intensity((np.arange(count) + 0.5) / count, held) * INTENSITY_STEPS).astype(int)
            for step in steps:
                frame = background.copy()
                if expression != BLANK:
                    key = (NEUTRAL, 0) if step == 0 or expression == NEUTRAL else (expression, int(step))
                    noise = rng.standard_normal((face_size, face_size, 3), dtype=np.float32)
                    noisy = np.clip(noise * NOISE_STD + face(*key), 0, 255)
                    frame[top : top + face_size, left : left + face_size] = noisy.astype(np.uint8)
                yield frame

    gop_size = max(1, round(gop_seconds * fps))
    bar = tqdm(frames(), total=bounds[-1], desc="long video", unit="frame", disable=not progress)
    write_video(path, bar, fps=fps, codec=codec, quality=quality, gop_size=gop_size)
    return [
        Segment(bounds[index] / fps, bounds[index + 1] / fps, expression) for index, expression in enumerate(expressions)
    ]
