"""DFEW: movie clips, 7 classes, official 5-fold split over the single-labelled clips.

Layout: `EmoLabel_DataSplit/train(single-labeled)/set_1.csv ... set_5.csv` and
`EmoLabel_DataSplit/test(single-labeled)/set_1.csv ...`, each with a `video_name,label` header and
label codes 1 happiness, 2 sadness, 3 neutral, 4 anger, 5 surprise, 6 disgust, 7 fear; the clips
anywhere under `Clip/`: videos named by their number (`Clip/original/00001.mp4`, `1.mp4`, any
sub-folders) or folders of frames named by it (`Clip/clip_224x224/00001/00001.jpg ...`). A video is
preferred over frames; of several frame folders the one with the most frames. DFEW names no subjects,
so each clip is its own subject.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from cvfer.data.datasets.common import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    DatasetScan,
    Skipped,
    SourceClip,
    natural_key,
    relative,
    require_folder,
    require_root,
    subfolders,
)
from cvfer.errors import DatasetError

NAME = "dfew"
LABEL_CODES = {1: "happiness", 2: "sadness", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust", 7: "fear"}
CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
NUM_FOLDS = 5
SPLIT_FOLDERS = {"train": "train(single-labeled)", "test": "test(single-labeled)"}


def _read_split_file(path: Path) -> list[tuple[int, str]]:
    """(clip number, label code) rows of one official split file; `DatasetError` when malformed."""
    if not path.is_file():
        raise DatasetError("missing official split file", path, "pass the DFEW root holding EmoLabel_DataSplit/")
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"video_name", "label"} <= set(reader.fieldnames or ()):
            raise DatasetError("expected a `video_name,label` header", path)
        for line, row in enumerate(reader, start=2):
            try:
                rows.append((int(row["video_name"]), row["label"].strip()))
            except (TypeError, ValueError):
                raise DatasetError(f"line {line}: video_name {row['video_name']!r} is not a number", path) from None
    return rows


def _index_clips(clip_root: Path) -> dict[int, Path | tuple[Path, ...]]:
    """Clip number → its video, or its largest frame folder when no video exists."""
    videos: dict[int, Path] = {}
    frame_folders: dict[int, tuple[Path, ...]] = {}
    for folder, dirs, files in os.walk(clip_root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        for name in sorted(files):
            path = here / name
            if path.suffix.lower() in VIDEO_SUFFIXES and path.stem.isdigit():
                videos.setdefault(int(path.stem), path)
        frames = tuple(
            here / name
            for name in sorted(files, key=natural_key)
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
        if here.name.isdigit() and len(frames) > len(frame_folders.get(int(here.name), ())):
            frame_folders[int(here.name)] = frames
    return {**frame_folders, **videos}


def scan(root: str | Path) -> DatasetScan:
    """Find DFEW's single-labelled clips under `root` and its 5 official folds."""
    root = require_root(root)
    split_root = require_folder(root, ("EmoLabel_DataSplit",), "DFEW")
    clip_root = next((folder for folder in subfolders(root) if folder.name.lower() == "clip"), root)
    folds_rows = [
        tuple(_read_split_file(split_root / SPLIT_FOLDERS[part] / f"set_{fold}.csv") for part in ("train", "test"))
        for fold in range(1, NUM_FOLDS + 1)
    ]
    labels: dict[int, str] = {}
    conflicting: set[int] = set()
    for fold_rows in folds_rows:
        for number, code in (row for rows in fold_rows for row in rows):
            if labels.setdefault(number, code) != code:
                conflicting.add(number)
    sources = _index_clips(clip_root)
    clips: list[SourceClip] = []
    skipped: list[Skipped] = []
    for number in sorted(labels):
        code, where = labels[number], f"EmoLabel_DataSplit clip {number}"
        frames = sources.get(number)
        if number in conflicting:
            skipped.append(Skipped(where, "different labels in different split files"))
        elif not code.isdigit() or int(code) not in LABEL_CODES:
            skipped.append(Skipped(where, f"label code {code!r} is not one of 1-7"))
        elif frames is None:
            skipped.append(Skipped(where, f"listed in the split files but no video or frame folder {number:05d} found"))
        else:
            key = f"{number:05d}"
            source = relative(frames if isinstance(frames, Path) else frames[0].parent, root)
            clips.append(SourceClip(key, frames, key, LABEL_CODES[int(code)], "middle", source))
    kept = {clip.key for clip in clips}
    official_folds = [
        tuple([f"{number:05d}" for number, _ in rows if f"{number:05d}" in kept] for rows in fold_rows)
        for fold_rows in folds_rows
    ]
    return DatasetScan(NAME, clips, skipped, list(CLASSES), official_folds=official_folds)
