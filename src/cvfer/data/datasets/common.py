"""What every dataset adapter shares: the scan result, class-name mapping, file discovery, frame reading.

An adapter turns a dataset's official layout into a `DatasetScan`: the clips to prepare (each a video
file or an ordered list of image files, with subject and canonical label), what it had to leave out and
why, the dataset's class set and, where the dataset defines one, its official split.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvfer import codec
from cvfer.data.manifest import EXPRESSIONS
from cvfer.errors import CompressedVideoError, DatasetError
from cvfer.io import broken_link

NEUTRAL = "neutral"
CANONICAL_CLASSES = (*EXPRESSIONS, NEUTRAL)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"})
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".webm"})
# Frame rate given to image sequences, which carry none (CK+ was filmed at 30 fps, Oulu-CASIA at 25).
DEFAULT_SEQUENCE_FPS = 25.0

_CLASS_ALIASES = {
    "anger": ("anger", "angry", "an"),
    "contempt": ("contempt", "contemptuous", "co"),
    "disgust": ("disgust", "disgusted", "di"),
    "fear": ("fear", "fearful", "afraid", "scared", "fe"),
    "happiness": ("happiness", "happy", "joy", "ha"),
    "sadness": ("sadness", "sad", "sa"),
    "surprise": ("surprise", "surprised", "su"),
    NEUTRAL: ("neutral", "ne"),
}
CLASS_ALIASES: dict[str, str] = {alias: name for name, aliases in _CLASS_ALIASES.items() for alias in aliases}


@dataclass(frozen=True)
class SourceClip:
    """One clip as found in the dataset: where its frames are and what it is labelled."""

    key: str  # unique, '/'-separated; the prepared clip is written to clips/<key>.mp4
    frames: Path | tuple[Path, ...]  # a video file, or the image files of a sequence in order
    subject: str
    label: str  # canonical class name
    apex: str  # "last" or "middle": where the expression peaks
    source: str  # path relative to the dataset root, for the manifest and messages
    fps: float | None = None  # None: the video's own rate
    morph_frames: int = 0  # > 0: `frames` are key images (neutral … peak) morphed into this many frames


@dataclass(frozen=True)
class Skipped:
    """Something in the dataset that was not prepared, and why."""

    source: str
    reason: str


@dataclass
class DatasetScan:
    """An adapter's result. `official_folds` lists (train keys, test keys) pairs, or None for subject k-fold."""

    name: str
    clips: list[SourceClip]
    skipped: list[Skipped]
    classes: list[str]
    official_folds: list[tuple[list[str], list[str]]] | None = None


def canonical_class(name: str) -> str | None:
    """cvfer's name for a dataset's class name (case-insensitive, common spellings), or None if unknown."""
    return CLASS_ALIASES.get(name.strip().lower())


def ordered_classes(names: set[str] | list[str]) -> list[str]:
    """Canonical class names in cvfer's fixed order (`EXPRESSIONS`, then neutral)."""
    return [name for name in CANONICAL_CLASSES if name in set(names)]


def natural_key(text: str) -> list[int | str]:
    """Sort key ordering 'S2' before 'S10' and 'frame9' before 'frame10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def sorted_entries(folder: Path) -> list[Path]:
    """Visible entries of `folder` in natural order."""
    return sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")), key=lambda p: natural_key(p.name))


def subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders of `folder` in natural order."""
    return [entry for entry in sorted_entries(folder) if entry.is_dir()]


def usable_entries(folder: Path, root: Path, skipped: list[Skipped], empty_reason: str | None = None) -> list[Path]:
    """`sorted_entries(folder)` without the symlinks that lead nowhere (dangling, loops) and the entries that are
    neither file nor folder (a pipe, socket or device: reading one could block forever), which are added to
    `skipped` with the reason; so is `folder` itself, with `empty_reason`, if given and it has no entry at all."""
    listed = sorted_entries(folder)
    if not listed and empty_reason is not None:
        skipped.append(Skipped(relative(folder, root), empty_reason))
    entries = []
    for entry in listed:
        problem = broken_link(entry)
        if problem is None and not entry.is_file() and not entry.is_dir():
            problem = "not a regular file or folder (a pipe, socket or device)"
        if problem is None:
            entries.append(entry)
        else:
            skipped.append(Skipped(relative(entry, root), problem))
    return entries


def is_image(path: Path) -> bool:
    """Whether `path` is a file with a common image suffix."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> tuple[Path, ...]:
    """Image files directly in `folder`, in natural order (the frames of a sequence)."""
    return tuple(p for p in sorted_entries(folder) if is_image(p))


def sequence_frames(folder: Path, root: Path, skipped: list[Skipped]) -> tuple[Path, ...]:
    """`image_files(folder)` for a dataset scan: the broken symlinks in `folder` are listed in `skipped`
    (the sequence is prepared from its other frames)."""
    return tuple(p for p in usable_entries(folder, root, skipped) if is_image(p))


def is_video(path: Path) -> bool:
    """Whether `path` is a file with a common video suffix."""
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root`, '/'-separated."""
    return path.relative_to(root).as_posix()


def find_folder(root: Path, names: tuple[str, ...], max_depth: int = 2) -> Path | None:
    """The shallowest folder under `root` (or `root` itself) whose name is one of `names`, case-insensitive."""
    wanted = {name.lower() for name in names}
    level = [root]
    for depth in range(max_depth + 1):
        matches = [folder for folder in level if folder.name.lower() in wanted]
        if matches:
            return sorted(matches, key=lambda p: natural_key(str(p)))[0]
        if depth < max_depth:
            level = [child for folder in level for child in subfolders(folder)]
    return None


def require_folder(root: Path, names: tuple[str, ...], dataset: str, max_depth: int = 2) -> Path:
    """Like `find_folder`, but raises `DatasetError` pointing at docs/datasets.md when absent."""
    folder = find_folder(root, names, max_depth)
    if folder is None:
        raise DatasetError(
            f"no `{names[0]}` folder found (searched {max_depth} levels down)",
            root,
            f"pass the root of the {dataset} release; the expected layout is in docs/datasets.md",
        )
    return folder


def require_root(root: str | Path) -> Path:
    """`root` as a Path; raises `DatasetError` unless it is an existing folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("is not a folder", root, "pass the folder the dataset was unpacked into")
    return root


@contextlib.contextmanager
def _readable() -> Iterator[None]:
    """Report the codec's `CompressedVideoError` (missing, truncated, corrupt file) as a `DatasetError`."""
    try:
        yield
    except CompressedVideoError as error:
        raise DatasetError(
            f"unreadable ({error.problem})", error.path, "check that the file opens in a video player, or replace it"
        ) from None


def iter_frames(frames: Path | tuple[Path, ...]) -> Iterator[np.ndarray]:
    """Decoded H×W×3 uint8 RGB frames of a video file or an image sequence; `DatasetError` if unreadable."""
    with _readable():
        if isinstance(frames, Path):
            yield from codec.iter_frames(frames)
        else:
            for image_path in frames:
                yield codec.read_image(image_path)


def frame_rate(frames: Path | tuple[Path, ...], default: float = DEFAULT_SEQUENCE_FPS) -> float:
    """A video's average frame rate (or `default` for image sequences and videos that carry none)."""
    if not isinstance(frames, Path):
        return default
    with _readable():
        return codec.read_header(frames).fps or default
