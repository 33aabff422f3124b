"""`write_long_video`: one identity, expressions in a row with known boundaries, blank segments without a face."""

from __future__ import annotations

import numpy as np
import pytest

from cvfer import codec
from cvfer.data import faces
from cvfer.data.synthetic.long_video import BLANK, Segment, segment_intensity, write_long_video
from cvfer.errors import ConfigError

FPS = 25.0


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "video.mp4"
    segments = write_long_video(
        path, ["happiness", "surprise", BLANK], 1.0, FPS, (96, 128), seed=3, face_size=80, gop_seconds=0.8, progress=False
    )
    return path, segments


def test_segments_are_the_known_boundaries(video):
    path, segments = video
    assert segments == [Segment(0.0, 1.0, "happiness"), Segment(1.0, 2.0, "surprise"), Segment(2.0, 3.0, BLANK)]
    assert codec.count_frames(path) == 75
    header = codec.read_header(path)
    assert header.size == (96, 128) and header.fps == pytest.approx(FPS)
    assert codec.probe(path).frame_types == ("I" + "P" * 19) * 3 + "I" + "P" * 14


def test_each_segment_rises_to_its_apex_and_returns_to_the_same_neutral_face(video):
    path, _ = video
    # Neutral starts of both face segments, their apexes (middle), and a frame of the blank segment.
    first_neutral, first_apex, second_neutral, second_apex, blank = codec.read_frames(path, indices=[1, 12, 26, 37, 62])
    centre = np.s_[16:80, 24:104]

    def change(a, b):
        """Largest change of a 4×4 block's mean: local (mouth, brows), above the noise averaged out."""
        difference = a[centre].astype(float) - b[centre].astype(float)
        return float(np.abs(difference.reshape(16, 4, 20, 4, 3).mean(axis=(1, 3, 4))).max())

    noise = change(first_neutral, second_neutral)  # one identity, neutral again: only noise and coding
    assert noise < 8
    assert change(first_neutral, first_apex) > 3 * noise
    assert change(second_neutral, second_apex) > 3 * noise
    assert change(first_apex, second_apex) > 3 * noise  # happiness is not surprise
    assert blank[centre].reshape(-1, 3).std(axis=0).max() < 3  # background only, one colour
    assert faces.detect_face(first_apex) is not None and faces.detect_face(blank) is None


def test_intensity_profile_and_held_expressions():
    progress = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    assert segment_intensity(progress).tolist() == pytest.approx([0, 0, 1, 0, 0])
    rising = segment_intensity(np.linspace(0.15, 0.4, 20))
    assert np.all(np.diff(rising) > 0)
    assert segment_intensity(progress, held=True).tolist() == [1.0] * 5


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown emotion"):
        write_long_video(tmp_path / "v.mp4", ["joy"], progress=False)
    with pytest.raises(ConfigError, match="even sides"):
        write_long_video(tmp_path / "v.mp4", ["anger"], size=(95, 128), progress=False)
    with pytest.raises(ConfigError, match="fewer than 3 frames"):
        write_long_video(tmp_path / "v.mp4", ["anger"], seconds_each=0.05, size=(64, 64), progress=False)
    assert not (tmp_path / "v.mp4").exists()
