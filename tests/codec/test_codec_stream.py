"""Streaming: `iter_compressed` yields what `read_compressed` returns, one P frame at a time; whole-clip work
(`iter_compressed`, `cvfer inspect`) runs in memory that does not grow with the clip; `num_frames` is bounded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvfer.codec import iter_compressed, read_compressed, reader, write_video
from cvfer.codec.reader import MAX_RESULT_BYTES, RESULT_BYTES_PER_PIXEL
from cvfer.errors import CompressedVideoError, ConfigError


@pytest.mark.parametrize("options", [{}, {"accumulate": True}, {"residual": "codec"}])
def test_iter_compressed_yields_what_read_compressed_returns(make_clip, frames, options):
    clip = make_clip(frames.zoom(6))
    video = read_compressed(clip, **options)
    streamed = list(iter_compressed(clip, **options))
    assert [frame.index for frame in streamed] == video.frame_indices.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(np.stack([frame.motion_vectors for frame in streamed]), video.motion_vectors)
    np.testing.assert_array_equal(np.stack([frame.residual for frame in streamed]), video.residuals)
    np.testing.assert_array_equal(streamed[0].iframe, video.iframe)
    assert all(frame.iframe is streamed[0].iframe for frame in streamed)
    assert len({id(frame.residual) for frame in streamed}) == len(streamed)  # each frame's arrays are its own


def test_iter_compressed_checks_options_at_the_call_and_the_file_while_iterating(make_clip, frames, tmp_path):
    with pytest.raises(ConfigError, match="residual mode"):
        iter_compressed(tmp_path / "missing.mp4", residual="yuv")
    missing = iter_compressed(tmp_path / "missing.mp4")
    with pytest.raises(CompressedVideoError, match="file not found"):
        next(missing)
    with pytest.raises(CompressedVideoError, match="no P frames"):
        list(iter_compressed(make_clip(frames.zoom(1), name="one.mp4")))


def test_num_frames_has_an_upper_limit(translation_clip):
    most = MAX_RESULT_BYTES // (64 * 96 * RESULT_BYTES_PER_PIXEL)
    with pytest.raises(ConfigError) as caught:
        read_compressed(translation_clip, num_frames=10**6)
    message = str(caught.value)
    assert message.startswith(f"{translation_clip}: num_frames=1000000 would return")
    assert f"limit of {MAX_RESULT_BYTES // 2**30} GiB ({most} frames at this size)" in message
    assert f"ask for at most {most} frames, or go through the clip with cvfer.codec.iter_compressed" in message
    assert len(read_compressed(translation_clip, num_frames=12).frame_indices) == 12


def moving_blocks(num_frames: int, height: int, width: int) -> Iterator[np.ndarray]:
    """A random 8×8-block pattern sliding diagonally (cheap to make at any length)."""
    pattern = np.random.default_rng(0).integers(0, 256, (height // 8 + 4, width // 8 + 4, 3), dtype=np.uint8)
    pattern = pattern.repeat(8, axis=0).repeat(8, axis=1)
    for t in range(num_frames):
        top, left = (2 * t) % 24, (3 * t) % 24
        yield np.ascontiguousarray(pattern[top : top + height, left : left + width])


# Peak resident memory (VmHWM) after warming up on a short clip, then after whole-clip work on a long one.
PEAK_PROBE = """
import sys
from cvfer.cli import main
from cvfer.codec import iter_compressed, read_compressed

def peak_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))

short, long = sys.argv[1:]
for clip in (short, long):
    for _ in iter_compressed(clip):
        pass
    read_compressed(clip, num_frames=4)
    main(["inspect", clip])
    print("peak", peak_mib(), file=sys.stderr)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_whole_clip_work_does_not_grow_with_the_clip(tmp_path):
    height, width = 240, 320
    short = write_video(tmp_path / "short.mp4", moving_blocks(20, height, width))
    long = write_video(tmp_path / "long.mp4", moving_blocks(300, height, width))
    run = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(short), str(long)], capture_output=True, text=True, check=True)
    after_short, after_long = (float(line.split()[1]) for line in run.stderr.splitlines() if line.startswith("peak"))
    # Holding every P frame's result would take 280 × 0.77 MB more, its decoded pictures 280 × 0.12 MB.
    assert after_long - after_short < 12, run.stderr
    assert run.stdout.count("MIC-ready:  yes") == 2


@pytest.mark.parametrize("options", [{}, {"accumulate": True}, {"num_frames": 9}])
def test_large_results_reuse_a_dropped_results_memory_and_never_one_still_held(make_clip, frames, monkeypatch, options):
    # Every result goes through the recycled blocks here (in use they take results of 32 MiB or more).
    monkeypatch.setattr(reader, "RECYCLE_MIN_BYTES", 0)
    monkeypatch.setattr(reader, "_recycled_results", reader._RecycledResults())
    first_clip, second_clip = make_clip(frames.zoom(6), name="zoom.mp4"), make_clip(frames.noise(6), name="noise.mp4")
    expected = {clip: read_compressed(clip, **options) for clip in (first_clip, second_clip)}
    held = read_compressed(first_clip, **options)
    kept_view = read_compressed(second_clip, **options).residuals[2]  # a view keeps its whole block in use
    fresh = read_compressed(second_clip, **options)
    assert not any(np.shares_memory(a, b) for a, b in [(held.residuals, kept_view), (fresh.residuals, kept_view),
                                                       (fresh.residuals, held.residuals), (fresh.motion_vectors, held.motion_vectors)])
    np.testing.assert_array_equal(kept_view, expected[second_clip].residuals[2])
    np.testing.assert_array_equal(held.residuals, expected[first_clip].residuals)
    blocks = len(reader._recycled_results.blocks)
    del held
    reused = read_compressed(second_clip, **options)  # into the first clip's dropped block: every byte rewritten
    assert len(reader._recycled_results.blocks) == blocks
    np.testing.assert_array_equal(reused.motion_vectors, expected[second_clip].motion_vectors)
    np.testing.assert_array_equal(reused.residuals, expected[second_clip].residuals)
    del fresh, reused, kept_view, expected
    read_compressed(make_clip(frames.zoom(3), name="short.mp4"), **options)  # another size drops every free block
    assert len(reader._recycled_results.blocks) == 1
