"""Dataset adapters on tiny fake trees in each official layout (no face crop, so dlib is not needed)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imsave

from cvfer.cli import main as cli_main
from cvfer.codec import read_compressed
from cvfer.codec.writer import write_video
from cvfer.data.datasets import SCANNERS, prepare_dataset
from cvfer.data.datasets.common import SourceClip, iter_frames
from cvfer.data.datasets.prepare import CropSettings, Skipped, prepare_clip
from cvfer.data.manifest import read_manifest
from cvfer.data.splits import check_subject_independent, read_splits
from cvfer.errors import CompressedVideoError, ConfigError, DatasetError

SIZE = 16


def frames(count: int = 3, seed: int = 0, shape: tuple[int, int] = (24, 32)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for _ in range(count)]


def write_images(folder: Path, count: int = 3, suffix: str = ".png", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(frames(count, seed)):
        imsave(folder / f"{folder.name}_{index:08d}{suffix}", image, check_contrast=False)


def write_clip(path: Path, count: int = 4, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames(count, seed))


def skipped_rows(out: Path) -> dict[str, str]:
    with (out / "skipped.csv").open(newline="") as handle:
        return {row["source"]: row["reason"] for row in csv.DictReader(handle)}


def prepare(root: Path, dataset: str, out: Path, **options):
    return prepare_dataset(root, dataset, out, size=SIZE, crop_faces=False, **options)


def test_ckplus_labelled_sequences_and_skips(tmp_path):
    root = tmp_path / "CK+"
    codes = {"S005": {"001": 3, "002": 5}, "S010": {"001": 1, "004": 7}, "S011": {"001": 2, "002": 6}}
    for subject, sequences in codes.items():
        for sequence, code in sequences.items():
            write_images(root / "cohn-kanade-images" / subject / sequence, count=3 + int(sequence[-1]))
            label_dir = root / "Emotion" / subject / sequence
            label_dir.mkdir(parents=True)
            (label_dir / f"{subject}_{sequence}_00000011_emotion.txt").write_text(f"   {code:.7e}\n")
    write_images(root / "cohn-kanade-images" / "S011" / "003")  # unlabelled
    write_images(root / "cohn-kanade-images" / "S012" / "001")
    (root / "Emotion" / "S012" / "001").mkdir(parents=True)
    (root / "Emotion" / "S012" / "001" / "S012_001_emotion.txt").write_text("happy")  # malformed
    (root / "cohn-kanade-images" / "S012" / "002").mkdir()  # labelled but empty
    (root / "Emotion" / "S012" / "002").mkdir()
    (root / "Emotion" / "S012" / "002" / "S012_002_emotion.txt").write_text("4.0")

    report = prepare(root, "ckplus", tmp_path / "out", folds=3)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
    by_path = {clip.path: clip for clip in manifest.clips}
    assert set(by_path) == {f"clips/{s}/{q}.mp4" for s, seqs in codes.items() for q in seqs}
    clip = by_path["clips/S005/002.mp4"]
    assert (clip.subject, clip.label, clip.num_frames, clip.apex_index, clip.protocol) == ("S005", "happiness", 5, 4, "ckplus")
    assert by_path["clips/S010/004.mp4"].label == "surprise" and by_path["clips/S011/001.mp4"].label == "contempt"
    assert clip.extra["source"] == "cohn-kanade-images/S005/002"
    skipped = skipped_rows(tmp_path / "out")
    assert "unlabelled" in skipped["cohn-kanade-images/S011/003"]
    assert "malformed" in skipped["cohn-kanade-images/S012/001"]
    assert "empty folder" in skipped["cohn-kanade-images/S012/002"]
    assert len(report.skipped) == 3
    splits = read_splits(tmp_path / "out")
    assert splits.kind == "subject_kfold" and len(splits.folds) == 3
    check_subject_independent(manifest, splits)
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert (info["source"], info["size"], info["crop"]) == ("ckplus", SIZE, "centre square")


def test_ckplus_without_the_official_folders_names_what_is_missing(tmp_path):
    (tmp_path / "Emotion").mkdir()
    with pytest.raises(DatasetError, match="cohn-kanade-images.*docs/datasets.md"):
        prepare(tmp_path, "ckplus", tmp_path / "out")


def mmi_session(root: Path, session: str, subject: str, emotion: int | None, video: bytes | None = None) -> None:
    folder = root / "Sessions" / session
    name = f"S{int(subject):03d}-{session}"
    if video is None:
        write_clip(folder / f"{name}.avi", count=5, seed=int(session))
    else:
        folder.mkdir(parents=True)
        (folder / f"{name}.avi").write_bytes(video)
    (folder / "session.xml").write_text(
        f'<?xml version="1.0"?>\n<session sessionId="{session}">\n  <subject id="{subject}"/>\n'
        f'  <track id="0" type="Video" view="0" filename="{name}.avi"/>\n</session>\n'
    )
    metatag = f'  <Metatag Name="Emotion" Value="{emotion}"/>\n' if emotion is not None else ""
    (folder / f"{name}.xml").write_text(f'<?xml version="1.0"?>\n<ActionUnits>\n{metatag}  <ActionUnit Number="12"/>\n</ActionUnits>\n')


def test_mmi_sessions_with_xml_labels(tmp_path):
    root = tmp_path / "mmi"
    for session, subject, emotion in [("100", "1", 1), ("101", "1", 4), ("200", "2", 6), ("201", "2", 3), ("300", "3", 5)]:
        mmi_session(root, session, subject, emotion)
    mmi_session(root, "301", "3", None)  # AU-only session
    mmi_session(root, "302", "3", 2, video=b"not a video" * 50)  # unreadable video
    (root / "Sessions" / "303").mkdir()  # empty session
    prepare(root, "mmi", tmp_path / "out", folds=3)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    labels = {clip.path: (clip.subject, clip.label, clip.apex_index) for clip in manifest.clips}
    assert labels == {
        "clips/100.mp4": ("1", "anger", 2),
        "clips/101.mp4": ("1", "happiness", 2),
        "clips/200.mp4": ("2", "surprise", 2),
        "clips/201.mp4": ("2", "fear", 2),
        "clips/300.mp4": ("3", "sadness", 2),
    }
    skipped = skipped_rows(tmp_path / "out")
    assert "AU-only" in skipped["Sessions/301"]
    assert "unreadable" in skipped["Sessions/302/S003-302.avi"]
    assert "no video" in skipped["Sessions/303"]
    check_subject_independent(manifest, read_splits(tmp_path / "out"))


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_truncated_video_is_refused_by_prepare_as_by_the_reader(tmp_path, suffix):
    video = tmp_path / f"clip{suffix}"
    write_clip(video, count=8)
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    with pytest.raises(CompressedVideoError, match="truncated") as reader:
        read_compressed(video)
    with pytest.raises(DatasetError) as prepared:
        list(iter_frames(video))
    # iter_frames streams, so it may meet the damage while decoding, before the reader's end-of-file count.
    assert prepared.value.path == video and reader.value.path == video
    assert prepared.value.problem.startswith("unreadable (") and "truncated" in prepared.value.problem
    clip = SourceClip("clip", video, "s1", "anger", "last", video.name)
    skipped = prepare_clip(clip, tmp_path / "out", "folder", CropSettings(size=SIZE, crop_faces=False))
    assert skipped == Skipped(video.name, prepared.value.problem)


def test_afew_official_train_val_split(tmp_path):
    root = tmp_path / "AFEW"
    for split, seed in (("Train", 0), ("Val", 100)):
        for index, name in enumerate(["Angry", "Happy", "Neutral"]):
            write_clip(root / split / name / f"{seed + index:09d}.avi", seed=seed + index)
    (root / "Train" / "Sad").mkdir()  # empty class folder
    (root / "Train" / "Happy" / "notes.txt").write_text("not a clip")
    (root / "Val" / "Angry" / "loop.avi").symlink_to("loop.avi")
    prepare(root, "afew", tmp_path / "out", workers=2)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert sorted(clip.label for clip in manifest.clips) == ["anger", "anger", "happiness", "happiness", "neutral", "neutral"]
    splits = read_splits(tmp_path / "out")
    assert splits.kind == "official" and len(splits.folds) == 1
    assert sorted(splits.folds[0].train) == ["clips/train/Angry/000000000.mp4", "clips/train/Happy/000000001.mp4", "clips/train/Neutral/000000002.mp4"]
    assert all(path.startswith("clips/val/") for path in splits.folds[0].test) and len(splits.folds[0].test) == 3
    skipped = skipped_rows(tmp_path / "out")
    assert skipped == {"Train/Happy/notes.txt": "not a video file", "Train/Sad": "empty folder (no videos)", "Val/Angry/loop.avi": "symlink loop"}


def test_oulu_vis_strong_sequences(tmp_path):
    strong = tmp_path / "OuluCasIA" / "OriginalImg" / "VIS" / "Strong"
    for subject in ("P001", "P002"):
        for name in ("Anger", "Happiness", "Surprise"):
            write_images(strong / subject / name, count=4, suffix=".jpeg")
    write_images(tmp_path / "OuluCasIA" / "OriginalImg" / "VIS" / "Weak" / "P001" / "Anger")
    prepare(tmp_path / "OuluCasIA", "oulu", tmp_path / "out", folds=2)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert {(c.path, c.subject, c.label, c.apex_index) for c in manifest.clips if c.subject == "P002"} == {
        ("clips/P002/Anger.mp4", "P002", "anger", 3),
        ("clips/P002/Happiness.mp4", "P002", "happiness", 3),
        ("clips/P002/Surprise.mp4", "P002", "surprise", 3),
    }
    assert len(manifest.clips) == 6  # the Weak illumination is not used


def test_dfew_official_five_folds(tmp_path):
    root = tmp_path / "DFEW"
    labels = {1: 1, 2: 4, 3: 3, 4: 7, 5: 5, 6: 2}  # clip number -> DFEW code
    for number in (1, 2, 4, 5):
        write_clip(root / "Clip" / "original" / f"{number:05d}.mp4", seed=number)
    write_images(root / "Clip" / "clip_224x224" / "00003", count=4, suffix=".jpg")
    split_root = root / "EmoLabel_DataSplit"
    for fold in range(1, 6):
        test = {fold} | ({6} if fold == 5 else set())
        for part, numbers in (("train", set(labels) - test), ("test", test)):
            path = split_root / f"{part}(single-labeled)" / f"set_{fold}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("video_name,label\n" + "".join(f"{n},{labels[n]}\n" for n in sorted(numbers)))
    prepare(root, "dfew", tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert {c.path: c.label for c in manifest.clips} == {
        "clips/00001.mp4": "happiness",
        "clips/00002.mp4": "anger",
        "clips/00003.mp4": "neutral",
        "clips/00004.mp4": "fear",
        "clips/00005.mp4": "surprise",
    }
    splits = read_splits(tmp_path / "out")
    assert splits.kind == "official" and [fold.test for fold in splits.folds] == [[f"clips/{n:05d}.mp4"] for n in range(1, 6)]
    assert all(len(fold.train) == 4 for fold in splits.folds)
    assert "no video or frame folder 00006" in skipped_rows(tmp_path / "out")["EmoLabel_DataSplit clip 6"]


def test_dfew_missing_split_file_is_an_error(tmp_path):
    (tmp_path / "EmoLabel_DataSplit" / "train(single-labeled)").mkdir(parents=True)
    with pytest.raises(DatasetError, match="set_1.csv.*missing official split file"):
        prepare(tmp_path, "dfew", tmp_path / "out")


def folder_tree(root: Path) -> None:
    for name, clips in {"happy": ["s01_a.mp4", "s02_a.avi"], "Angry": ["s01_b.mp4", "s02_b.mkv"], "sadness": ["s03_c.mp4"]}.items():
        for seed, clip in enumerate(clips):
            write_clip(root / name / clip, seed=seed)
    write_images(root / "sadness" / "s01_seq", count=3)
    write_images(root / "sadness" / "s04_empty", count=0)
    imsave(root / "happy" / "s05_still.png", frames(1)[0], check_contrast=False)


def test_folder_with_subject_pattern(tmp_path):
    folder_tree(tmp_path / "mine")
    (tmp_path / "mine" / "happy" / "clip_without_subject.mp4").write_bytes(b"x")
    report = prepare(tmp_path / "mine", "folder", tmp_path / "out", subject_pattern=r"^s(?P<subject>\d+)_", folds=2)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == ["anger", "happiness", "sadness"]
    assert {(c.path, c.subject, c.label) for c in manifest.clips} == {
        ("clips/happy/s01_a.mp4", "01", "happiness"),
        ("clips/happy/s02_a.mp4", "02", "happiness"),
        ("clips/Angry/s01_b.mp4", "01", "anger"),
        ("clips/Angry/s02_b.mp4", "02", "anger"),
        ("clips/sadness/s03_c.mp4", "03", "sadness"),
        ("clips/sadness/s01_seq.mp4", "01", "sadness"),
    }
    skipped = {item.source: item.reason for item in report.skipped}
    assert "does not match --subject-pattern" in skipped["happy/clip_without_subject.mp4"]
    assert "single image" in skipped["happy/s05_still.png"]
    assert "empty folder" in skipped["sadness/s04_empty"]


def test_folder_with_subjects_csv_and_bad_options(tmp_path):
    folder_tree(tmp_path / "mine")
    table = tmp_path / "subjects.csv"
    table.write_text("path,subject\nhappy/s01_a.mp4,ann\nhappy/s02_a.avi,bob\nAngry/s01_b.mp4,ann\nsadness/s01_seq,cy\n")
    prepare(tmp_path / "mine", "folder", tmp_path / "out", subjects_csv=table, folds=2)
    subjects = {c.path: c.subject for c in read_manifest(tmp_path / "out").clips}
    assert subjects == {"clips/happy/s01_a.mp4": "ann", "clips/happy/s02_a.mp4": "bob", "clips/Angry/s01_b.mp4": "ann", "clips/sadness/s01_seq.mp4": "cy"}
    assert "no row" in skipped_rows(tmp_path / "out")["Angry/s02_b.mkv"]
    with pytest.raises(ConfigError, match="named group `subject`"):
        prepare(tmp_path / "mine", "folder", tmp_path / "out2", subject_pattern=r"s\d+")
    with pytest.raises(ConfigError, match="--detect-every"):
        prepare(tmp_path / "mine", "folder", tmp_path / "out2", subjects_csv=table, detect_every=0)
    with pytest.raises(ConfigError, match="exactly one of"):
        prepare(tmp_path / "mine", "folder", tmp_path / "out2")
    with pytest.raises(ConfigError, match="between 2 and 3"):
        prepare(tmp_path / "mine", "folder", tmp_path / "out2", subjects_csv=table, folds=10)
    (tmp_path / "mine" / "bored").mkdir()
    with pytest.raises(DatasetError, match="'bored' is not an expression"):
        prepare(tmp_path / "mine", "folder", tmp_path / "out2", subjects_csv=table)


def test_cli_prepare_warns_about_skips_and_fails_when_nothing_is_prepared(tmp_path, capsys):
    folder_tree(tmp_path / "mine")
    args = ["prepare", str(tmp_path / "mine"), "--dataset", "folder", "--no-crop", "--size", "16", "--folds", "2"]
    assert cli_main([*args, "--out", str(tmp_path / "out"), "--subject-pattern", r"^s(?P<subject>\d+)_"]) == 0
    captured = capsys.readouterr()
    assert "prepared 6 clips of 3 subjects" in captured.out
    assert "skipped 2" in captured.err and "sadness/s04_empty" in captured.err
    assert cli_main([*args, "--out", str(tmp_path / "none"), "--subject-pattern", r"^nobody(?P<subject>\d+)"]) == 2
    captured = capsys.readouterr()
    assert "no" in captured.err and "skipped.csv" in captured.err
    assert len(skipped_rows(tmp_path / "none")) == 8


def test_cli_offers_every_adapter():
    from cvfer.cli.prepare import DATASETS
    from cvfer.data.datasets import SCANNERS

    assert DATASETS == tuple(SCANNERS)


def test_mmi_subject_from_the_video_name_without_session_xml(tmp_path):
    root = tmp_path / "mmi"
    for session, subject, emotion in [("10", "7", 2), ("11", "8", 6)]:
        mmi_session(root, session, subject, emotion)
        (root / "Sessions" / session / "session.xml").unlink()
    prepare(root, "mmi", tmp_path / "out", folds=2)
    assert {(c.subject, c.label) for c in read_manifest(tmp_path / "out").clips} == {("7", "disgust"), ("8", "surprise")}


def test_folder_lists_broken_symlinks_and_prepares_the_rest(tmp_path):
    folder_tree(tmp_path / "mine")
    (tmp_path / "mine" / "happy" / "s06_gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    (tmp_path / "mine" / "Angry" / "s07_loop.mp4").symlink_to("s07_loop.mp4")
    write_images(tmp_path / "mine" / "sadness" / "s08_seq", count=3)
    (tmp_path / "mine" / "sadness" / "s08_seq" / "s08_seq_00000003.png").symlink_to(tmp_path / "deleted.png")
    report = prepare(tmp_path / "mine", "folder", tmp_path / "out", subject_pattern=r"^s(?P<subject>\d+)_", folds=2)
    prepared = {clip.path: clip.num_frames for clip in read_manifest(tmp_path / "out").clips}
    assert len(report.clips) == len(prepared) == 7 and prepared["clips/sadness/s08_seq.mp4"] == 3
    skipped = skipped_rows(tmp_path / "out")
    assert skipped["happy/s06_gone.mp4"].startswith("dangling symlink to ")
    assert skipped["Angry/s07_loop.mp4"] == "symlink loop"
    assert skipped["sadness/s08_seq/s08_seq_00000003.png"].startswith("dangling symlink to ")


def test_folder_lists_files_outside_the_class_folders(tmp_path):
    folder_tree(tmp_path / "mine")
    write_clip(tmp_path / "mine" / "s09_stray.mp4")
    (tmp_path / "mine" / "README.txt").write_text("my clips")
    prepare(tmp_path / "mine", "folder", tmp_path / "out", subject_pattern=r"^s(?P<subject>\d+)_", folds=2)
    skipped = skipped_rows(tmp_path / "out")
    assert skipped["s09_stray.mp4"] == skipped["README.txt"] == "not in a class folder"


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder in which no new file can be made: mode 0o555, or /proc when running as root (root writes
    through permission bits; /proc takes no new file even from root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0 and not Path("/proc").is_dir():
        pytest.skip("running as root without /proc: no read-only folder to test with")
    yield Path("/proc") if os.geteuid() == 0 else folder
    folder.chmod(0o755)


@pytest.mark.parametrize("where", ["existing file", "read-only place"])
def test_cli_prepare_refuses_an_unusable_out_before_any_work(tmp_path, capsys, monkeypatch, read_only_folder, where):
    folder_tree(tmp_path / "mine")
    (tmp_path / "taken").write_text("someone's file")
    out = tmp_path / "taken" if where == "existing file" else read_only_folder / "out"

    def scan_nothing(*args, **kwargs):
        raise AssertionError("the dataset was scanned before --out was checked")

    monkeypatch.setitem(SCANNERS, "folder", scan_nothing)
    args = ["prepare", str(tmp_path / "mine"), "--dataset", "folder", "--no-crop", "--subject-pattern", r"^s(?P<subject>\d+)_"]
    assert cli_main([*args, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"cvfer: error: {out}: --out ")
    assert ("existing file" if where == "existing file" else "cannot be written") in error
    assert (tmp_path / "taken").read_text() == "someone's file"
