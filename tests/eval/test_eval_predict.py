"""`load_model` / `cvfer predict` on an H.264 mp4, a folder of PNGs, a folder of videos and bad files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.io import imsave

from cvfer.cli import main
from cvfer.codec import read_frames, write_video
from cvfer.errors import CheckpointError
from cvfer.eval.predict import STAGES, load_model, predict_paths
from cvfer.models import create_model
from cvfer.runs import save_inference_model

CLASSES = ["anger", "happiness", "surprise"]
SIZE, NUM_FRAMES = 32, 4
ASTRONAUT = data.astronaut()


def _frames(count: int = 10, height: int = 40, width: int = 60) -> list[np.ndarray]:
    """A bright square moving over a gradient: smooth enough to survive lossy coding."""
    rows, columns = np.mgrid[0:height, 0:width]
    frames = []
    for index in range(count):
        frame = np.stack([columns * 4, rows * 5, np.full_like(rows, 90)], axis=-1).astype(np.uint8)
        frame[10:22, 20 + 2 * index : 32 + 2 * index] = 250
        frames.append(frame)
    return frames


def _save_model(path, face_crop: bool = False):
    torch.manual_seed(0)
    cfg = {"num_classes": len(CLASSES), "image_size": SIZE, "num_frames": NUM_FRAMES}
    model = create_model("cnn-lstm", **cfg)
    data = {"image_size": SIZE, "num_frames": NUM_FRAMES, "inputs": ["frames"], "residual": "rgb", "face_crop": face_crop}
    save_inference_model(path, name="cnn-lstm", cfg=cfg, classes=CLASSES, module=model.inference_module(), data=data)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    frames = _frames()
    write_video(root / "clip_h264.mp4", frames, codec="libx264")
    png_folder = root / "pngs"
    png_folder.mkdir()
    for index, frame in enumerate(frames):
        imsave(png_folder / f"frame_{index:03d}.png", frame, check_contrast=False)
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video")
    return {"root": root, "model": _save_model(root / "model.pt"), "h264": root / "clip_h264.mp4", "pngs": png_folder}


def test_predict_h264_and_png_folder_agree(media):
    predictor = load_model(media["model"])
    assert predictor.classes == CLASSES and predictor.inputs == ("frames",)
    from_video = predictor.prepare(media["h264"])["frames"]
    from_images = predictor.prepare(media["pngs"])["frames"]
    # Both are centre-cropped to 40×40, resized to 32×32 and re-encoded: the same clip up to coding loss.
    assert from_video.shape == from_images.shape == (NUM_FRAMES, 3, SIZE, SIZE)
    assert float((from_video - from_images).abs().mean()) < 0.03
    prediction = predictor.predict(media["h264"])
    assert prediction.label in CLASSES
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert set(prediction.timing) == {*STAGES, "prepare_s", "total_s"}
    assert prediction.timing["decode_s"] > 0 and prediction.timing["detect_s"] == 0  # centre crop: no face search
    assert sum(prediction.timing[stage] for stage in STAGES[:-1]) <= prediction.timing["prepare_s"]


def test_cache_dir_reuses_the_reencoded_clip(media, tmp_path):
    predictor = load_model(media["model"])
    first = predictor.predict(media["pngs"], cache_dir=tmp_path)
    cached = list(tmp_path.glob("*/clips/clip.mp4"))
    assert len(cached) == 1
    second = predictor.predict(media["pngs"], cache_dir=tmp_path)
    assert second.probabilities == pytest.approx(first.probabilities)
    assert list(tmp_path.glob("*/clips/clip.mp4")) == cached


def test_cli_lists_bad_files_and_still_predicts_the_rest(media, capsys):
    root = media["root"]
    paths = [media["h264"], root / "empty.mp4", root / "notes.mp4", root / "missing.mp4", media["pngs"]]
    code = main(["predict", str(media["model"]), *map(str, paths), "--json"])
    assert code == 1
    document = json.loads(capsys.readouterr().out)
    assert [item["path"] for item in document["predictions"]] == [str(media["h264"]), str(media["pngs"])]
    failures = {item["path"]: item["error"] for item in document["failures"]}
    assert set(failures) == {str(root / name) for name in ("empty.mp4", "notes.mp4", "missing.mp4")}
    assert "not found" in failures[str(root / "missing.mp4")]
    assert all(reason for reason in failures.values())


def test_cli_plain_lines_and_success_code(media, capsys):
    assert main(["predict", str(media["model"]), str(media["h264"])]) == 0
    path, label, probability = capsys.readouterr().out.strip().split("\t")
    assert path == str(media["h264"]) and label in CLASSES and 0 < float(probability) <= 1


def test_face_crop_checkpoint_reports_clip_without_face(media, tmp_path):
    predictor = load_model(_save_model(tmp_path / "face.pt", face_crop=True))
    predictions, failures = predict_paths(predictor, [media["h264"]])
    assert predictions == [] and len(failures) == 1 and "face" in failures[0][1]


def _face_clip(path, height: int, width: int):
    """8 H.264 frames of the astronaut's head moving on grey (made at 640×480, resized to width×height)."""
    frames = []
    for index in range(8):
        canvas = np.full((480, 640, 3), 128, np.uint8)
        top, left = 20 + 3 * index, 60 + 4 * index
        canvas[top : top + 400, left : left + 400] = ASTRONAUT[:400, 40:440]
        frames.append(cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA))
    return write_video(path, frames, codec="libx264")


