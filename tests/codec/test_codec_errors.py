"""Every bad input gives a CompressedVideoError that names the file, the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvfer.codec import read_compressed, read_frames
from cvfer.errors import CompressedVideoError

REENCODE = "cvfer reencode"


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (0.1 * np.sin(np.linspace(0, 880 * np.pi, 16000))).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def expect_error(path: Path, problem: str, fix: str, **options) -> None:
    with pytest.raises(CompressedVideoError) as caught:
        read_compressed(path, **options)
    message = str(caught.value)
    assert str(path) in message and problem in message and fix in message


def test_missing_and_empty_files(tmp_path):
    expect_error(tmp_path / "missing.mp4", "file not found", "check the path")
    (tmp_path / "empty.mp4").touch()
    expect_error(tmp_path / "empty.mp4", "file is empty", "re-create")
    expect_error(tmp_path, "not a file", REENCODE)
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    expect_error(tmp_path / "gone.mp4", f"dangling symlink to {tmp_path / 'deleted.mp4'}", "check the path")
    (tmp_path / "loop.mp4").symlink_to("loop.mp4")
    expect_error(tmp_path / "loop.mp4", "symlink loop", "check the path")


def test_not_a_video_and_audio_only(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("certainly not a video\n" * 20)
    expect_error(text, "not a readable video", REENCODE)
    expect_error(write_audio_only(tmp_path / "sound.m4a"), "audio only", "pass a video file")


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_truncated_files(make_clip, frames, suffix):
    clip = make_clip(frames.zoom(8), name=f"clip{suffix}")
    data = clip.read_bytes()
    clip.write_bytes(data[: int(len(data) * 0.6)])
    expect_error(clip, "truncated", REENCODE)


def test_corrupted_stream(make_clip, frames):
    clip = make_clip(frames.zoom(8))
    data = bytearray(clip.read_bytes())
    for position in np.random.default_rng(0).integers(len(data) // 4, 3 * len(data) // 4, 30):
        data[position] ^= 0xFF
    clip.write_bytes(bytes(data))
    expect_error(clip, "corrupted", REENCODE)


def test_wrong_structure(make_clip, frames):
    clip_frames = frames.zoom(8)
    expect_error(make_clip(clip_frames, name="hevc.mp4", codec="libx265"), "HEVC", REENCODE)
    expect_error(make_clip(clip_frames, name="b.mp4", max_b_frames=2), "B frames", REENCODE)
    expect_error(make_clip(clip_frames, name="x264.mp4", codec="libx264", max_b_frames=3), "B frames", REENCODE)
    expect_error(make_clip(clip_frames, name="gop.mp4", gop_size=3), "second I frame at frame 3", REENCODE)
    expect_error(make_clip(clip_frames[:1], name="one.mp4"), "no P frames", "at least two frames")
    h264 = make_clip(clip_frames, name="h264.mp4", codec="libx264")
    expect_error(h264, "residual='codec' needs MPEG-4", "residual='rgb'", residual="codec")


def test_read_frames_errors(make_clip, frames, tmp_path):
    clip = make_clip(frames.zoom(3))
    with pytest.raises(CompressedVideoError, match="out of range: the video has 3 frames"):
        read_frames(clip, indices=[0, 3])
    with pytest.raises(CompressedVideoError, match="file not found"):
        read_frames(tmp_path / "nope.mp4")


@pytest.fixture(scope="module")
def fuzz_source(tmp_path_factory) -> bytes:
    from cvfer.codec import write_video

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (8, 12, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    clip_frames = [np.roll(base, (t, 2 * t), axis=(0, 1)) for t in range(5)]
    return write_video(tmp_path_factory.mktemp("fuzz") / "clip.mp4", clip_frames).read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keep=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=8),
    residual=st.sampled_from(["rgb", "codec"]),
)
def test_damaged_files_raise_or_read_cleanly(fuzz_source, tmp_path, keep, flips, residual):
    data = bytearray(fuzz_source[: max(1, int(len(fuzz_source) * keep))])
    for where, mask in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    clip = tmp_path / "damaged.mp4"
    clip.write_bytes(bytes(data))
    try:
        video = read_compressed(clip, residual=residual)
    except CompressedVideoError as error:
        assert str(clip) in str(error)
        return
    steps = len(video.frame_indices)
    height, width = video.size
    assert steps >= 1 and video.iframe.shape == (height, width, 3)
    assert video.motion_vectors.shape == (steps, 2, height, width)
    assert video.residuals.shape == (steps, height, width, 3)
    assert len(video.frame_types) == steps + 1
