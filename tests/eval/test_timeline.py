"""`predict_timeline` / `cvfer predict --timeline` on a generated video (face, blank, face) with known boundaries."""

from __future__ import annotations

import csv
import json
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from cvfer import codec
from cvfer.cli import main
from cvfer.data import faces
from cvfer.data.synthetic.long_video import BLANK, write_long_video
from cvfer.errors import CompressedVideoError, ConfigError
from cvfer.eval.predict import load_model
from cvfer.eval.timeline import (
    NO_FACE,
    OK,
    TimelineRow,
    Window,
    fixed_windows,
    gop_windows,
    predict_timeline,
    timeline_agreement,
    windows_of,
)
from cvfer.models import create_model
from cvfer.runs import save_inference_model

CLASSES = ["anger", "happiness", "surprise"]
SIZE, NUM_FRAMES, FPS = 32, 4, 25.0
SECONDS_EACH = 1.2  # 30 frames a segment, 90 in all
GOP_SECONDS = 0.6  # an I frame every 15 frames


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    torch.manual_seed(0)
    cfg = {"num_classes": len(CLASSES), "image_size": SIZE, "num_frames": NUM_FRAMES}
    model = create_model("mic", **cfg)
    data = {"image_size": SIZE, "num_frames": NUM_FRAMES, "inputs": list(model.test_inputs), "accumulate": True}
    for name, face_crop in (("model.pt", True), ("centre.pt", False)):
        save_inference_model(
            root / name, name="mic", cfg=cfg, classes=CLASSES, module=model.inference_module(),
            data={**data, "face_crop": face_crop},
        )
    segments = write_long_video(
        root / "video.mp4", ["happiness", BLANK, "surprise"], SECONDS_EACH, FPS, (128, 160),
        gop_seconds=GOP_SECONDS, progress=False,
    )
    return {
        "root": root, "model": root / "model.pt", "centre_model": root / "centre.pt", "video": root / "video.mp4",
        "segments": segments,
    }


def _inside(row, start: float, end: float) -> bool:
    return start <= row.start and row.end <= end


def test_timeline_files_cover_the_video_and_mark_faceless_windows(media, tmp_path):
    result = predict_timeline(
        media["model"], media["video"], tmp_path, window_seconds=0.4, stride_seconds=0.2, progress=False
    )
    rows = result.rows
    assert result.num_frames == 90 and result.classes == CLASSES
    assert rows[0].start_frame == 0 and rows[-1].end_frame == 90
    assert all(after.start_frame <= before.end_frame for before, after in zip(rows, rows[1:]))  # no gap
    assert [row.start_frame for row in rows] == list(range(0, 85, 5))  # round(k * 0.2 * 25); [80, 90) ends the video
    happy, blank, surprised = media["segments"]
    assert blank.expression == BLANK and (blank.start, blank.end) == (1.2, 2.4)
    faceless = [row for row in rows if _inside(row, blank.start, blank.end)]
    with_face = [row for row in rows if _inside(row, happy.start, happy.end) or _inside(row, surprised.start, surprised.end)]
    assert faceless and with_face
    assert all(row.status == NO_FACE and not row.face and row.label == "" and not row.probabilities for row in faceless)
    for row in with_face:
        assert row.status == OK and row.label in CLASSES
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row.label == max(row.probabilities, key=row.probabilities.get)

    with result.csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert list(table[0])[:7] == ["start", "end", "start_frame", "end_frame", "face", "status", "label"]
    for line, row in zip(table, rows):
        assert (int(line["start_frame"]), int(line["face"]), line["label"]) == (row.start_frame, int(row.face), row.label)
        assert (line["p_anger"] == "") == (not row.face)
    document = json.loads(result.json_path.read_text())
    assert document["num_frames"] == 90 and document["classes"] == CLASSES
    assert [entry["face"] for entry in document["rows"]] == [row.face for row in rows]
    assert document["timing"]["video_s"] == pytest.approx(3.6)
    with Image.open(result.png_path) as image:
        assert image.format == "PNG" and image.width > 400


