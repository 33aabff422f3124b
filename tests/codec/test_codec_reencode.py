"""write_video and reencode produce the MIC format: MPEG-4 Part 2, one I frame, no B frames, even sides."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from cvfer.codec import probe, read_compressed, read_frames, reencode
from cvfer.errors import CompressedVideoError, ConfigError


def test_writer_applies_the_quantiser(make_clip, frames):
    clip_frames = frames.zoom(6)
    sizes, errors = {}, {}
    for quality in (1, 2, 8):
        clip = make_clip(clip_frames, name=f"q{quality}.mp4", quality=quality)
        sizes[quality] = clip.stat().st_size
        errors[quality] = np.abs(read_frames(clip).astype(int) - np.stack(clip_frames)).mean()
    assert sizes[1] > sizes[2] > sizes[8]
    assert errors[1] < errors[2] < errors[8]
    with pytest.raises(ConfigError, match="quality"):
        make_clip(clip_frames, name="bad.mp4", quality=0)


def test_writer_keeps_one_gop_even_across_scene_cuts(make_clip, frames):
    clip = make_clip(frames.noise(6))
    info = probe(clip)
    assert info.codec == "mpeg4" and info.frame_types == "IPPPPP"


def test_writer_keeps_one_gop_past_the_mpeg4_encoders_600_frame_cap(tmp_path):
    from cvfer.codec.writer import write_video

    still = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    clip = write_video(tmp_path / "long.mp4", (still for _ in range(650)))
    assert probe(clip).frame_types == "I" + "P" * 649


def test_reencode_video_with_b_frames(make_clip, frames, tmp_path):
    source = make_clip(frames.zoom(7), name="src.mp4", codec="libx264", max_b_frames=2, gop_size=3)
    assert "B" in probe(source).frame_types
    out = reencode(source, tmp_path / "mic.mp4")
    info = probe(out)
    assert info.codec == "mpeg4" and info.frame_types == "I" + "P" * 6 and info.size == (64, 96)
    assert np.abs(read_frames(out).astype(int) - read_frames(source)).mean() < 3
    assert read_compressed(out).frame_types == info.frame_types


def test_reencode_resizes(translation_clip, tmp_path):
    assert probe(reencode(translation_clip, tmp_path / "square.mp4", size=32)).size == (32, 32)
    assert probe(reencode(translation_clip, tmp_path / "wide.mkv", size=(48, 80))).size == (48, 80)
    with pytest.raises(ConfigError, match="even"):
        reencode(translation_clip, tmp_path / "odd.mp4", size=31)


def test_reencode_folder_of_images_sorted_by_name(frames, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    clip_frames = frames.zoom(4)
    for index, frame in enumerate(clip_frames):
        Image.fromarray(frame[:63, :95]).save(folder / f"frame_{index:03d}.png")
    (folder / "notes.txt").write_text("ignored")
    out = reencode(folder, tmp_path / "images.mp4")
    decoded = read_frames(out)
    assert decoded.shape == (4, 62, 94, 3) and probe(out).fps == 25.0
    error = np.array([[np.abs(decoded[t].astype(int) - clip_frames[u][:62, :94]).mean() for u in range(4)] for t in range(4)])
    assert error.diagonal().max() < 6
    assert (error.argmin(axis=1) == np.arange(4)).all()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CompressedVideoError, match="no images"):
        reencode(empty, tmp_path / "none.mp4")


def encode_raw(path, frames, codec: str, aspect: Fraction) -> None:
    """A clip written straight with PyAV, with a chosen sample aspect ratio."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.sample_aspect_ratio = aspect
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))


def test_reencode_webm(frames, tmp_path):
    source = tmp_path / "clip.webm"
    encode_raw(source, frames.zoom(3), "libvpx-vp9", Fraction(1, 1))
    out = reencode(source, tmp_path / "from_webm.mp4")
    assert probe(out).size == (64, 96) and probe(out).frame_types == "IPP"


def test_reencode_makes_pixels_square(frames, tmp_path):
    source = tmp_path / "anamorphic.avi"
    encode_raw(source, [frame[:, :48] for frame in frames.zoom(3)], "mpeg4", Fraction(2, 1))
    out = reencode(source, tmp_path / "square.mp4")
    assert probe(out).size == (64, 96)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.sample_aspect_ratio in (None, Fraction(1, 1))
