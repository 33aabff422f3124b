"""Turn a dataset in its official layout into a prepared cvfer dataset folder.

Each clip is decoded, cropped to the face (one fixed box per clip, see `cvfer.data.faces`) or to its
centred square with `crop_faces=False`, resized to `size`×`size` and re-encoded to the MIC format
(MPEG-4 Part 2, one I frame, no B frames) as `clips/<key>.mp4`. Then `manifest.csv`, `dataset.json`,
`splits.json` and `skipped.csv` (every source that was not prepared, with the reason) are written.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvfer.data import faces, morph
from cvfer.data.cropping import DETECT_EVERY, write_cropped_clip
from cvfer.data.datasets import afew, ckplus, dfew, folder, mmi, oulu, pairs
from cvfer.data.datasets.common import DatasetScan, Skipped, SourceClip, frame_rate, iter_frames
from cvfer.data.manifest import ClipRecord, Manifest, write_manifest
from cvfer.data.splits import OFFICIAL, Fold, Splits, official_splits, subject_kfold, write_splits
from cvfer.errors import ConfigError, CvferError, DatasetError, OutputError
from cvfer.io import atomic_write_text, check_output_folder

SCANNERS: dict[str, Callable[..., DatasetScan]] = {
    "ckplus": ckplus.scan,
    "mmi": mmi.scan,
    "afew": afew.scan,
    "oulu": oulu.scan,
    "dfew": dfew.scan,
    "folder": folder.scan,
    "pairs": pairs.scan,
}
CLIPS_FOLDER = "clips"
SKIPPED_FILE = "skipped.csv"
MIN_FRAMES = 2  # an I frame and at least one P frame


@dataclass(frozen=True)
class CropSettings:
    """How every clip is cut and resized."""

    size: int = 64
    crop_faces: bool = True
    detect_every: int = DETECT_EVERY


@dataclass
class PrepareReport:
    """What `prepare_dataset` wrote: the prepared clips and the skipped sources."""

    out: Path
    clips: list[ClipRecord]
    skipped: list[Skipped]
    classes: list[str]


def morphed_frames(clip: SourceClip) -> list[np.ndarray]:
    """The frames of a clip made from key images (`SourceClip.morph_frames`), by `cvfer.data.morph`: each
    key after the first is registered onto the first (`morph.align_to`), so the last frame is the peak
    image as framed like the neutral one."""
    paths = list(dict.fromkeys(clip.frames))  # an MMI-style clip names its neutral and peaks twice
    images = dict(zip(paths, iter_frames(tuple(paths))))
    if len({image.shape for image in images.values()}) > 1:
        sizes = ", ".join(f"{path.name} {image.shape[1]}x{image.shape[0]}" for path, image in images.items())
        raise DatasetError(f"key images differ in size ({sizes})", paths[0], "give images of one size")
    registered = {}
    for path, image in images.items():
        try:
            landmarks = faces.face_landmarks(image)
        except faces.FaceNotFoundError as error:
            raise faces.FaceNotFoundError(error.problem, path, error.fix) from None
        registered[path] = (image, landmarks) if not registered else morph.align_to(image, landmarks, registered[paths[0]][1])
    keyframes, landmarks = zip(*(registered[path] for path in clip.frames))
    return morph.morph_sequence(keyframes, landmarks, clip.morph_frames)


def _frames(clip: SourceClip) -> Callable[[], Iterator[np.ndarray]]:
    """A fresh iterator over the clip's frames on each call (a morphed clip is made once)."""
    if clip.morph_frames:
        made = morphed_frames(clip)
        return lambda: (frame for frame in made)
    return lambda: iter_frames(clip.frames)


def clip_path(key: str) -> str:
    """Manifest path of the prepared clip with this key."""
    return f"{CLIPS_FOLDER}/{key}.mp4"


