"""`cvfer inspect` and `cvfer reencode`."""

from __future__ import annotations

import numpy as np

from cvfer.cli import main
from cvfer.cli.codec import flow_colours, motion_statistics
from cvfer.codec import probe


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


def test_motion_statistics_and_colours():
    field = np.zeros((2, 2, 4, 4), dtype=np.int16)
    field[0, 0, :2] = 3
    field[0, 1, 0, 0], field[0, 1, 0, 1] = 4, 3
    stats = motion_statistics(field)
    assert stats["max"] == 5.0 and stats["nonzero"] == 8 / 32
    assert np.isclose(stats["mean"], (6 * 3 + 5 + np.sqrt(18)) / 32)
    colours = flow_colours(field[0])
    assert colours.shape == (4, 4, 3) and colours[3, 3].max() == 0 and colours[0, 0].max() == 1.0
