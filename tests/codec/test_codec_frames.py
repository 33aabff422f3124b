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
    for door in (read_frames, count_frames, decode_all, read_image, lambda path: list(iter_frames(path))):
        with pytest.raises(CompressedVideoError) as caught:
            door(clip)
        assert str(caught.value) == str(reader.value)