def _reason(error: Exception, clip: SourceClip) -> str:
    """One-line reason for skipping `clip`, naming the frame file when one image of a sequence failed."""
    if not isinstance(error, CvferError):
        return f"{type(error).__name__}: {error}"
    if error.path is not None and isinstance(clip.frames, tuple) and error.path in clip.frames:
        return f"{error.path.name}: {error.problem}"
    return error.problem


def prepare_clip(clip: SourceClip, out: Path, protocol: str, settings: CropSettings) -> ClipRecord | Skipped:
    """Crop, resize and re-encode one clip into `out/clips/`; a `Skipped` with the reason if it cannot be."""
    relative_path = clip_path(clip.key)
    try:
        box, num_frames = write_cropped_clip(
            _frames(clip), out / relative_path, settings.size, settings.crop_faces, clip.fps or frame_rate(clip.frames),
            source=clip.source, detect_every=settings.detect_every,
        )
    except OutputError:  # the disk is full or --out unwritable: every later clip would fail the same way
        raise
    except (CvferError, OSError, ValueError) as error:
        return Skipped(clip.source, _reason(error, clip))
    if num_frames < MIN_FRAMES:
        (out / relative_path).unlink()
        return Skipped(clip.source, f"only {num_frames} frame; a clip needs at least {MIN_FRAMES}")
    apex_index = num_frames - 1 if clip.apex == "last" else num_frames // 2
    crop_box = f"{box.center_x:.1f} {box.center_y:.1f} {box.side:.1f} {math.degrees(box.angle):.2f}"
    return ClipRecord(
        relative_path, clip.subject, clip.label, apex_index, num_frames, protocol, {"source": clip.source, "crop_box": crop_box}
    )


def _prepare_all(
    scan: DatasetScan, out: Path, settings: CropSettings, workers: int, cluster: str | None = None
) -> list[ClipRecord | Skipped]:
    """Every clip of `scan` prepared in this process, `workers` processes or on a Dask `cluster`
    (`cvfer.cluster.map_files`); a clip whose preparation failed in an unforeseen way is `Skipped`."""
    from cvfer.cluster import TaskError, map_files

    prepare_one = functools.partial(prepare_clip, out=out, protocol=scan.name, settings=settings)
    results = map_files(prepare_one, scan.clips, workers=workers, cluster=cluster, desc=f"prepare {scan.name}", unit="clip")
    return [Skipped(result.item.source, result.reason) if isinstance(result, TaskError) else result for result in results]


