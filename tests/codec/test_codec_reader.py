"""read_compressed / read_frames on clips with known motion: vectors, exact reconstruction, sampling."""

from __future__ import annotations

import av
import numpy as np
import pytest

from cvfer.codec import read_compressed, read_frames, warp
from cvfer.codec.reader import codec_residual_to_rgb, sample_p_frames
from cvfer.errors import CompressedVideoError, ConfigError

STEPS = [(2, 1), (2, 1), (-3, 2), (4, 0), (0, -2)]


def interior(field: np.ndarray, border: int = 16) -> np.ndarray:
    return field[..., border:-border, border:-border]


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_translation_vectors_match_the_known_motion(make_clip, frames, codec):
    clip = make_clip(frames.translated(STEPS), name=f"{codec}.mp4", codec=codec)
    video = read_compressed(clip)
    assert video.frame_types == "IPPPPP"
    np.testing.assert_array_equal(video.frame_indices, [1, 2, 3, 4, 5])
    assert video.motion_vectors.shape == (5, 2, 64, 96) and video.motion_vectors.dtype == np.int16
    assert video.residuals.shape == (5, 64, 96, 3) and video.residuals.dtype == np.int16
    for field, (dx, dy) in zip(video.motion_vectors, STEPS, strict=True):
        inner = interior(field)
        assert (inner[0] == dx).mean() > 0.9 and (inner[1] == dy).mean() > 0.9


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_reconstruction_identity_is_exact(make_clip, frames, codec):
    clip = make_clip(frames.zoom(6), name=f"{codec}.mp4", codec=codec)
    video = read_compressed(clip)
    decoded = read_frames(clip)
    np.testing.assert_array_equal(video.iframe, decoded[0])
    for field, residual, index in zip(video.motion_vectors, video.residuals, video.frame_indices, strict=True):
        rebuilt = warp(decoded[index - 1], field).astype(np.int16) + residual
        np.testing.assert_array_equal(rebuilt, decoded[index])


@pytest.mark.parametrize("accumulate", [False, True])
def test_identity_when_the_size_is_not_a_multiple_of_16(make_clip, frames, accumulate):
    clip = make_clip([frame[:56, :90] for frame in frames.zoom(6)], name="odd.mkv")
    video = read_compressed(clip, accumulate=accumulate)
    decoded = read_frames(clip)
    assert video.size == (56, 90)
    for field, residual, index in zip(video.motion_vectors, video.residuals, video.frame_indices, strict=True):
        reference = decoded[0] if accumulate else decoded[index - 1]
        np.testing.assert_array_equal(warp(reference, field) + residual, decoded[index])


def test_zoom_vectors_point_away_from_the_centre(make_clip, frames):
    video = read_compressed(make_clip(frames.zoom(5)))
    field = video.motion_vectors[-1].astype(float)
    left, right = field[0, 16:48, :24].mean(), field[0, 16:48, -24:].mean()
    top, bottom = field[1, :16, 24:72].mean(), field[1, -16:, 24:72].mean()
    assert left < 0 < right and top < 0 < bottom


def test_noise_clip_still_reads_with_exact_identity(make_clip, frames):
    clip = make_clip(frames.noise(4))
    video = read_compressed(clip)
    decoded = read_frames(clip)
    assert video.frame_types == "IPPP"
    for field, residual, index in zip(video.motion_vectors, video.residuals, video.frame_indices, strict=True):
        np.testing.assert_array_equal(warp(decoded[index - 1], field) + residual, decoded[index])


