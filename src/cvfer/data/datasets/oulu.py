"""Oulu-CASIA NIR&VIS: image sequences from neutral to apex, 6 classes, 80 subjects.

Layout: `VIS/Strong/P001/Anger/000.jpeg ...` (the visible-light camera under normal, "Strong", light,
the subset the papers use), possibly below an `OriginalImg/` or similar folder.
"""

from __future__ import annotations

from pathlib import Path

from cvfer.data.datasets.common import (
    DatasetScan,
    Skipped,
    SourceClip,
    canonical_class,
    relative,
    require_folder,
    require_root,
    sequence_frames,
    subfolders,
)
from cvfer.errors import DatasetError

NAME = "oulu"
CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
FPS = 25.0


def _strong_folder(root: Path) -> Path:
    vis = require_folder(root, ("VIS",), "Oulu-CASIA")
    strong = next((folder for folder in subfolders(vis) if folder.name.lower() == "strong"), None)
    if strong is None:
        raise DatasetError("has no `Strong` folder", vis, "pass the Oulu-CASIA root holding VIS/Strong/P001/Anger/*.jpeg")
    return strong


def scan(root: str | Path) -> DatasetScan:
    """Find the VIS/Strong sequences under `root`."""
    root = require_root(root)
    clips: list[SourceClip] = []
    skipped: list[Skipped] = []
    for subject_dir in subfolders(_strong_folder(root)):
        for class_dir in subfolders(subject_dir):
            source = relative(class_dir, root)
            label = canonical_class(class_dir.name)
            if label not in CLASSES:
                skipped.append(Skipped(source, f"{class_dir.name!r} is not an Oulu-CASIA class ({', '.join(CLASSES)})"))
                continue
            frames = sequence_frames(class_dir, root, skipped)
            if not frames:
                skipped.append(Skipped(source, "empty folder (no images)"))
                continue
            key = f"{subject_dir.name}/{class_dir.name}"
            clips.append(SourceClip(key, frames, subject_dir.name, label, "last", source, FPS))
    return DatasetScan(NAME, clips, skipped, list(CLASSES))
