"""AFEW (EmotiW): movie clips, 7 classes, official Train/Val split (the test labels are not public).

Layout: `Train/Angry/000046280.avi ...` and `Val/Angry/...` with class folders Angry Disgust Fear Happy
Neutral Sad Surprise. AFEW names no subjects, so each clip is its own subject; the official split is
the only protocol (train on Train, test on Val).
"""

from __future__ import annotations

from pathlib import Path

from cvfer.data.datasets.common import (
    DatasetScan,
    Skipped,
    SourceClip,
    canonical_class,
    is_video,
    relative,
    require_folder,
    require_root,
    subfolders,
    usable_entries,
)

NAME = "afew"
CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
SPLIT_FOLDERS = {"train": ("Train", "Train_AFEW"), "val": ("Val", "Val_AFEW", "Validation")}


def _scan_split(split_dir: Path, split: str, root: Path, clips: list[SourceClip], skipped: list[Skipped]) -> list[str]:
    keys = []
    for class_dir in subfolders(split_dir):
        source = relative(class_dir, root)
        label = canonical_class(class_dir.name)
        if label not in CLASSES:
            skipped.append(Skipped(source, f"{class_dir.name!r} is not an AFEW class folder"))
            continue
        for entry in usable_entries(class_dir, root, skipped, "empty folder (no videos)"):
            if not is_video(entry):
                skipped.append(Skipped(relative(entry, root), "not a video file"))
                continue
            key = f"{split}/{class_dir.name}/{entry.stem}"
            clips.append(SourceClip(key, entry, key, label, "middle", relative(entry, root)))
            keys.append(key)
    return keys


def scan(root: str | Path) -> DatasetScan:
    """Find AFEW's Train and Val clips under `root`; the official split trains on Train and tests on Val."""
    root = require_root(root)
    clips: list[SourceClip] = []
    skipped: list[Skipped] = []
    train = _scan_split(require_folder(root, SPLIT_FOLDERS["train"], "AFEW"), "train", root, clips, skipped)
    val = _scan_split(require_folder(root, SPLIT_FOLDERS["val"], "AFEW"), "val", root, clips, skipped)
    return DatasetScan(NAME, clips, skipped, list(CLASSES), official_folds=[(train, val)])