def test_a_centre_crop_model_classifies_every_window_without_looking_for_a_face(media, tmp_path):
    result = predict_timeline(
        media["centre_model"], media["video"], tmp_path, window_seconds=0.4, stride_seconds=0.4, progress=False
    )
    assert len(result.rows) == 9
    assert all(row.status == OK and row.face_found is None and row.label in CLASSES for row in result.rows)
    with result.csv_path.open() as handle:
        assert {line["face"] for line in csv.DictReader(handle)} == {""}  # not looked for, so neither 1 nor 0
    assert all(entry["face"] is None for entry in json.loads(result.json_path.read_text())["rows"])
    scores = timeline_agreement(result.rows, media["segments"], CLASSES)
    assert scores.face_checked == 0 and scores.windows == 6  # the blank segment's 3 windows: no class


@pytest.mark.parametrize("checkpoint", ["model", "centre_model"])
def test_a_window_gets_what_predict_gives_on_its_frames_cut_as_a_clip(media, tmp_path, checkpoint):
    """Same framing as `Predictor.predict`: the tracked face box for a face-crop model, the centred square
    otherwise, so a window and a clip of its frames (lossless PNGs) get the same probabilities."""
    predictor = load_model(media[checkpoint])
    result = predict_timeline(
        predictor, media["video"], tmp_path / "out", window_seconds=0.8, stride_seconds=0.6, progress=False
    )
    frames = list(codec.iter_frames(media["video"]))
    # [0, 20) happy, [15, 35) happy then blank, [30, 50) blank, [45, 65) blank then surprised.
    for row in (result.rows[0], result.rows[1], result.rows[2], result.rows[3]):
        clip = tmp_path / f"clip_{row.start_frame}"
        clip.mkdir()
        for number, frame in enumerate(frames[row.start_frame : row.end_frame]):
            Image.fromarray(frame).save(clip / f"{number:03d}.png")
        if row.status == NO_FACE:
            assert checkpoint == "model" and (row.start_frame, row.end_frame) == (30, 50)
            with pytest.raises(faces.FaceNotFoundError):
                predictor.predict(clip)
            continue
        expected = predictor.predict(clip)
        assert row.label == expected.label
        assert row.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
    assert [row.status for row in result.rows[:4]] == [OK, OK, NO_FACE if checkpoint == "model" else OK, OK]


def test_frames_found_faceless_are_not_searched_again_by_the_next_window(media, tmp_path, monkeypatch):
    searched: list[int] = []
    track_face = faces.track_face

    def counted(frames, *args, **kwargs):
        searched.append(len(frames))
        return track_face(frames, *args, **kwargs)

    monkeypatch.setattr(faces, "track_face", counted)
    result = predict_timeline(
        media["model"], media["video"], tmp_path, window_seconds=0.8, stride_seconds=0.4, progress=False
    )
    # Windows [0, 20), [10, 30), ..., [70, 90); the blank is [30, 60): [30, 50) finds no face, so [40, 60)
    # starts its search at 50, finds none either, and [50, 70) starts at 60.
    assert [row.status for row in result.rows] == [OK, OK, OK, NO_FACE, NO_FACE, OK, OK, OK]
    assert searched == [20, 20, 20, 20, 10, 10, 20, 20]


def test_per_gop_windows_start_at_the_i_frames(media, tmp_path):
    result = predict_timeline(media["model"], media["video"], tmp_path, per_gop=True, progress=False)
    assert [(row.start_frame, row.end_frame) for row in result.rows] == [(start, start + 15) for start in range(0, 90, 15)]
    # A GOP longer than the window is cut into window-long pieces.
    cut = predict_timeline(media["model"], media["video"], tmp_path, per_gop=True, window_seconds=0.4, progress=False)
    assert [row.start_frame for row in cut.rows][:3] == [0, 10, 15]


