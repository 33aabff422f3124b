"""The compressed-video cache: content-keyed, parameter-keyed, atomic, safe under concurrent fills."""

from __future__ import annotations

import functools
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest

from cvfer.codec import read_compressed
from cvfer.codec.cache import CompressedCache, read_compressed_cached
from cvfer.errors import CompressedVideoError


def assert_same(first, second) -> None:
    for name in ("iframe", "motion_vectors", "residuals", "frame_indices"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert (first.frame_types, first.fps, first.size) == (second.frame_types, second.fps, second.size)


def entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.npz"))


def test_hit_returns_the_stored_result(translation_clip, tmp_path):
    cache = CompressedCache(tmp_path / "cache")
    first = cache.get(translation_clip, num_frames=3)
    assert len(entries(tmp_path / "cache")) == 1
    assert_same(first, read_compressed(translation_clip, num_frames=3))
    second = cache.get(translation_clip, num_frames=3)
    assert_same(first, second)
    assert second.path == translation_clip and len(entries(tmp_path / "cache")) == 1


def test_key_follows_content_and_parameters(translation_clip, make_clip, frames, tmp_path):
    cache = CompressedCache(tmp_path / "cache")
    copy = shutil.copy(translation_clip, tmp_path / "copy.mp4")
    assert cache.entry_path(copy) == cache.entry_path(translation_clip)
    assert cache.entry_path(translation_clip, residual="codec") != cache.entry_path(translation_clip)
    assert cache.entry_path(translation_clip, accumulate=True) != cache.entry_path(translation_clip)
    assert cache.entry_path(translation_clip, num_frames=4) != cache.entry_path(translation_clip)
    other = make_clip(frames.zoom(6), name="other.mp4")
    assert cache.entry_path(other) != cache.entry_path(translation_clip)


def test_damaged_entry_is_recomputed(translation_clip, tmp_path):
    cache = CompressedCache(tmp_path / "cache")
    entry = cache.entry_path(translation_clip)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"not an npz")
    assert_same(cache.get(translation_clip), read_compressed(translation_clip))
    assert entry.stat().st_size > 1000


def test_bad_video_is_not_cached(tmp_path):
    with pytest.raises(CompressedVideoError, match="file not found"):
        read_compressed_cached(tmp_path / "missing.mp4", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_concurrent_fills_agree_and_leave_one_entry(make_clip, frames, tmp_path):
    clip = make_clip(frames.zoom(8))
    root = tmp_path / "cache"
    # spawn, not fork: a forked child of a process with FFmpeg/OpenMP threads can deadlock.
    fill = functools.partial(read_compressed_cached, cache_dir=str(root), accumulate=True)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(fill, [str(clip)] * 8)
    expected = read_compressed(clip, accumulate=True)
    for video in results:
        np.testing.assert_array_equal(video.motion_vectors, expected.motion_vectors)
        np.testing.assert_array_equal(video.residuals, expected.residuals)
    assert len(entries(root)) == 1
    assert [path.name for path in root.rglob("*") if path.is_file()] == [entries(root)[0].name]
