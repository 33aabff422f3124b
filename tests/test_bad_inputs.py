"""Bad inputs, one table per verb, run through the CLI in-process as a user would meet them.

Every case must end in its documented exit code with one line naming the file (an error on stderr, a FAILED
line of `predict`, a skip listed by `prepare` in skipped.csv), never a traceback, and must leave the user's
files as they were. docs/reliability.md lists the same cases with the messages they give.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cvfer.cli import main
from cvfer.codec import write_video
from cvfer.io import LOCK_FILE
from cvfer.models import list_models, register_model
from cvfer.models.base import FERModel, FEROutput
from cvfer.models.registry import variant_builder

TINY_MODEL = "test-bad-inputs-tiny"
SIZE, FRAMES = 32, 6
TOO_LONG = "ä" * 200 + ".mp4"  # 404 bytes: past the 255 a file name may have


class TinyResidualModel(FERModel):
    """Class scores from each P frame's mean residual colour: trains and predicts in milliseconds."""

    train_inputs = ("residuals", "label")
    test_inputs = ("residuals",)

    def __init__(self, num_classes: int, image_size: int, num_frames: int):
        super().__init__()
        self.classifier = nn.Linear(3 * num_frames, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> FEROutput:
        features = batch["residuals"].mean(dim=(3, 4)).flatten(1) * 10
        return FEROutput(logits=self.classifier(features), features=features)


if TINY_MODEL not in list_models():
    register_model(TINY_MODEL)(variant_builder(TinyResidualModel))


# ----------------------------------------------------------------- files made once per module
def _moving_square(count: int = FRAMES, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    rows, columns = np.mgrid[0:size, 0:size]
    base = np.stack([columns * 6, rows * 7, np.full_like(rows, 90 + 20 * seed)], axis=-1).astype(np.uint8)
    frames = []
    for index in range(count):
        frame = base.copy()
        frame[8:18, 4 + 2 * index : 14 + 2 * index] = 250
        frames.append(frame)
    return frames


def _audio_only(path: Path) -> Path:
    """A WAV file of a sine tone (PCM, no video stream)."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = (3000 * np.sin(np.linspace(0, 400 * np.pi, 8000))).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _gif(path: Path) -> Path:
    images = [Image.fromarray(frame) for frame in _moving_square()]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=40, loop=0)
    return path


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares `width`×`height` pixels but that holds a 1×1 image's data."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR, CRC left stale
    path.write_bytes(bytes(data))
    return path


def _faststart_mp4(path: Path) -> Path:
    """A 30-frame MPEG-4 MP4 of noise with its index (moov) at the front, as web videos are; 10 % of it holds the
    whole index."""
    noise = np.random.default_rng(0).integers(0, 256, (30, SIZE, SIZE, 3), dtype=np.uint8)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for frame in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _damaged(source: Path, path: Path, keep: float = 1.0, flips: int = 0) -> Path:
    data = bytearray(source.read_bytes()[: int(source.stat().st_size * keep)])
    for where in np.random.default_rng(0).integers(len(data) // 4, 3 * len(data) // 4, flips):
        data[where] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@dataclass
class Files:
    """The shared files of the tables: good ones and hostile ones, made once."""

    root: Path
    clip: Path  # a MIC-ready MPEG-4 clip
    named: dict[str, Path] = field(default_factory=dict)
    data: Path = Path()  # a tiny prepared dataset (cvfer synth)
    model: Path = Path()  # its model.pt (TINY_MODEL, one epoch)

    def __getitem__(self, name: str) -> Path:
        return self.named[name]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cvfer ARGV` run in this process; an exception escaping `main` (a
    traceback for the user) fails the test."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    captured = capsys.readouterr()
    return int(code), captured.out, captured.err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    root = tmp_path_factory.mktemp("bad inputs ü")
    clip = write_video(root / "good.mp4", _moving_square())
    files = Files(root, clip)
    named = files.named
    named["empty"] = root / "empty.mp4"
    named["empty"].write_bytes(b"")
    named["text"] = root / "notes.mp4"
    named["text"].write_text("certainly not a video\n" * 20)
    named["wav"] = _audio_only(root / "sound.wav").rename(root / "sound.mp4")
    named["gif"] = _gif(root / "animation.gif").rename(root / "animation.mp4")
    named["truncated"] = _damaged(clip, root / "truncated.mp4", keep=0.5)
    named["flipped"] = _damaged(clip, root / "flipped.mp4", flips=30)
    mkv = write_video(root / "source.mkv", _moving_square())
    named["short mkv"] = _damaged(mkv, root / "short.mkv", keep=0.97)
    named["avi 50"] = _damaged(write_video(root / "source.avi", _moving_square()), root / "half.avi", keep=0.5)
    named["mkv 90"] = _damaged(mkv, root / "ninety.mkv", keep=0.9)
    named["faststart 10"] = _damaged(_faststart_mp4(root / "faststart.mp4"), root / "faststart_10.mp4", keep=0.1)
    named["nested"] = root / "nested"
    (named["nested"] / "deeper").mkdir(parents=True)
    shutil.copy(clip, named["nested"] / "deeper" / "clip.mp4")
    named["b frames"] = write_video(root / "b_frames.mp4", _moving_square(), codec="libx264", max_b_frames=2)
    named["unicode"] = Path(shutil.copy(clip, root / "ünï cödé 表情.mp4"))
    named["loop"] = root / "loop.mp4"
    named["loop"].symlink_to("loop.mp4")
    named["fifo"] = root / "pipe.mp4"
    os.mkfifo(named["fifo"])  # reading it would block forever
    named["dangling"] = root / "gone.mp4"
    named["dangling"].symlink_to(root / "deleted.mp4")
    named["huge png"] = root / "huge"
    named["huge png"].mkdir()
    _png_declaring(named["huge png"] / "frame_000.png", 1_000_000, 1_000_000)
    named["zero png"] = root / "zero"
    named["zero png"].mkdir()
    _png_declaring(named["zero png"] / "frame_000.png", 0, 0)
    named["empty folder"] = root / "nothing here"
    named["empty folder"].mkdir()
    named["a file"] = root / "a file.txt"
    named["a file"].write_text("keep me\n")
    files.data = root / "data"
    synth = ["synth", str(files.data), "--num-subjects", "4", "--clips-per-class", "1", "--num-frames", str(FRAMES)]
    assert main([*synth, "--size", str(SIZE), "--folds", "2", "--quiet"]) == 0
    run = root / "run"
    assert main(["train", *TRAIN_ARGS, "--data", str(files.data), "--out", str(run), "--epochs", "1"]) == 0
    files.model = run / "model.pt"
    return files


TRAIN_ARGS = ["--model", TINY_MODEL, "--batch-size", "8", "--num-frames", "3", "--threads", "1"]


def _flip_bytes(path: Path, count: int = 2000) -> Path:
    """`count` bytes flipped, none in the last 128 (where a whole file would rarely be hit, and a tiny one always)."""
    data = bytearray(path.read_bytes())
    for where in np.random.default_rng(1).integers(0, len(data) - 128, count):
        data[where] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------- the table
@dataclass
class Scene:
    """What a case's setup works with: the shared files, its own folder, and ways to change the world."""

    files: Files
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    holders: list[subprocess.Popen] = field(default_factory=list)

    def hold_lock(self, folder: Path) -> Path:
        """Start another process that holds `folder`'s run lock until the case ends; returns the lock file."""
        script = "import sys\nfrom cvfer.io import run_lock\nwith run_lock(sys.argv[1]): print(flush=True); input()"
        holder = subprocess.Popen(
            [sys.executable, "-c", script, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.holders.append(holder)
        holder.stdout.readline()
        return folder / LOCK_FILE


Setup = Callable[[Scene], tuple[list[str], Path | None]]  # -> (argv after the verb, the file the line must name)


@dataclass(frozen=True)
class Case:
    """One bad input and what cvfer must answer: exit `code` and a line holding `message` (and naming the file)."""

    verb: str
    input: str  # what is wrong, as docs/reliability.md lists it
    setup: Setup
    code: int
    message: str
    check: Callable[[Scene], None] | None = None  # what must hold afterwards (nothing lost or overwritten)

    def __str__(self) -> str:
        return f"{self.verb}: {self.input}"


def _unchanged(name: str, like: str | None = None) -> Callable[[Scene], None]:
    """Check that the shared file `name` still holds its content (or that of the shared file `like`)."""
    def check(scene: Scene) -> None:
        files = scene.files
        expected = files.clip.read_bytes() if like == "clip" else b"keep me\n"
        assert files[name].read_bytes() == expected, f"{files[name]} was changed"

    return check


# predict
def _predict(name: str) -> Setup:
    return lambda scene: ([str(scene.files.model), str(scene.files[name]), "--workers", "1"], scene.files[name])


def _predict_with_model(edit: Callable[[Path], Path]) -> Setup:
    """`predict` of the good clip with a copy of model.pt changed by `edit`."""
    def setup(scene: Scene) -> tuple[list[str], Path]:
        model = edit(Path(shutil.copy(scene.files.model, scene.tmp / "model.pt")))
        return [str(model), str(scene.files.clip), "--workers", "1"], model

    return setup


def _predict_too_long(scene: Scene) -> tuple[list[str], Path]:
    return [str(scene.files.model), str(scene.tmp / TOO_LONG), "--workers", "1"], scene.tmp / TOO_LONG


def _predict_with_checkpoint(scene: Scene) -> tuple[list[str], Path]:
    checkpoint = Path(shutil.copy(scene.files.model.parent / "checkpoint.pt", scene.tmp / "checkpoint.pt"))
    return [str(checkpoint), str(scene.files.clip), "--workers", "1"], checkpoint


def _predict_with_cache_in_a_file(scene: Scene) -> tuple[list[str], Path]:
    files = scene.files
    return [str(files.model), str(files.clip), "--cache-dir", str(files["a file"])], files["a file"]


FAILED = "FAILED\t"
BROKEN = "corrupted or truncated stream"
PREDICT = [
    Case("predict", "zero-byte file", _predict("empty"), 1, FAILED + "file is empty"),
    Case("predict", "text file named .mp4", _predict("text"), 1, FAILED + "not a readable video"),
    Case("predict", "WAV audio renamed .mp4", _predict("wav"), 1, FAILED + "has no video stream (audio only)"),
    Case(
        "predict",
        "MP4 truncated at 50 % (index at the end lost)",
        _predict("truncated"),
        1,
        FAILED + "not a readable video: truncated",
    ),
    Case("predict", "MPEG-4 with 30 flipped bytes", _predict("flipped"), 1, FAILED + BROKEN),
    Case("predict", "Matroska missing its last frame", _predict("short mkv"), 1, FAILED + BROKEN + " (end of file"),
    Case("predict", "AVI truncated at 50 %", _predict("avi 50"), 1, FAILED + "not a readable video: truncated"),
    Case("predict", "MKV truncated at 90 %", _predict("mkv 90"), 1, FAILED + BROKEN),
    Case(
        "predict",
        "MP4 with its index at the front truncated at 10 %",
        _predict("faststart 10"),
        1,
        FAILED + "contains no video frames",
    ),
    Case(
        "predict",
        "a video two folders down",
        _predict("nested"),
        1,
        FAILED + "skipped: sub-folder without image frames",
    ),
    Case("predict", "symlink loop", _predict("loop"), 1, FAILED + "symlink loop"),
    Case("predict", "a file name of 404 bytes", _predict_too_long, 2, "File name too long"),
    Case("predict", "dangling symlink", _predict("dangling"), 1, FAILED + "dangling symlink to"),
    Case("predict", "a named pipe (FIFO) named .mp4", _predict("fifo"), 1, FAILED + "is not a file"),
    Case("predict", "empty folder", _predict("empty folder"), 1, FAILED + "folder holds no videos and no image frames"),
    Case(
        "predict",
        "PNG declaring 1,000,000×1,000,000 pixels",
        _predict("huge png"),
        1,
        FAILED + BROKEN + " (decoding frame 0",
    ),
    Case("predict", "PNG declaring 0×0 pixels", _predict("zero png"), 1, FAILED + BROKEN + " (decoding frame 0"),
    Case("predict", "GIF renamed .mp4 (a video after all)", _predict("gif"), 0, "\t"),
    Case("predict", "unicode and spaces in the path", _predict("unicode"), 0, "\t"),
    Case(
        "predict",
        "model.pt with one flipped byte",
        _predict_with_model(lambda path: _flip_bytes(path, 1)),
        2,
        "corrupt: checksum mismatch",
    ),
    Case(
        "predict",
        "zero-byte model.pt",
        _predict_with_model(lambda path: _damaged(path, path, keep=0)),
        2,
        "is an empty file",
    ),
    Case(
        "predict",
        "model.pt truncated at 50 %",
        _predict_with_model(lambda path: _damaged(path, path, keep=0.5)),
        2,
        "unreadable: cannot read",
    ),
    Case(
        "predict",
        "checkpoint.pt given as the model",
        _predict_with_checkpoint,
        2,
        "is a training checkpoint.pt, not a model.pt",
    ),
    Case(
        "predict",
        "--cache-dir is a file",
        _predict_with_cache_in_a_file,
        2,
        "is an existing file, not a folder",
        _unchanged("a file"),
    ),
]


# prepare
def _prepare(add: Callable[[Scene, Path], object] | None = None) -> Setup:
    """`prepare` of a `folder` dataset with two good clips of two subjects per class, plus what `add` puts into
    its `anger` folder; the line names the skipped source `anger/NAME` when `add` returns NAME."""
    def setup(scene: Scene) -> tuple[list[str], str | None]:
        root = scene.tmp / "root"
        for label in ("anger", "happiness"):
            (root / label).mkdir(parents=True)
            for subject in ("s1", "s2"):
                write_video(root / label / f"{subject}_{label}.mp4", _moving_square(seed=len(label)))
        named = add(scene, root / "anger") if add is not None else None
        argv = [str(root), "--dataset", "folder", "--out", str(scene.tmp / "out"), "--no-crop", "--size", "16"]
        return [*argv, "--folds", "2", "--subject-pattern", r"(?P<subject>s\d)"], named

    return setup


def _source(name: str, make: Callable[[Scene, Path], object]) -> Callable[[Scene, Path], str]:
    """An `add` for `_prepare`: `make(scene, anger/NAME)`; the line must name `anger/NAME`."""
    def add(scene: Scene, folder: Path) -> str:
        make(scene, folder / name)
        return f"anger/{name}"

    return add


def _copy_of(shared: str) -> Callable[[Scene, Path], object]:
    return lambda scene, path: shutil.copy(scene.files[shared], path)


def _skipped_source(input_: str, name: str, make: Callable[[Scene, Path], object], message: str) -> Case:
    """A prepare case whose bad source is skipped, listed in skipped.csv with the reason, and not prepared."""
    def check(scene: Scene) -> None:
        with (scene.tmp / "out" / "skipped.csv").open(encoding="utf-8") as handle:
            assert f"anger/{name}" in [row["source"] for row in csv.DictReader(handle)]
        assert not (scene.tmp / "out" / "clips" / "anger" / name).with_suffix(".mp4").exists()

    return Case("prepare", input_, _prepare(_source(name, make)), 0, f"anger/{name}: {message}", check)


def _stray_file_in_root(scene: Scene, folder: Path) -> str:
    (folder.parent / "stray.mp4").write_bytes(b"x")
    return "stray.mp4"


def _unicode_source(scene: Scene, folder: Path) -> None:
    shutil.copy(folder / "s1_anger.mp4", folder / "s1 ünï 表情.mp4")


def _gif_source(scene: Scene, folder: Path) -> None:
    _gif(scene.tmp / "a.gif").rename(folder / "s1_gif.mp4")


def _every_source_empty(scene: Scene, folder: Path) -> str:
    for path in folder.parent.rglob("*.mp4"):
        path.write_bytes(b"")
    return str(folder.parent)


def _prepare_into_a_file(scene: Scene) -> tuple[list[str], Path]:
    argv, _ = _prepare()(scene)
    argv[argv.index("--out") + 1] = str(scene.files["a file"])
    return argv, scene.files["a file"]


def _prepare_into_a_locked_folder(scene: Scene) -> tuple[list[str], Path]:
    argv, _ = _prepare()(scene)
    return argv, scene.hold_lock(scene.tmp / "out")


def _prepare_with_latin1_subjects(scene: Scene) -> tuple[list[str], None]:
    argv, _ = _prepare()(scene)
    subjects = scene.tmp / "subjects.csv"
    subjects.write_bytes("path,subject\nanger/s1_anger.mp4,Jos\xe9\n".encode("latin-1"))
    return [*argv[: argv.index("--subject-pattern")], "--subjects", str(subjects)], subjects


def _prepare_a_missing_root(scene: Scene) -> tuple[list[str], Path]:
    return [str(scene.tmp / "nowhere"), "--dataset", "folder", "--out", str(scene.tmp / "out")], scene.tmp / "nowhere"


UNREADABLE = "unreadable ("
PREPARE = [
    _skipped_source(
        "source truncated at 50 %",
        "s1_cut.mp4",
        _copy_of("truncated"),
        UNREADABLE + "not a readable video: truncated",
    ),
    _skipped_source(
        "Matroska source missing its last (apex) frame",
        "s1_short.mkv",
        _copy_of("short mkv"),
        UNREADABLE + BROKEN + " (end of file",
    ),
    _skipped_source("source with 30 flipped bytes", "s1_flip.mp4", _copy_of("flipped"), UNREADABLE + BROKEN),
    _skipped_source(
        "zero-byte source",
        "s1_empty.mp4",
        lambda scene, path: path.write_bytes(b""),
        UNREADABLE + "file is empty)",
    ),
    _skipped_source(
        "WAV renamed .mp4",
        "s1_sound.mp4",
        _copy_of("wav"),
        UNREADABLE + "has no video stream (audio only))",
    ),
    _skipped_source(
        "dangling symlink",
        "s1_gone.mp4",
        lambda scene, path: path.symlink_to(scene.files["dangling"]),
        "dangling symlink",
    ),
    _skipped_source("symlink loop", "s1_loop.mp4", lambda scene, path: path.symlink_to(path.name), "symlink loop"),
    _skipped_source(
        "a named pipe (FIFO) as a source",
        "s1_pipe.mp4",
        lambda scene, path: os.mkfifo(path),
        "not a regular file or folder (a pipe, socket or device)",
    ),
    Case("prepare", "file directly in ROOT", _prepare(_stray_file_in_root), 0, "stray.mp4: not in a class folder"),
    Case("prepare", "unicode and spaces in names", _prepare(_unicode_source), 0, "prepared 5 clips"),
    Case("prepare", "GIF renamed .mp4 as a source", _prepare(_gif_source), 0, "prepared 5 clips"),
    Case(
        "prepare",
        "--out is an existing file",
        _prepare_into_a_file,
        2,
        "--out is an existing file, not a folder",
        _unchanged("a file"),
    ),
    Case(
        "prepare",
        "--out in use by another prepare",
        _prepare_into_a_locked_folder,
        2,
        "in use by another cvfer process (PID",
    ),
    Case("prepare", "ROOT does not exist", _prepare_a_missing_root, 2, "is not a folder"),
    Case("prepare", "--subjects CSV not UTF-8", _prepare_with_latin1_subjects, 2, "not UTF-8 text"),
    Case("prepare", "every source unreadable", _prepare(_every_source_empty), 2, "no clip could be prepared"),
]


# train
def _train(edit: Callable[[Path], Path] | None = None, *extra: str) -> Setup:
    """`train` of the tiny model on a copy of the dataset changed by `edit` (returning the file the line names)."""
    def setup(scene: Scene) -> tuple[list[str], Path]:
        data = Path(shutil.copytree(scene.files.data, scene.tmp / "data"))
        named = edit(data) if edit is not None else data
        return [*TRAIN_ARGS, "--data", str(data), "--out", str(scene.tmp / "run"), "--epochs", "1", *extra], named

    return setup


def _manifest_edit(edit: Callable[[str], str]) -> Callable[[Path], Path]:
    def apply(data: Path) -> Path:
        manifest = data / "manifest.csv"
        manifest.write_text(edit(manifest.read_text(encoding="utf-8")), encoding="utf-8")
        return manifest

    return apply


def _first_clip(data: Path) -> Path:
    with (data / "manifest.csv").open(encoding="utf-8") as handle:
        return data / next(csv.DictReader(handle))["path"]


def _shrink_first_clip(data: Path) -> Path:
    """Replace the first clip of the manifest by one of half the size (loaded first, it used to set the size)."""
    return write_video(_first_clip(data), _moving_square(FRAMES, SIZE // 2))


def _empty_first_clip(data: Path) -> Path:
    clip = _first_clip(data)
    clip.write_bytes(b"")
    return clip


def _latin1_manifest(data: Path) -> Path:
    manifest = data / "manifest.csv"
    manifest.write_bytes(manifest.read_bytes().replace(b",S001,", b",S\xe9001,", 1))
    return manifest


def _binary_dataset_json(data: Path) -> Path:
    (data / "dataset.json").write_bytes(b"\xff\xfe{}")
    return data / "dataset.json"


def _train_with_latin1_config(scene: Scene) -> tuple[list[str], None]:
    config = scene.tmp / "config.json"
    config.write_bytes('{"model": "mic", "note": "café"}'.encode("latin-1"))
    argv, _ = _train()(scene)
    return [*argv, "--config", str(config)], config


def _train_into_a_long_name(scene: Scene) -> tuple[list[str], Path]:
    argv, _ = _train()(scene)
    argv[argv.index("--out") + 1] = str(scene.tmp / TOO_LONG)
    return argv, scene.tmp / TOO_LONG


def _half_written_splits(data: Path) -> Path:
    return _damaged(data / "splits.json", data / "splits.json", keep=0.5)


def _clip_in_train_and_test(data: Path) -> Path:
    splits = data / "splits.json"
    document = json.loads(splits.read_text())
    document["folds"][0]["test"].append(document["folds"][0]["train"][0])
    splits.write_text(json.dumps(document))
    return splits


def _train_without_data(scene: Scene) -> tuple[list[str], Path]:
    return [*TRAIN_ARGS, "--data", str(scene.tmp / "nowhere"), "--out", str(scene.tmp / "run")], scene.tmp / "nowhere"


def _train_into_a_file(scene: Scene) -> tuple[list[str], Path]:
    return [*TRAIN_ARGS, "--data", str(scene.files.data), "--out", str(scene.files["a file"])], scene.files["a file"]


def _train_into_a_read_only_place(scene: Scene) -> tuple[list[str], Path]:
    def read_only(*args: object, **kwargs: object) -> None:  # the probe file, as on a read-only mount (root included)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    argv, _ = _train()(scene)
    scene.monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    return argv, scene.tmp / "run"


def _train_into_a_locked_folder(scene: Scene) -> tuple[list[str], Path]:
    argv, _ = _train()(scene)
    return argv, scene.hold_lock(scene.tmp / "run")


def _resume_a_damaged_checkpoint(scene: Scene) -> tuple[list[str], Path]:
    run = Path(shutil.copytree(scene.files.model.parent, scene.tmp / "run"))
    checkpoint = _flip_bytes(run / "checkpoint.pt")
    return [*TRAIN_ARGS, "--data", str(scene.files.data), "--out", str(run), "--epochs", "2", "--resume"], checkpoint


def _train_on_a_full_disk(scene: Scene) -> tuple[list[str], Path]:
    real_usage = shutil.disk_usage
    argv, _ = _train()(scene)
    scene.monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=2**19))
    return argv, scene.tmp / "run" / "checkpoint.pt"


def _train_while_the_disk_fills(scene: Scene) -> tuple[list[str], Path]:
    real_fsync = os.fsync

    def disk_full_on_checkpoint(fd: int) -> None:
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    argv, _ = _train()(scene)
    scene.monkeypatch.setattr(os, "fsync", disk_full_on_checkpoint)
    return argv, scene.tmp / "run" / "checkpoint.pt"


def _nothing_half_written(scene: Scene) -> None:
    run = scene.tmp / "run"
    left = [path.name for path in run.iterdir() if path.name.endswith(".tmp") or path.name == LOCK_FILE]
    assert not left and not (run / "checkpoint.pt").exists(), left


def _train_with_unicode_paths(scene: Scene) -> tuple[list[str], Path]:
    data = Path(shutil.copytree(scene.files.data, scene.tmp / "dätä 表"))
    return [*TRAIN_ARGS, "--data", str(data), "--out", str(scene.tmp / "rün 1"), "--epochs", "1"], scene.tmp / "rün 1"


TRAIN = [
    Case("train", "--data does not exist", _train_without_data, 2, "manifest.csv: missing"),
    Case(
        "train",
        "half-written manifest (last line cut)",
        _train(_manifest_edit(lambda text: text[: text.rstrip().rfind(",")])),
        2,
        "line 29: has 8 fields",
    ),
    Case(
        "train",
        "manifest row listed twice",
        _train(_manifest_edit(lambda text: text + text.splitlines()[1] + "\n")),
        2,
        "is listed again",
    ),
    Case(
        "train",
        "apex index past the clip's end",
        _train(_manifest_edit(lambda text: text.replace(",5,6,", ",9,6,", 1))),
        2,
        "apex_index 9 is outside",
    ),
    Case("train", "zero-byte manifest.csv", _train(_manifest_edit(lambda text: "")), 2, "missing columns"),
    Case("train", "manifest.csv not UTF-8 (Latin-1)", _train(_latin1_manifest), 2, "is not UTF-8 text"),
    Case("train", "dataset.json not UTF-8", _train(_binary_dataset_json), 2, "dataset.json: malformed"),
    Case("train", "--config JSON not UTF-8", _train_with_latin1_config, 2, "not UTF-8 text"),
    Case("train", "--out name of 404 bytes", _train_into_a_long_name, 2, "--out cannot be used (File name too long)"),
    Case("train", "half-written splits.json", _train(_half_written_splits), 2, "malformed"),
    Case("train", "a clip in train and test", _train(_clip_in_train_and_test), 2, "in train and test"),
    Case(
        "train",
        "--fold past the last fold",
        _train(lambda data: data / "splits.json", "--fold", "7"),
        2,
        "fold 7 does not exist",
    ),
    Case(
        "train",
        "--out is an existing file",
        _train_into_a_file,
        2,
        "--out is an existing file",
        _unchanged("a file"),
    ),
    Case(
        "train",
        "--out where no file can be made (read-only)",
        _train_into_a_read_only_place,
        2,
        "no new file can be made",
    ),
    Case(
        "train",
        "--out in use by another run",
        _train_into_a_locked_folder,
        2,
        "in use by another cvfer process (PID",
    ),
    Case(
        "train",
        "--resume from a checkpoint with 2,000 flipped bytes",
        _resume_a_damaged_checkpoint,
        2,
        "corrupt: checksum mismatch",
    ),
    Case("train", "disk too full for the checkpoint", _train_on_a_full_disk, 2, "MiB free"),
    Case(
        "train",
        "disk fills while the checkpoint is written",
        _train_while_the_disk_fills,
        2,
        "no space left",
        _nothing_half_written,
    ),
    Case("train", "one clip of the wrong size", _train(_shrink_first_clip), 0, "skipped (wrong size"),
    Case("train", "one zero-byte clip", _train(_empty_first_clip), 0, "skipped (file is empty)"),
    Case("train", "unicode and spaces in --data and --out", _train_with_unicode_paths, 0, "model.pt"),
]


# reencode
def _reencode(source: str, *extra: str, destination: str = "out.mp4", named: bool = True) -> Setup:
    """`reencode` of the shared `source`; the line names it (`named`) or says what was written."""
    def setup(scene: Scene) -> tuple[list[str], Path | None]:
        return [str(scene.files[source]), str(scene.tmp / destination), *extra], scene.files[source] if named else None

    return setup


def _reencode_into(destination: Callable[[Scene], Path]) -> Setup:
    def setup(scene: Scene) -> tuple[list[str], Path]:
        return [str(scene.files["unicode"]), str(destination(scene))], destination(scene)

    return setup


WROTE = "dëst ü.mp4: mpeg4 32×32, 6 frames"
REENCODE = [
    Case(
        "reencode",
        "--fps -5",
        _reencode("unicode", "--fps", "-5", named=False),
        2,
        "frame rate -5.0 is not a positive",
    ),
    Case("reencode", "--size 0", _reencode("unicode", "--size", "0"), 2, "size 0 must be positive and even"),
    Case("reencode", "DST is a folder", _reencode_into(lambda scene: scene.tmp), 2, "destination is a folder"),
    Case(
        "reencode",
        "DST is SRC",
        _reencode_into(lambda scene: scene.files["unicode"]),
        2,
        "destination is the source",
        _unchanged("unicode", like="clip"),
    ),
    Case("reencode", "SRC zero-byte", _reencode("empty"), 2, "file is empty"),
    Case("reencode", "SRC WAV renamed .mp4", _reencode("wav"), 2, "audio only"),
    Case("reencode", "SRC truncated at 50 %", _reencode("truncated"), 2, "truncated"),
    Case("reencode", "SRC symlink loop", _reencode("loop"), 2, "symlink loop"),
    Case("reencode", "SRC folder of a PNG declaring 0×0 pixels", _reencode("zero png"), 2, BROKEN),
    Case("reencode", "SRC GIF renamed .mp4", _reencode("gif", destination="dëst ü.mp4", named=False), 0, WROTE),
    Case(
        "reencode",
        "unicode and spaces in SRC and DST",
        _reencode("unicode", destination="dëst ü.mp4", named=False),
        0,
        WROTE,
    ),
]


# inspect
def _inspect(name: str) -> Setup:
    return lambda scene: ([str(scene.files[name])], scene.files[name])


def _inspect_missing(scene: Scene) -> tuple[list[str], Path]:
    return [str(scene.tmp / "absent.mp4")], scene.tmp / "absent.mp4"


def _inspect_png_into_a_folder(scene: Scene) -> tuple[list[str], Path]:
    return [str(scene.files.clip), "--png", str(scene.tmp)], scene.tmp


INSPECT = [
    Case("inspect", "missing file", _inspect_missing, 2, "file not found"),
    Case("inspect", "a file name of 404 bytes", lambda scene: ([str(scene.tmp / TOO_LONG)], scene.tmp / TOO_LONG), 2, "File name too long"),
    Case("inspect", "zero-byte file", _inspect("empty"), 2, "file is empty"),
    Case("inspect", "text file named .mp4", _inspect("text"), 2, "not a readable video"),
    Case("inspect", "WAV renamed .mp4", _inspect("wav"), 2, "audio only"),
    Case("inspect", "a named pipe (FIFO)", _inspect("fifo"), 2, "is not a file"),
    Case("inspect", "MP4 truncated at 50 %", _inspect("truncated"), 2, "truncated"),
    Case(
        "inspect",
        "Matroska missing its last frame",
        _inspect("short mkv"),
        2,
        "(end of file: 0.20 s of 0.24 s present)",
    ),
    Case(
        "inspect",
        "H.264 with B frames (not MIC-ready)",
        _inspect("b frames"),
        1,
        "MIC-ready:  no: contains B frames",
    ),
    Case("inspect", "GIF renamed .mp4 (not MIC-ready)", _inspect("gif"), 1, "MIC-ready:  no: gif stream"),
    Case("inspect", "--png is a folder", _inspect_png_into_a_folder, 2, "--png is a folder"),
    Case("inspect", "unicode and spaces in the path", _inspect("unicode"), 0, "MIC-ready:  yes"),
]


# bench
def _bench(*options: str, clip: str | None = None, named: bool = True) -> Setup:
    """`bench` of the tiny model on one clip; the line names the clip (`named`), not for a bad number."""
    def setup(scene: Scene) -> tuple[list[str], Path | None]:
        video = scene.files[clip] if clip else scene.files.clip
        argv = [str(video), "--models", str(scene.files.model), "--repeats", "1", "--batch", "1", *options]
        return argv, video if named else None

    return setup


def _bench_a_damaged_model(scene: Scene) -> tuple[list[str], Path]:
    model = _flip_bytes(Path(shutil.copy(scene.files.model, scene.tmp / "model.pt")), 3)
    return [str(scene.files.clip), "--models", str(model)], model


BENCH = [
    Case("bench", "--batch 0", _bench("--batch", "0", named=False), 2, "argument --batch: 0 is not positive"),
    Case("bench", "--batch x", _bench("--batch", "x", named=False), 2, "argument --batch: 'x' is not a whole number"),
    Case("bench", "--repeats 0", _bench("--repeats", "0", named=False), 2, "argument --repeats: 0 is not positive"),
    Case("bench", "zero-byte clip", _bench(clip="empty"), 2, "file is empty"),
    Case("bench", "truncated clip", _bench(clip="truncated"), 2, "truncated"),
    Case("bench", "model.pt with flipped bytes", _bench_a_damaged_model, 2, "corrupt: checksum mismatch"),
    Case("bench", "unicode and spaces in the clip's path", _bench(clip="unicode", named=False), 0, "1 clips of 32×32"),
]

CASES = [*PREDICT, *PREPARE, *TRAIN, *REENCODE, *INSPECT, *BENCH]
_OUTCOMES: dict[str, tuple[int, str]] = {}  # the line each case printed, for docs/reliability.md


@pytest.fixture(scope="module", autouse=True)
def outcome_table():
    """With CVFER_BAD_INPUTS_TABLE=FILE, write each case's outcome as a Markdown row of docs/reliability.md."""
    yield
    target = os.environ.get("CVFER_BAD_INPUTS_TABLE")
    if target:
        rows = []
        for case in CASES:
            if str(case) in _OUTCOMES:
                code, line = _OUTCOMES[str(case)]
                rows.append(f"| {case.verb} | {case.input} | {code} | `` {line.strip().replace('|', '/')} `` |")
        Path(target).write_text("\n".join(rows) + "\n", encoding="utf-8")


def _outcome_line(case: Case, named: Path | str | None, err: str, printed: str) -> str:
    """The line that reports `case`: the one error line, or the line saying what happened to the file."""
    if case.code == 2:
        errors = [line for line in err.splitlines() if line.startswith(("cvfer: error:", f"cvfer {case.verb}: error:"))]
        assert len(errors) == 1, err
        assert named is None or str(named) in errors[0], errors[0]
        return errors[0]
    same_line = case.verb != "inspect"  # inspect names the file atop its report
    lines = [
        line
        for line in printed.splitlines()
        if case.message in line and (named is None or not same_line or str(named) in line)
    ]
    assert lines and (named is None or str(named) in printed), printed
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case: Case, files: Files, tmp_path: Path, capsys, monkeypatch, recwarn):
    scene = Scene(files, tmp_path, monkeypatch)
    try:
        argv, named = case.setup(scene)
        code, out, err = run_cli([case.verb, *argv], capsys)
    finally:
        for holder in scene.holders:
            holder.kill()
            holder.wait()
    printed = out + err + "".join(f"{warning.message}\n" for warning in recwarn)
    assert "Traceback" not in printed
    assert code == case.code, printed
    line = _outcome_line(case, named, err, printed)
    assert case.message in line, line
    shown = line.replace(str(tmp_path), "TMP").replace(str(files.root), "FILES").replace("\t", " ")
    _OUTCOMES[str(case)] = (code, shown)
    if case.check is not None:
        case.check(scene)