def write_skipped(out: Path, skipped: list[Skipped]) -> Path:
    """Write `skipped.csv` (source,reason), atomically; returns its path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "reason"])
    writer.writerows([item.source, item.reason] for item in skipped)
    atomic_write_text(out / SKIPPED_FILE, buffer.getvalue())
    return out / SKIPPED_FILE


def _splits(scan: DatasetScan, manifest: Manifest, folds: int, seed: int) -> Splits:
    if scan.official_folds is None:
        return subject_kfold(manifest, k=folds, seed=seed)
    prepared = {record.path for record in manifest.clips}

    def prepared_paths(keys: list[str]) -> list[str]:
        return [path for path in map(clip_path, keys) if path in prepared]

    official = [Fold(train=prepared_paths(train), test=prepared_paths(test)) for train, test in scan.official_folds]
    for number, fold in enumerate(official):
        if not fold.train or not fold.test:
            side = "train" if not fold.train else "test"
            raise DatasetError(f"official fold {number} has no prepared {side} clip", manifest.root / SKIPPED_FILE)
    return official_splits(OFFICIAL, official)


def prepare_dataset(
    root: str | Path,
    dataset: str,
    out: str | Path,
    *,
    size: int = 64,
    crop_faces: bool = True,
    subject_pattern: str | None = None,
    subjects_csv: str | Path | None = None,
    folds: int = 10,
    seed: int = 0,
    detect_every: int = 10,
    workers: int = 1,
    morph_frames: int = pairs.DEFAULT_MORPH_FRAMES,
    apex: str = "last",
    cluster: str | None = None,
) -> PrepareReport:
    """Prepare `dataset` found at `root` into `out` (clips, manifest, dataset.json, splits.json, skipped.csv).

    Splits are the dataset's official ones (AFEW train/val, DFEW 5 folds), otherwise subject-independent
    `folds`-fold. `morph_frames` is the length of the clips `pairs` makes from still images, `apex` where
    their peak lies ("middle": neutral → peak → neutral, as MMI). `workers` processes prepare clips in
    parallel, or a Dask `cluster` ("local" or a scheduler address, `cvfer.cluster`). Raises `ConfigError`
    before any work when `out` is a file or not writable, `DatasetError` when no clip at all could be prepared.
    """
    if dataset not in SCANNERS:
        raise ConfigError(f"unknown dataset {dataset!r}", None, f"choose one of {', '.join(SCANNERS)}")
    if size < 16 or size % 2:
        raise ConfigError(f"--size must be an even number of pixels >= 16, got {size}")
    if detect_every < 1 or workers < 1:
        raise ConfigError(f"--detect-every and --workers must be at least 1, got {detect_every} and {workers}")
    if dataset not in ("folder", "pairs") and subject_pattern is not None:
        raise ConfigError(f"--subject-pattern applies to --dataset folder and pairs only; {dataset} names its subjects")
    if dataset != "pairs" and apex != "last":
        raise ConfigError(f"--apex applies to --dataset pairs only; {dataset} knows where its apex is")
    if dataset != "folder" and subjects_csv is not None:
        raise ConfigError(f"--subjects applies to --dataset folder only; {dataset} names its subjects")
    out = check_output_folder(out, "--out")
    options: dict[str, object] = {}
    if dataset == "folder":
        options = {"subject_pattern": subject_pattern, "subjects_csv": subjects_csv}
    elif dataset == "pairs":
        options = {"subject_pattern": subject_pattern, "morph_frames": morph_frames, "apex": apex}
    scan = SCANNERS[dataset](root, **options)
    if not scan.clips:
        skipped_path = write_skipped(out, scan.skipped)
        raise DatasetError(f"no {dataset} clip found ({len(scan.skipped)} skipped)", root, f"see {skipped_path} and docs/datasets.md")
    num_subjects = len({clip.subject for clip in scan.clips})
    if scan.official_folds is None and not 2 <= folds <= num_subjects:
        raise ConfigError(
            f"cannot make {folds} subject-independent folds from the {num_subjects} subjects found in {root}",
            None,
            f"pass --folds between 2 and {num_subjects}" if num_subjects >= 2 else "a k-fold split needs 2 subjects or more",
        )
    settings = CropSettings(size=size, crop_faces=crop_faces, detect_every=detect_every)
    results = _prepare_all(scan, out, settings, workers, cluster)
    records = [item for item in results if isinstance(item, ClipRecord)]
    skipped = scan.skipped + [item for item in results if isinstance(item, Skipped)]
    skipped_path = write_skipped(out, skipped)
    if not records:
        raise DatasetError(
            f"no clip could be prepared from {dataset} ({len(skipped)} skipped)", root, f"see the reasons in {skipped_path}"
        )
    crop_meta = {"crop": "face", "face_padding": faces.FACE_PADDING, "detect_every": detect_every}
    meta = {
        "source": dataset,
        "source_root": str(Path(root).resolve()),
        "size": size,
        **(crop_meta if crop_faces else {"crop": "centre square"}),
        **({"morph_frames": morph_frames, "apex": apex} if dataset == "pairs" else {}),
        "num_skipped": len(skipped),
    }
    write_manifest(out, records, scan.classes, meta)
    manifest = Manifest(root=out, clips=records, classes=scan.classes, meta=meta)
    write_splits(out, _splits(scan, manifest, folds, seed))
    return PrepareReport(out, records, skipped, scan.classes)
