"""Any dataset laid out as one sub-folder per class, each holding videos or folders of frames.

The class folders are named by expression (`angry`, `Happiness`, `sad`, ...; see `CLASS_ALIASES`).
Subjects come from `subject_pattern`, a regular expression with a named group `subject` searched in
each clip's file or folder name, or from `subjects_csv`, a `path,subject` CSV whose paths are relative
to the root (`happy/clip01.mp4`, `sad/seq07`). The apex is the last frame unless told otherwise.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from cvfer.data.datasets.common import (
    CANONICAL_CLASSES,
    DatasetScan,
    Skipped,
    SourceClip,
    canonical_class,
    is_image,
    ordered_classes,
    relative,
    require_root,
    sequence_frames,
    usable_entries,
)
from cvfer.errors import ConfigError, DatasetError

NAME = "folder"


def compile_subject_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a subject regex; `ConfigError` unless it is valid and has a `(?P<subject>...)` group."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"--subject-pattern {pattern!r} is not a valid regular expression ({error})") from None
    if "subject" not in compiled.groupindex:
        raise ConfigError(
            f"--subject-pattern {pattern!r} has no named group `subject`",
            None,
            "write it like 'S(?P<subject>\\d+)_' or '(?P<subject>.*)' for one subject per clip",
        )
    return compiled


def read_subjects_csv(path: str | Path) -> dict[str, str]:
    """`path,subject` rows (header optional) → {relative path: subject}; `DatasetError` when malformed."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("subjects CSV not found", path, "pass a CSV with `path,subject` rows")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"not UTF-8 text ({error.reason} at byte {error.start})", path,
                           "save the subjects CSV as UTF-8") from error
    subjects: dict[str, str] = {}
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or (line == 1 and [cell.strip().lower() for cell in row] == ["path", "subject"]):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"line {line}: expected `path,subject`, got {row}", path)
        subjects[Path(row[0].strip()).as_posix().strip("/")] = row[1].strip()
    return subjects


def _class_folders(root: Path, skipped: list[Skipped]) -> list[tuple[Path, str]]:
    """The class folders in `root` with their canonical labels; other entries of `root` go to `skipped`."""
    folders = []
    for folder in usable_entries(root, root, skipped):
        if not folder.is_dir():
            skipped.append(Skipped(folder.name, "not in a class folder"))
            continue
        label = canonical_class(folder.name)
        if label is None:
            raise DatasetError(
                f"class folder {folder.name!r} is not an expression cvfer knows",
                folder,
                f"rename it to one of {', '.join(CANONICAL_CLASSES)}",
            )
        folders.append((folder, label))
    labels = [label for _, label in folders]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise DatasetError(f"several class folders mean {duplicates}", root, "merge them into one folder per class")
    if not folders:
        raise DatasetError("has no class sub-folders", root, "put each class's clips in a sub-folder named by class")
    return folders


def scan(
    root: str | Path,
    subject_pattern: str | None = None,
    subjects_csv: str | Path | None = None,
    apex: str = "last",
) -> DatasetScan:
    """Find the clips of a class-per-folder dataset; exactly one of `subject_pattern`/`subjects_csv` is needed."""
    root = require_root(root)
    if (subject_pattern is None) == (subjects_csv is None):
        raise ConfigError(
            "the folder dataset needs exactly one of --subject-pattern and --subjects",
            None,
            "pass --subject-pattern '(?P<subject>.*)' if every clip is its own subject",
        )
    if apex not in ("last", "middle"):
        raise ConfigError(f"apex must be 'last' or 'middle', got {apex!r}")
    pattern = compile_subject_pattern(subject_pattern) if subject_pattern is not None else None
    subjects = read_subjects_csv(subjects_csv) if subjects_csv is not None else {}
    clips: list[SourceClip] = []
    skipped: list[Skipped] = []
    keys: set[str] = set()
    folders = _class_folders(root, skipped)
    for class_dir, label in folders:
        for entry in usable_entries(class_dir, root, skipped, "empty folder (no clips)"):
            source = relative(entry, root)
            if is_image(entry):
                skipped.append(Skipped(source, "a single image, not a clip (put a sequence's frames in a folder)"))
                continue
            frames: Path | tuple[Path, ...] = entry if entry.is_file() else sequence_frames(entry, root, skipped)
            if not frames:
                skipped.append(Skipped(source, "empty folder (no images)"))
                continue
            if pattern is not None:
                match = pattern.search(entry.name)
                subject = match["subject"] if match is not None else None
                if not subject:
                    skipped.append(Skipped(source, f"name does not match --subject-pattern {pattern.pattern!r}"))
                    continue
            else:
                subject = subjects.get(source)
                if subject is None:
                    skipped.append(Skipped(source, f"no row for {source!r} in {subjects_csv}"))
                    continue
            key = relative(entry.with_suffix("") if entry.is_file() else entry, root)
            key = key if key not in keys else source.replace(".", "_")
            keys.add(key)
            clips.append(SourceClip(key, frames, subject, label, apex, source))
    return DatasetScan(NAME, clips, skipped, ordered_classes({label for _, label in folders}))
