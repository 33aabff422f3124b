"""`cvfer inspect` and `cvfer reencode`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cvfer.cli import main
from cvfer.cli.codec import ClipStatistics, flow_colours
from cvfer.codec import CompressedFrame, iter_compressed, probe, read_compressed


def test_inspect_prints_structure_and_draws(translation_clip, tmp_path, capsys):
    figure = tmp_path / "view.png"
    assert main(["inspect", str(translation_clip), "--png", str(figure)]) == 0
    printed = capsys.readouterr().out
    assert "mpeg4" in printed and "64×96" in printed and "I P×5" in printed and "MIC-ready:  yes" in printed
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_explains_why_a_video_is_not_usable(make_clip, frames, capsys):
    clip = make_clip(frames.zoom(6), name="gops.mp4", gop_size=2)
    assert main(["inspect", str(clip)]) == 1
    printed = capsys.readouterr().out
    assert "I P I P I P" in printed and "second I frame" in printed


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.mp4")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_reencode_verb(translation_clip, tmp_path, capsys):
    out = tmp_path / "small.mp4"
    assert main(["reencode", str(translation_clip), str(out), "--size", "32", "48"]) == 0
    assert probe(out).size == (32, 48) and "I P×5" in capsys.readouterr().out
    assert main(["reencode", str(translation_clip), str(out), "--size", "1", "2", "3"]) == 2


def test_clip_statistics_and_colours():
    field = np.zeros((2, 2, 4, 4), dtype=np.int16)
    field[0, 0, :2] = 3
    field[0, 1, 0, 0], field[0, 1, 0, 1] = 4, 3
    residuals = np.zeros((2, 4, 4, 3), dtype=np.int16)
    residuals[0, 0, 0] = (3, -3, 0)
    residuals[1, 1, 1] = (5, 0, -1)
    iframe = np.zeros((4, 4, 3), dtype=np.uint8)
    statistics = ClipStatistics()
    for index in range(2):
        statistics.add(CompressedFrame(index=index + 1, motion_vectors=field[index], residual=residuals[index], iframe=iframe))
    stats = statistics.motion()
    assert stats["max"] == 5.0 and stats["nonzero"] == 8 / 32
    assert np.isclose(stats["mean"], (6 * 3 + 5 + np.sqrt(18)) / 32)
    assert np.isclose(statistics.residual_mean(), 12 / 96) and statistics.strongest.index == 1
    assert ClipStatistics().motion() == {"mean": 0.0, "max": 0.0, "nonzero": 0.0}
    colours = flow_colours(field[0])
    assert colours.shape == (4, 4, 3) and colours[3, 3].max() == 0 and colours[0, 0].max() == 1.0


def test_inspect_statistics_are_those_of_the_whole_clip(make_clip, frames, capsys):
    clip = make_clip(frames.zoom(6))
    video = read_compressed(clip)
    statistics = ClipStatistics()
    for frame in iter_compressed(clip):
        statistics.add(frame)
    magnitude = np.hypot(*video.motion_vectors.astype(float).transpose(1, 0, 2, 3))
    assert np.allclose([statistics.motion()["mean"], statistics.motion()["max"]], [magnitude.mean(), magnitude.max()])
    assert np.isclose(statistics.residual_mean(), np.abs(video.residuals).mean())
    assert main(["inspect", str(clip)]) == 0
    assert f"mean |Δ| {np.abs(video.residuals).mean():.2f} (rgb)" in capsys.readouterr().out


@pytest.mark.parametrize("fps", ["-5", "0", "nan", "inf"])
def test_reencode_refuses_a_frame_rate_that_is_not_positive(translation_clip, tmp_path, capsys, fps):
    assert main(["reencode", str(translation_clip), str(tmp_path / "out.mp4"), f"--fps={fps}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"frame rate {float(fps)} is not a positive finite number" in error
    assert not (tmp_path / "out.mp4").exists()


def test_outputs_that_are_folders_are_refused_before_any_work(translation_clip, tmp_path, capsys):
    folder = tmp_path / "figures"
    folder.mkdir()
    assert main(["reencode", str(translation_clip), f"{folder}/"]) == 2
    assert capsys.readouterr().err == f"cvfer: error: {folder}: destination is a folder (name a file, e.g. one inside that folder)\n"
    assert main(["inspect", str(translation_clip), "--png", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"cvfer: error: {folder}: --png is a folder (name a file, e.g. one inside that folder)\n"
    assert not any(folder.iterdir())


def test_reencode_refuses_to_overwrite_its_source(translation_clip, tmp_path, capsys):
    original = translation_clip.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mp4").symlink_to(translation_clip)
    os.link(translation_clip, tmp_path / "hard.mp4")
    for dst in (translation_clip, tmp_path / "sub" / ".." / translation_clip.name, tmp_path / "link.mp4", tmp_path / "hard.mp4"):
        assert main(["reencode", str(translation_clip), str(dst)]) == 2
        assert "destination is the source" in capsys.readouterr().err
    assert translation_clip.read_bytes() == original


def test_inspect_exit_status_is_the_documented_one(make_clip, frames, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    assert main(["inspect", str(garbage)]) == 2  # unreadable: an error, one line
    assert capsys.readouterr().err.startswith(f"cvfer: error: {garbage}: not a readable video")
    assert main(["inspect", str(make_clip(frames.zoom(4), gop_size=2))]) == 1  # readable, not MIC-ready
    docs = " ".join((Path(__file__).parents[2] / "docs" / "codec.md").read_text().split())
    assert "otherwise why not (exit status 1)" in docs
    assert "cannot be read at all (missing, not a video, corrupt) is an error like any other `cvfer` error: one line on stderr, exit status 2" in docs
