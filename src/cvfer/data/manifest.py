"""The one dataset format every producer writes and every consumer reads.

A prepared dataset is a folder holding:
- `manifest.csv`: one row per clip: path (relative to the folder), subject, label (class name),
  apex_index, num_frames, protocol; extra columns are kept in `ClipRecord.extra`.
- `dataset.json`: the class names in label order plus free metadata (source, size, fps, preset, seed).
- `splits.json`: written by `cvfer.data.splits`.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvfer.errors import DatasetError
from cvfer.io import atomic_write_json, atomic_write_text

MANIFEST_COLUMNS = ("path", "subject", "label", "apex_index", "num_frames", "protocol")
EXPRESSIONS = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a dataset."""

    path: str
    subject: str
    label: str
    apex_index: int
    num_frames: int
    protocol: str
    extra: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass
class Manifest:
    """All clips of a prepared dataset, with its class list and metadata."""

    root: Path
    clips: list[ClipRecord]
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def label_index(self, clip: ClipRecord) -> int:
        """Integer label of `clip` in `classes` order."""
        return self.classes.index(clip.label)

    def subjects(self) -> list[str]:
        """Sorted distinct subject ids."""
        return sorted({clip.subject for clip in self.clips})

    def video_path(self, clip: ClipRecord) -> Path:
        """Absolute path of the clip's video."""
        return self.root / clip.path


def write_manifest(root: str | Path, clips: list[ClipRecord], classes: list[str], meta: dict[str, Any]) -> None:
    """Write `manifest.csv` and `dataset.json` into `root`, atomically."""
    root = Path(root)
    extra_columns = sorted({key for clip in clips for key in clip.extra})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*MANIFEST_COLUMNS, *extra_columns])
    for clip in clips:
        writer.writerow(
            [clip.path, clip.subject, clip.label, clip.apex_index, clip.num_frames, clip.protocol]
            + [clip.extra.get(key, "") for key in extra_columns]
        )
    atomic_write_text(root / "manifest.csv", buffer.getvalue())
    atomic_write_json(root / "dataset.json", {"classes": list(classes), **meta})


def read_manifest(root: str | Path) -> Manifest:
    """Read a prepared dataset folder; raises `DatasetError` naming the file and the problem."""
    root = Path(root)
    manifest_path, info_path = root / "manifest.csv", root / "dataset.json"
    for needed in (manifest_path, info_path):
        if not needed.is_file():
            raise DatasetError(
                "missing; not a prepared dataset folder", needed, "create one with `cvfer synth` or `cvfer prepare`"
            )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        classes = list(info.pop("classes"))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as error:
        raise DatasetError(f"malformed ({error})", info_path) from None
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"is not UTF-8 text ({error})", manifest_path, "save it as UTF-8 CSV") from None
    clips = []
    first_line: dict[str, int] = {}
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"missing columns {sorted(missing)}", manifest_path)
        for line, row in enumerate(reader, start=2):
            if None in row or None in row.values():  # DictReader's marks of a row with more or fewer fields
                extra = row.get(None) or []
                fields = len(reader.fieldnames) + len(extra) if extra else sum(value is not None for value in row.values())
                raise DatasetError(
                    f"line {line}: has {fields} fields, the header {len(reader.fieldnames)} (a half-written or "
                    "hand-edited row)",
                    manifest_path,
                    "re-prepare the dataset, or complete the row",
                )
            try:
                clip = ClipRecord(
                    path=row["path"],
                    subject=row["subject"],
                    label=row["label"],
                    apex_index=int(row["apex_index"]),
                    num_frames=int(row["num_frames"]),
                    protocol=row["protocol"],
                    extra={k: v for k, v in row.items() if k not in MANIFEST_COLUMNS},
                )
            except (TypeError, ValueError) as error:
                raise DatasetError(f"line {line}: {error}", manifest_path) from None
            if clip.label not in classes:
                raise DatasetError(f"line {line}: label {clip.label!r} not in classes {classes}", manifest_path)
            if not 0 <= clip.apex_index < clip.num_frames:
                raise DatasetError(
                    f"line {line}: apex_index {clip.apex_index} is outside the clip's {clip.num_frames} frames",
                    manifest_path,
                    "re-prepare the dataset, or set apex_index to a frame in 0..num_frames-1",
                )
            if clip.path in first_line:
                raise DatasetError(
                    f"line {line}: clip {clip.path!r} is listed again (first on line {first_line[clip.path]})",
                    manifest_path,
                    "remove the duplicate row",
                )
            first_line[clip.path] = line
            clips.append(clip)
    if not clips:
        raise DatasetError("has no clips", manifest_path)
    if not text.endswith("\n"):
        warnings.warn(
            f"{manifest_path}: does not end with a newline, so its last row (line {line}) may be cut short", stacklevel=2
        )
    return Manifest(root=root, clips=clips, classes=classes, meta=info)
