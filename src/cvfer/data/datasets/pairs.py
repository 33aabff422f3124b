"""Still images to onset→apex clips: a neutral photo and a peak photo (or a short run of frames) per clip.

Layout: a folder holding `neutral/` and one folder per expression (names as for `folder`, e.g. `anger`,
`happy`). Each image in an expression folder is a peak; each sub-folder there is a short run of frames
ending at the peak. A peak is paired with the neutral image of the same subject and sequence, else with
the subject's first neutral image; `subject_pattern` (named groups `subject` and, optionally,
`sequence`) is searched in the file names, by default CK+'s `S010_004_00000019.png`. The clip is made by
`cvfer.data.morph` (`morph_frames` frames from the neutral face to the peak), so its frames move. With
`apex="middle"` the face returns to neutral (neutral → peak → neutral, 2·`morph_frames` − 1 frames, the
peak in the middle), as MMI's onset–apex–offset clips do.
Folders that name no expression are listed as skipped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from cvfer.data import faces
from cvfer.data.datasets.common import (
    NEUTRAL,
    DatasetScan,
    Skipped,
    SourceClip,
    canonical_class,
    is_image,
    iter_frames,
    natural_key,
    ordered_classes,
    relative,
    require_folder,
    require_root,
    sequence_frames,
    subfolders,
    usable_entries,
)
from cvfer.data.datasets.folder import compile_subject_pattern
from cvfer.errors import ConfigError, DatasetError

NAME = "pairs"
DEFAULT_SUBJECT_PATTERN = r"^(?P<subject>[^_]+)_(?P<sequence>[^_]+)_"
DEFAULT_MORPH_FRAMES = 16
FPS = 25.0


def _identity(name: str, pattern: re.Pattern[str]) -> tuple[str, str | None] | None:
    match = pattern.search(name)
    if match is None or not match["subject"]:
        return None
    sequence = match["sequence"] if "sequence" in pattern.groupindex else None
    return match["subject"], sequence


def _neutrals(folder: Path, pattern: re.Pattern[str], skipped: list[Skipped], root: Path) -> dict[tuple[str, str | None], list[Path]]:
    """Neutral images by (subject, sequence), in natural order; broken symlinks and unmatched names go to `skipped`."""
    found: dict[tuple[str, str | None], list[Path]] = defaultdict(list)
    for image in sequence_frames(folder, root, skipped):
        identity = _identity(image.name, pattern)
        if identity is None:
            skipped.append(Skipped(relative(image, root), f"name does not match --subject-pattern {pattern.pattern!r}"))
            continue
        found[identity].append(image)
    return found


def _first_with_face(candidates: list[Path]) -> Path:
    """The first image in which dlib finds a face (several crops of one frame: a false detection among them);
    the first one when none shows a face or none can be read (preparing it then says why)."""
    if len(candidates) == 1:
        return candidates[0]
    for candidate in candidates:
        try:
            if faces.detect_faces(next(iter_frames((candidate,)))):
                return candidate
        except DatasetError:
            continue
    return candidates[0]


def _one_peak_per_sequence(entries: list[Path], pattern: re.Pattern[str]) -> set[Path]:
    """The entries to use: of several images naming one (subject, sequence), the first showing a face."""
    if "sequence" not in pattern.groupindex:
        return set(entries)
    groups: dict[tuple[str, str | None] | Path, list[Path]] = defaultdict(list)
    for entry in entries:
        identity = _identity(entry.name, pattern) if entry.is_file() else None
        groups[identity or entry].append(entry)
    return {_first_with_face(group) for group in groups.values()}


def scan(
    root: str | Path, subject_pattern: str | None = None, morph_frames: int = DEFAULT_MORPH_FRAMES, apex: str = "last"
) -> DatasetScan:
    """Find (neutral, peak) pairs and short runs under `root` (the folder holding `neutral/`, or above it)."""
    root = require_root(root)
    if morph_frames < 2:
        raise ConfigError(f"--morph-frames must be at least 2, got {morph_frames}")
    if apex not in ("last", "middle"):
        raise ConfigError(f"--apex must be 'last' or 'middle', got {apex!r}")
    pattern = compile_subject_pattern(subject_pattern or DEFAULT_SUBJECT_PATTERN)
    base = require_folder(root, (NEUTRAL,), "pairs").parent
    skipped: list[Skipped] = []
    neutrals = _neutrals(base / NEUTRAL, pattern, skipped, root)
    by_subject: dict[str, list[Path]] = defaultdict(list)
    for (subject, _), images in sorted(neutrals.items(), key=lambda item: natural_key(f"{item[0][0]}_{item[0][1]}")):
        by_subject[subject].extend(images)
    clips: list[SourceClip] = []
    labels: set[str] = set()
    for class_dir in subfolders(base):
        label = canonical_class(class_dir.name)
        if label == NEUTRAL:
            continue
        if label is None:
            skipped.append(Skipped(relative(class_dir, root), "folder names no expression cvfer knows"))
            continue
        entries = usable_entries(class_dir, root, skipped)
        chosen = _one_peak_per_sequence(entries, pattern)
        for entry in entries:
            source = relative(entry, root)
            if entry not in chosen:
                skipped.append(Skipped(source, "another crop of a peak already taken (one clip per sequence)"))
                continue
            if entry.is_file() and not is_image(entry):
                skipped.append(Skipped(source, "not an image"))
                continue
            keys = (entry,) if entry.is_file() else sequence_frames(entry, root, skipped)
            if not keys:
                skipped.append(Skipped(source, "empty folder (no images)"))
                continue
            identity = _identity(entry.name, pattern)
            if identity is None:
                skipped.append(Skipped(source, f"name does not match --subject-pattern {pattern.pattern!r}"))
                continue
            candidates = neutrals.get(identity) or by_subject.get(identity[0])
            if not candidates:
                skipped.append(Skipped(source, f"no neutral image of subject {identity[0]} in {NEUTRAL}/"))
                continue
            neutral = _first_with_face(candidates)
            frames = (neutral, *keys) if apex == "last" else (neutral, *keys, *reversed(keys[:-1]), neutral)
            num_frames = morph_frames if apex == "last" else 2 * morph_frames - 1
            key = relative(entry.with_suffix("") if entry.is_file() else entry, root)
            clips.append(SourceClip(key, frames, identity[0], label, apex, source, FPS, num_frames))
            labels.add(label)
    return DatasetScan(NAME, clips, skipped, ordered_classes(labels))