def slow_trace(fields: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """Accumulated `dst − src` fields by following every pixel back frame by frame (pure Python)."""
    traced = []
    for t in range(1, len(fields) + 1):
        accumulated = np.zeros((2, height, width), dtype=np.int16)
        for y in range(height):
            for x in range(width):
                source_x, source_y = x, y
                for field in reversed(fields[:t]):
                    source_x, source_y = (
                        min(max(source_x - int(field[0, source_y, source_x]), 0), width - 1),
                        min(max(source_y - int(field[1, source_y, source_x]), 0), height - 1),
                    )
                accumulated[:, y, x] = (x - source_x, y - source_y)
        traced.append(accumulated)
    return traced


def test_accumulate_matches_frame_by_frame_tracing(make_clip, frames):
    clip = make_clip(frames.zoom(4))
    step = read_compressed(clip)
    accumulated = read_compressed(clip, accumulate=True)
    decoded = read_frames(clip)
    expected = slow_trace(list(step.motion_vectors), 64, 96)
    np.testing.assert_array_equal(accumulated.motion_vectors, np.stack(expected))
    for field, residual, index in zip(accumulated.motion_vectors, accumulated.residuals, accumulated.frame_indices, strict=True):
        np.testing.assert_array_equal(warp(decoded[0], field) + residual, decoded[index])


def test_accumulated_translation_is_the_sum_of_steps(translation_clip):
    video = read_compressed(translation_clip, accumulate=True)
    totals = np.cumsum(STEPS, axis=0)
    for field, (dx, dy) in zip(video.motion_vectors, totals, strict=True):
        centre = field[:, 24:40, 40:56]
        assert (centre[0] == dx).all() and (centre[1] == dy).all()


def test_sampling_is_uniform_and_repeats_when_short(translation_clip):
    np.testing.assert_array_equal(read_compressed(translation_clip, num_frames=3).frame_indices, [1, 3, 5])
    long = read_compressed(translation_clip, num_frames=8)
    np.testing.assert_array_equal(long.frame_indices, [1, 2, 2, 3, 3, 4, 4, 5])
    full = read_compressed(translation_clip)
    np.testing.assert_array_equal(long.residuals[2], full.residuals[1])
    np.testing.assert_array_equal(long.motion_vectors[-1], full.motion_vectors[-1])
    np.testing.assert_array_equal(sample_p_frames(10, 1), [0])
    accumulated = read_compressed(translation_clip, num_frames=2, accumulate=True)
    every = read_compressed(translation_clip, accumulate=True)
    np.testing.assert_array_equal(accumulated.motion_vectors, every.motion_vectors[[0, 4]])


def test_metadata(translation_clip):
    video = read_compressed(translation_clip)
    assert video.size == (64, 96) and video.fps == 25.0 and video.path == translation_clip
    assert video.iframe.dtype == np.uint8 and video.iframe.flags.c_contiguous


def test_codec_residual_agrees_with_the_rgb_residual(make_clip, frames):
    rng = np.random.default_rng(1)
    moving = frames.translated([(2, 2), (4, 0), (-2, 2)])
    noisy = [np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8) for frame in moving]
    clip = make_clip(noisy)
    rgb = read_compressed(clip)
    codec = read_compressed(clip, residual="codec")
    np.testing.assert_array_equal(codec.motion_vectors, rgb.motion_vectors)
    inner_codec = codec.residuals[:, 16:-16, 16:-16].astype(float).ravel()
    inner_rgb = rgb.residuals[:, 16:-16, 16:-16].astype(float).ravel()
    assert np.abs(inner_codec).mean() > 2.0
    assert np.corrcoef(inner_codec, inner_rgb)[0, 1] > 0.6
    repeated = read_compressed(clip, residual="codec", num_frames=5)
    np.testing.assert_array_equal(repeated.frame_indices, [1, 2, 2, 3, 3])
    np.testing.assert_array_equal(repeated.residuals, codec.residuals[[0, 1, 1, 2, 2]])


def test_static_clip_has_almost_no_residual(make_clip, frames):
    frame = frames.translated([])[0]
    clip = make_clip([frame] * 4)
    for mode in ("rgb", "codec"):
        video = read_compressed(clip, residual=mode)
        assert not video.motion_vectors.any()
        assert np.abs(video.residuals).max() <= 2 and not video.residuals[1:].any()


