"""Tiny test clips made on the fly: a smooth random texture moved by known amounts.

Test modules cannot import this file (pytest's importlib mode), so the frame makers reach them
through the `frames` fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, zoom

from cvfer.codec import write_video

HEIGHT, WIDTH = 64, 96


def smooth_texture(height: int, width: int, seed: int = 0, sigma: float = 2.5) -> np.ndarray:
    """A smooth random RGB texture, uint8, with full contrast."""
    noise = np.random.default_rng(seed).random((height, width, 3))
    texture = gaussian_filter(noise, sigma=(sigma, sigma, 0))
    return (255 * (texture - texture.min()) / np.ptp(texture)).astype(np.uint8)


def translated_frames(steps: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Crops of one texture; frame t is frame t-1 with its content moved by steps[t-1] = (dx, dy) pixels."""
    margin = 4 * (len(steps) + 1) + 8
    canvas = smooth_texture(HEIGHT + 2 * margin, WIDTH + 2 * margin, seed)
    x, y = margin, margin
    frames = [canvas[y : y + HEIGHT, x : x + WIDTH]]
    for dx, dy in steps:
        x, y = x - dx, y - dy
        frames.append(canvas[y : y + HEIGHT, x : x + WIDTH])
    return frames


def zoom_frames(num_frames: int, seed: int = 0) -> list[np.ndarray]:
    """A texture zooming in by 3 % a frame (motion grows from the centre outwards)."""
    texture = smooth_texture(HEIGHT, WIDTH, seed, sigma=3.0).astype(np.float32)
    frames = []
    for t in range(num_frames):
        factor = 1.03**t
        zoomed = zoom(texture, (factor, factor, 1), order=1)
        top, left = (zoomed.shape[0] - HEIGHT) // 2, (zoomed.shape[1] - WIDTH) // 2
        frames.append(np.clip(zoomed[top : top + HEIGHT, left : left + WIDTH], 0, 255).astype(np.uint8))
    return frames


def noise_frames(num_frames: int, seed: int = 0) -> list[np.ndarray]:
    """Independent uniform noise frames (no motion to find; mostly intra macroblocks)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(num_frames)]


@pytest.fixture
def frames() -> SimpleNamespace:
    """The frame makers: frames.translated(steps), frames.zoom(n), frames.noise(n), frames.texture(h, w)."""
    return SimpleNamespace(translated=translated_frames, zoom=zoom_frames, noise=noise_frames, texture=smooth_texture)


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Path]:
    """make_clip(frames, name="clip.mp4", **write_video_options) -> path of the encoded clip."""

    def make(frames: list[np.ndarray], name: str = "clip.mp4", **options) -> Path:
        return write_video(tmp_path / name, frames, **options)

    return make


@pytest.fixture
def translation_clip(make_clip: Callable[..., Path]) -> Path:
    """MPEG-4 clip whose content moves by (2, 1), (2, 1), (-3, 2), (4, 0), (0, -2) pixels."""
    return make_clip(translated_frames([(2, 1), (2, 1), (-3, 2), (4, 0), (0, -2)]))
