"""CK+ (Extended Cohn-Kanade): image sequences from neutral to apex, 7 classes, 123 subjects.

Layout: `cohn-kanade-images/S005/001/S005_001_00000001.png ...` and
`Emotion/S005/001/S005_001_00000011_emotion.txt` holding one float code 1–7. Only the 327 sequences
with an emotion file are labelled; the others are listed as skipped ("unlabelled").
"""

from __future__ import annotations

from pathlib import Path

from cvfer.data.datasets.common import (
    DatasetScan,
    Skipped,
    SourceClip,
    relative,
    require_folder,
    require_root,
    sequence_frames,
    subfolders,
)

NAME = "ckplus"
# Emotion codes of CK+'s Emotion/*_emotion.txt files.
EMOTION_CODES = {1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness", 6: "sadness", 7: "surprise"}
FPS = 30.0


def _read_label(path: Path) -> str:
    """The canonical class of an `_emotion.txt` file; raises ValueError with the reason when malformed."""
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"malformed emotion file {path.name} (expected one number 1-7, got {text[:20]!r})") from None
    if value != int(value) or int(value) not in EMOTION_CODES:
        raise ValueError(f"emotion code {text} in {path.name} is not one of 1-7")
    return EMOTION_CODES[int(value)]


def scan(root: str | Path) -> DatasetScan:
    """Find CK+'s labelled sequences under `root` (the folder holding `cohn-kanade-images` and `Emotion`)."""
    root = require_root(root)
    images_root = require_folder(root, ("cohn-kanade-images",), "CK+")
    labels_root = require_folder(root, ("Emotion", "Emotion_labels"), "CK+")
    if labels_root.name.lower() == "emotion_labels" and (labels_root / "Emotion").is_dir():
        labels_root = labels_root / "Emotion"
    clips: list[SourceClip] = []
    skipped: list[Skipped] = []
    seen: set[tuple[str, str]] = set()
    for subject_dir in subfolders(images_root):
        for sequence_dir in subfolders(subject_dir):
            subject, sequence = subject_dir.name, sequence_dir.name
            seen.add((subject, sequence))
            source = relative(sequence_dir, root)
            label_files = sorted((labels_root / subject / sequence).glob("*_emotion.txt"))
            if not label_files:
                skipped.append(Skipped(source, "unlabelled sequence (no Emotion/*_emotion.txt file)"))
                continue
            if len(label_files) > 1:
                skipped.append(Skipped(source, f"{len(label_files)} emotion files; expected one"))
                continue
            try:
                label = _read_label(label_files[0])
            except ValueError as error:
                skipped.append(Skipped(source, str(error)))
                continue
            frames = sequence_frames(sequence_dir, root, skipped)
            if not frames:
                skipped.append(Skipped(source, "empty folder (no images)"))
                continue
            clips.append(SourceClip(f"{subject}/{sequence}", frames, subject, label, "last", source, FPS))
    for subject_dir in subfolders(labels_root):
        for sequence_dir in subfolders(subject_dir):
            if (subject_dir.name, sequence_dir.name) not in seen and any(sequence_dir.glob("*_emotion.txt")):
                skipped.append(Skipped(relative(sequence_dir, root), "emotion label without an image sequence"))
    return DatasetScan(NAME, clips, skipped, list(EMOTION_CODES.values()))