def test_prepared_clip_is_read_as_it_is_by_a_face_crop_model(tmp_path):
    # An MPEG-4 clip of the model's size is taken as prepared: no face search (this one shows none), no re-encode.
    predictor = load_model(_save_model(tmp_path / "face.pt", face_crop=True))
    clip = write_video(tmp_path / "prepared.mp4", [frame[:SIZE, :SIZE] for frame in _frames()])
    prediction = predictor.predict(clip)
    assert [prediction.timing[stage] for stage in ("decode_s", "detect_s", "crop_encode_s")] == [0, 0, 0]
    assert prediction.timing["read_s"] > 0
    expected = torch.from_numpy(read_frames(clip, indices=[0, 3, 6, 9])).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(predictor.prepare(clip)["frames"], expected)


def test_same_clip_at_two_resolutions_gives_the_same_input(tmp_path):
    predictor = load_model(_save_model(tmp_path / "face.pt", face_crop=True))
    small = predictor.predict(_face_clip(tmp_path / "small.mp4", 240, 320))
    large = predictor.predict(_face_clip(tmp_path / "large.mp4", 480, 640))
    assert small.timing["detect_s"] > 0 and large.timing["detect_s"] > 0
    inputs = [predictor.prepare(tmp_path / name)["frames"] for name in ("small.mp4", "large.mp4")]
    assert float((inputs[0] - inputs[1]).abs().mean()) < 0.02  # 5 of 255 grey levels; measured 3.4


def test_frames_over_the_memory_budget_are_decoded_again(tmp_path, monkeypatch):
    import cvfer.data.cropping as cropping
    import cvfer.eval.predict as predict_module

    predictor = load_model(_save_model(tmp_path / "face.pt", face_crop=True))
    clip = _face_clip(tmp_path / "face.mp4", 240, 320)
    decodes = []
    iter_frames = predict_module.codec.iter_frames
    monkeypatch.setattr(predict_module.codec, "iter_frames", lambda path: decodes.append(path) or iter_frames(path))
    kept = predictor.prepare(clip)["frames"]
    assert len(decodes) == 1
    monkeypatch.setattr(cropping, "FRAME_MEMORY_BYTES", 0)
    assert torch.equal(predictor.prepare(clip)["frames"], kept)
    assert len(decodes) == 3