def test_decoded_frames_are_held_one_window_at_a_time(media, tmp_path, monkeypatch):
    """The video is read once, through `codec.iter_frames`, and never more than a window's frames live at once."""
    live: set[int] = set()
    most = [0]
    reader = codec.iter_frames

    def watched(path):
        for number, frame in enumerate(reader(path)):
            live.add(number)
            weakref.finalize(frame, live.discard, number)
            most[0] = max(most[0], len(live))
            yield frame

    monkeypatch.setattr(codec, "iter_frames", watched)
    result = predict_timeline(
        media["model"], media["video"], tmp_path, window_seconds=0.4, stride_seconds=0.4, progress=False
    )
    assert result.num_frames == 90
    assert most[0] <= 10 + 2  # a 10-frame window plus the frames in flight, not the video's 90


def test_windows_of_reads_lazily_and_keeps_only_open_windows():
    read = [0]

    def frames(count):
        for index in range(count):
            read[0] += 1
            yield np.full((2, 2, 3), index, np.uint8)

    windows = windows_of(frames(100), fixed_windows(FPS, 2.0, 1.0))
    first, first_frames = next(windows)
    assert first == Window(0, 50) and read[0] == 50  # nothing decoded past the window
    assert [int(frame[0, 0, 0]) for frame in first_frames] == list(range(50))
    rest = [window for window, _ in windows]
    assert rest == [Window(25, 75), Window(50, 100)]  # (75, 100) would add no frame
    tail = [window for window, _ in windows_of(frames(90), fixed_windows(FPS, 2.0, 1.0))]
    assert tail[-1] == Window(50, 90)  # cut to the video
    gaps = [window for window, _ in windows_of(frames(60), fixed_windows(FPS, 0.4, 1.0))]
    assert gaps == [Window(0, 10), Window(25, 35), Window(50, 60)]


def test_gop_windows_cut_long_gops():
    assert gop_windows("IPPPIPP", 3) == [Window(0, 3), Window(3, 4), Window(4, 7)]
    assert gop_windows("PPIPP", 10) == [Window(0, 2), Window(2, 5)]


def test_cli_timeline_and_its_errors(media, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(media["model"]), str(media["video"]), "--timeline", "--out", str(out), "--window", "0.6"]
    assert main(args) == 0
    assert "video_timeline.csv" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "video_timeline.csv").open()))
    assert [int(row["start_frame"]) for row in rows] == [0, 15, 30, 45, 60, 75]  # stride defaults to --window
    assert (out / "video_timeline.png").is_file() and (out / "video_timeline.json").is_file()
    assert main(["predict", str(media["model"]), str(media["video"]), "--per-gop"]) == 2
    assert "apply to --timeline only" in capsys.readouterr().err
    assert main(["predict", str(media["model"]), str(media["video"]), "--timeline"]) == 2
    with pytest.raises(ConfigError, match="positive"):
        predict_timeline(media["model"], media["video"], tmp_path, window_seconds=0.0)
    with pytest.raises(CompressedVideoError, match="is a folder"):
        predict_timeline(media["model"], tmp_path, tmp_path)


def test_agreement_scores_windows_faces_and_segments():
    def row(start, end, label):
        status = OK if label else NO_FACE
        return TimelineRow(start, end, round(start * FPS), round(end * FPS), status, label, {label: 1.0} if label else {})

    truth = [(0.0, 2.0, "anger"), (2.0, 3.0, BLANK), (3.0, 5.0, "neutral"), (5.0, 7.0, "surprise")]
    rows = [
        row(0.0, 1.0, "anger"), row(1.0, 2.0, "surprise"), row(0.5, 1.5, "anger"),  # anger 2 of 3, majority right
        row(2.0, 3.0, ""), row(2.0, 2.8, "anger"),  # blank: one right (no face), one face found
        row(3.0, 4.0, "anger"),  # neutral is no model class: face checked only
        row(5.0, 6.0, "anger"), row(6.0, 7.0, ""),  # surprise: wrong, and a missed face
        row(7.0, 8.0, "anger"),  # after the truth: not scored
    ]
    scores = timeline_agreement(rows, truth, CLASSES)
    assert (scores.windows, scores.correct) == (4, 2)  # 3 in anger, 1 in surprise; blank and neutral are no class
    assert (scores.face_checked, scores.face_correct) == (8, 6)
    assert (scores.segments, scores.segments_correct) == (2, 1)
    assert scores.as_dict()["segment_accuracy"] == 0.5
