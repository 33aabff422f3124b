"""`load_model` / `cvfer predict` on an H.264 mp4, a folder of PNGs, a folder of videos and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.io import imsave

from cvfer.cli import main
from cvfer.codec import write_video
from cvfer.errors import CheckpointError
from cvfer.eval.predict import load_model, predict_paths
from cvfer.models import create_model
from cvfer.runs import save_inference_model

CLASSES = ["anger", "happiness", "surprise"]
SIZE, NUM_FRAMES = 32, 4


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
    assert set(prediction.timing) == {"prepare_s", "forward_s", "total_s"}


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


def test_load_model_rejects_foreign_files(tmp_path):
    torch.save({"model": {}, "optimizer": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not an inference checkpoint"):
        load_model(tmp_path / "checkpoint.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing.pt")