def test_load_model_rejects_foreign_files(tmp_path):
    torch.save({"model": {}, "optimizer": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not an inference checkpoint"):
        load_model(tmp_path / "checkpoint.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing.pt")


def _predict_json(capsys, *args) -> tuple[int, list[str], dict[str, str]]:
    """`cvfer predict --json`: (exit code, predicted paths, {failed path: reason})."""
    code = main(["predict", *map(str, args), "--json"])
    document = json.loads(capsys.readouterr().out)
    failures = {item["path"]: item["error"] for item in document["failures"]}
    return code, [item["path"] for item in document["predictions"]], failures


def test_empty_folder_is_listed_as_failed(media, tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / ".hidden").write_text("ignored")
    code, predicted, failures = _predict_json(capsys, media["model"], tmp_path / "nothing")
    assert code == 1 and predicted == []
    assert "no videos and no image frames" in failures[str(tmp_path / "nothing")]


def test_folder_rule_predicts_one_level_and_lists_the_rest(media, tmp_path, capsys):
    folder = tmp_path / "batch"
    (folder / "deep").mkdir(parents=True)
    write_video(folder / "video.mp4", _frames(), codec="libx264")
    write_video(folder / "deep" / "nested.mp4", _frames(), codec="libx264")
    frames = folder / "frames"
    frames.mkdir()
    for index, frame in enumerate(_frames()):
        imsave(frames / f"{index}.png", frame, check_contrast=False)
    (frames / "labels.txt").write_text("stray")
    code, predicted, failures = _predict_json(capsys, media["model"], folder)
    assert code == 1
    assert predicted == [str(frames), str(folder / "video.mp4")]
    assert set(failures) == {str(folder / "deep"), str(frames / "labels.txt")}
    assert "skipped" in failures[str(folder / "deep")] and "one level" in failures[str(folder / "deep")]
    assert "skipped" in failures[str(frames / "labels.txt")]


def test_truncated_and_corrupt_inputs_fail(media, tmp_path, capsys):
    bad = []
    for suffix, options in ((".mp4", {"codec": "libx264"}), (".avi", {}), (".mkv", {"codec": "libx264"})):
        data = write_video(tmp_path / f"whole{suffix}", _frames(20), **options).read_bytes()
        for percent in (10, 50, 90):
            bad.append(tmp_path / f"cut{percent}{suffix}")
            bad[-1].write_bytes(data[: len(data) * percent // 100])
    for name, size in (("native.mp4", SIZE), ("flipped.mp4", 40)):  # native: read without re-encoding
        data = bytearray(write_video(tmp_path / name, [frame[:size, :size] for frame in _frames(20)]).read_bytes())
        for position in np.random.default_rng(0).integers(len(data) // 4, 3 * len(data) // 4, 30):
            data[position] ^= 0xFF
        bad.append(tmp_path / name)
        bad[-1].write_bytes(bytes(data))
    code, predicted, failures = _predict_json(capsys, media["model"], *bad)
    assert code == 1 and predicted == [] and set(failures) == set(map(str, bad))


def test_audio_only_and_symlink_loop_are_named(media, tmp_path, capsys):
    import wave

    with wave.open(str(tmp_path / "sound.wav"), "wb") as sound:
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000)
        sound.writeframes(bytes(1600))
    (tmp_path / "loop.mp4").symlink_to("loop.mp4")
    code, predicted, failures = _predict_json(capsys, media["model"], tmp_path / "sound.wav", tmp_path / "loop.mp4")
    assert code == 1 and predicted == []
    assert "has no video stream" in failures[str(tmp_path / "sound.wav")]
    assert "symlink loop" in failures[str(tmp_path / "loop.mp4")]


def test_training_checkpoint_is_refused_in_one_line(media, tmp_path, capsys):
    from cvfer.train.checkpoint import save_checkpoint

    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    save_checkpoint(
        tmp_path / "checkpoint.pt", epoch=1, step=1, config={}, model=module,
        optimizers={"main": optimizer}, schedulers={"main": scheduler}, history=[{"loss": 1.0}],
    )
    assert main(["predict", str(tmp_path / "checkpoint.pt"), str(media["h264"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "\x1b" not in captured.err
    assert "is a training checkpoint.pt, not a model.pt" in captured.err and "give RUN/model.pt" in captured.err


def test_unusable_cache_dir_is_refused_up_front(media, capsys):
    assert main(["predict", str(media["model"]), str(media["pngs"]), "--cache-dir", str(media["h264"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "--cache-dir is an existing file, not a folder" in captured.err