def test_read_frames_by_index(translation_clip):
    decoded = read_frames(translation_clip)
    assert decoded.shape == (6, 64, 96, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(read_frames(translation_clip, indices=[5, 0, 5]), decoded[[5, 0, 5]])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"residual": "yuv"}, "residual mode"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 2.5}, "num_frames"),
        ({"residual": "codec", "accumulate": True}, "accumulate"),
    ],
)
def test_bad_options_are_config_errors(translation_clip, options, message):
    with pytest.raises(ConfigError, match=message):
        read_compressed(translation_clip, **options)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (63, 95)])
def test_codec_residual_colour_conversion_matches_bt601(height, width):
    rng = np.random.default_rng(height)
    chroma_shape = ((height + 1) // 2, (width + 1) // 2)
    planes = [rng.integers(0, 256, (height, width), dtype=np.uint8)]
    planes += [rng.integers(0, 256, chroma_shape, dtype=np.uint8) for _ in range(2)]
    luma = planes[0] - 128.0
    blue, red = (plane.repeat(2, 0).repeat(2, 1)[:height, :width] - 128.0 for plane in planes[1:])
    matrix = np.array([[1.164, 0.0, 1.596], [1.164, -0.392, -0.813], [1.164, 2.017, 0.0]])
    expected = np.stack([luma, blue, red], axis=-1) @ matrix.T
    converted = codec_residual_to_rgb(planes, height, width)
    assert converted.dtype == np.int16 and converted.shape == (height, width, 3)
    assert np.abs(converted - expected).max() < 1.0


def encode_mpeg4(path, clip_frames, qpel: bool) -> None:
    """An MPEG-4 clip in the MIC structure (one GOP, no B frames), with quarter-pel motion (`-flags +qpel`) or not."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25, options={"sc_threshold": "1000000000"})
        stream.height, stream.width = clip_frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = 1000, 0
        if qpel:
            stream.codec_context.flags |= av.codec.context.Flags.qpel
        for frame in clip_frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))


def test_codec_residual_refuses_quarter_pel_and_rgb_reads_it(frames, tmp_path):
    half_pel, quarter_pel = tmp_path / "hpel.mp4", tmp_path / "qpel.mp4"
    encode_mpeg4(half_pel, frames.translated(STEPS), qpel=False)
    encode_mpeg4(quarter_pel, frames.translated(STEPS), qpel=True)
    assert np.abs(read_compressed(half_pel, residual="codec").residuals).mean() < 3  # a residual, not a picture
    with pytest.raises(CompressedVideoError, match=r"quarter-pel motion \(frame 1\).*residual='rgb'"):
        read_compressed(quarter_pel, residual="codec")
    video = read_compressed(quarter_pel)
    decoded = read_frames(quarter_pel)
    assert video.frame_types == "IPPPPP"
    for field, residual, index, (dx, dy) in zip(video.motion_vectors, video.residuals, video.frame_indices, STEPS, strict=True):
        np.testing.assert_array_equal(warp(decoded[index - 1], field).astype(np.int16) + residual, decoded[index])
        inner = interior(field)
        assert (inner[0] == dx).mean() > 0.9 and (inner[1] == dy).mean() > 0.9


def test_a_stated_frame_count_spares_the_counting_pass(make_clip, frames, monkeypatch):
    """MP4 and AVI headers state the frame count, so read_compressed reads them once; Matroska states none and
    is counted first. Either way the same arrays, repeated P frames included."""
    from cvfer.codec import reader

    clip_frames = frames.zoom(6)
    counted = read_compressed(make_clip(clip_frames, name="clip.mkv"), num_frames=8)

    def no_counting(path):
        raise AssertionError(f"{path} was counted although its header states its frames")

    monkeypatch.setattr(reader, "_count_packets", no_counting)
    for suffix in (".mp4", ".avi"):
        video = read_compressed(make_clip(clip_frames, name=f"clip{suffix}"), num_frames=8)
        np.testing.assert_array_equal(video.frame_indices, counted.frame_indices)
        np.testing.assert_array_equal(video.motion_vectors, counted.motion_vectors)
        np.testing.assert_array_equal(video.residuals, counted.residuals)
        np.testing.assert_array_equal(video.iframe, counted.iframe)
