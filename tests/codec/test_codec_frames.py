"""codec.frames, the one door to PyAV outside the reader: frames, images, header facts, and the same refusals."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imsave

from cvfer.codec import count_frames, decode_all, iter_frames, read_compressed, read_frames, read_header, read_image
from cvfer.errors import CompressedVideoError


@pytest.mark.parametrize("options", [{}, {"codec": "libx264", "max_b_frames": 2, "gop_size": 4}])
def test_frames_and_header_agree_with_the_reader(make_clip, frames, options):
    clip = make_clip(frames.zoom(7), fps=30.0, **options)
    decoded = np.stack(list(iter_frames(clip)))
    np.testing.assert_array_equal(decoded, read_frames(clip))
    assert count_frames(clip) == decode_all(clip) == len(decoded) == 7
    np.testing.assert_array_equal(read_image(clip), decoded[0])
    header = read_header(clip)
    assert (header.path, header.codec, header.size, header.fps) == (
        clip, "h264" if options else "mpeg4", decoded.shape[1:3], 30.0
    )


def test_read_image_is_lossless_for_png(tmp_path, frames):
    image = frames.noise(1)[0]
    imsave(tmp_path / "still.png", image, check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "still.png"), image)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_every_door_refuses_a_truncated_file_as_the_reader_does(make_clip, frames, suffix):
    clip = make_clip(frames.zoom(8), name=f"clip{suffix}")
    clip.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    with pytest.raises(CompressedVideoError, match="truncated") as reader:
        read_compressed(clip)
    # The doors stream their packets, so they may meet the damage while decoding, before the end-of-file count.
    for door in (read_frames, count_frames, decode_all, read_image, lambda path: list(iter_frames(path))):
        with pytest.raises(CompressedVideoError, match="truncated") as caught:
            door(clip)
        assert str(caught.value).startswith(f"{clip}: ") and str(reader.value).startswith(f"{clip}: ")


def _damaged(data: bytes, kind: str, seed: int) -> bytes:
    """`data` truncated, with a few bytes flipped, or with a run of bytes scrambled (seeded)."""
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    if kind == "truncated":
        return bytes(damaged[: int(len(damaged) * rng.uniform(0.05, 0.995))])
    if kind == "flipped":
        for where in rng.integers(0, len(damaged), rng.integers(1, 9)):
            damaged[where] ^= int(rng.integers(1, 256))
        return bytes(damaged)
    start = int(rng.integers(0, len(damaged) - 64))
    damaged[start : start + 48] = rng.integers(0, 256, 48, dtype=np.uint8).tobytes()
    return bytes(damaged)


@pytest.fixture(scope="module")
def fuzz_sources(tmp_path_factory):
    """(suffix, bytes, frames) of one 6-frame clip in each container prepare reads sources from."""
    from cvfer.codec import write_video

    base = np.random.default_rng(3).integers(0, 256, (8, 12, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    clip_frames = [np.roll(base, (t, 2 * t), axis=(0, 1)) for t in range(6)]
    folder = tmp_path_factory.mktemp("sources")
    sources = []
    for suffix in (".mp4", ".avi", ".mkv"):
        path = write_video(folder / f"clip{suffix}", clip_frames)
        sources.append((suffix, path.read_bytes(), np.stack(list(iter_frames(path)))))
    return sources


@pytest.mark.parametrize("kind", ["truncated", "flipped", "scrambled"])
def test_damaged_sources_are_refused_or_give_every_frame(fuzz_sources, tmp_path, kind):
    """The sources' decoder (prepare's) never returns a shorter clip: a damaged file is a `CompressedVideoError`
    naming it, or decodes to all its frames at the header's size (an undetectable flip may change pixels)."""
    refused = 0
    for suffix, data, original in fuzz_sources:
        for seed in range(4):
            path = tmp_path / f"{kind}{seed}{suffix}"
            path.write_bytes(_damaged(data, kind, seed))
            try:
                decoded = np.stack(list(iter_frames(path)))
                counted, header = count_frames(path), read_header(path)
            except CompressedVideoError as error:
                assert str(error).startswith(f"{path}: ")
                refused += 1
                continue
            assert decoded.shape == original.shape and counted == len(original)
            assert header.size == original.shape[1:3]
    assert refused >= 6  # most damage is caught, whatever the container


def test_a_matroska_source_missing_its_last_frame_is_refused(fuzz_sources, tmp_path):
    _, data, original = fuzz_sources[2]
    path = tmp_path / "short.mkv"
    path.write_bytes(data[: int(len(data) * 0.97)])  # the last cluster lost, the header's duration kept
    for door in (count_frames, lambda clip: list(iter_frames(clip))):
        with pytest.raises(CompressedVideoError, match=r"short\.mkv: corrupted or truncated stream \(end of file: 0\.20 s of 0\.24 s"):
            door(path)
