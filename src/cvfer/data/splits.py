"""Train/test splits of a prepared dataset, stored as `splits.json`: lists of clip paths per fold.

FER benchmarks are evaluated subject-independently (no person in both train and test), so the
k-fold split assigns whole subjects to folds, balancing class counts greedily.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvfer.data.manifest import Manifest
from cvfer.errors import DatasetError
from cvfer.io import atomic_write_json

SPLITS_FILE = "splits.json"
OFFICIAL = "official"  # the kind of a dataset's published split (`cvfer prepare`)


@dataclass(frozen=True)
class Fold:
    """One train/test split: clip paths as written in the manifest."""

    train: list[str]
    test: list[str]


@dataclass(frozen=True)
class Splits:
    """All folds of a dataset and how they were made (e.g. "subject_kfold", "official")."""

    kind: str
    folds: list[Fold]


def subject_kfold(manifest: Manifest, k: int = 10, seed: int = 0) -> Splits:
    """Subject-independent k-fold split, stratified by class as far as whole subjects allow.

    Subjects (largest first, ties in a seeded random order) go one by one to the fold whose class
    counts stay closest to an even share; each clip is in exactly one test fold.
    """
    subjects = manifest.subjects()
    if not 2 <= k <= len(subjects):
        raise DatasetError(
            f"cannot make {k} subject-independent folds from {len(subjects)} subjects",
            manifest.root / "manifest.csv",
            f"use 2 <= k <= {len(subjects)}",
        )
    class_index = {name: i for i, name in enumerate(manifest.classes)}
    counts = {subject: np.zeros(len(manifest.classes)) for subject in subjects}
    for clip in manifest.clips:
        counts[clip.subject][class_index[clip.label]] += 1
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    order.sort(key=lambda subject: -counts[subject].sum())
    fold_counts = np.zeros((k, len(manifest.classes)))
    fold_subjects: list[set[str]] = [set() for _ in range(k)]
    for subject in order:
        # Adding counts s to fold counts f raises the squared distance to the even share by
        # s·(2f + s - 2·share): only s·f differs between folds. Ties: smaller fold, fewer subjects.
        costs = [
            (float(counts[subject] @ fold_counts[f]), fold_counts[f].sum(), len(fold_subjects[f]), f) for f in range(k)
        ]
        best = min(costs)[-1]
        fold_counts[best] += counts[subject]
        fold_subjects[best].add(subject)
    folds = []
    for members in fold_subjects:
        test = [clip.path for clip in manifest.clips if clip.subject in members]
        train = [clip.path for clip in manifest.clips if clip.subject not in members]
        folds.append(Fold(train=train, test=test))
    return Splits(kind="subject_kfold", folds=folds)


def official_splits(kind: str, folds: Sequence[Fold | tuple[Sequence[str], Sequence[str]]]) -> Splits:
    """Splits from a dataset's official lists of (train, test) clip paths; no clip may be on both sides."""
    made = []
    for number, fold in enumerate(folds):
        train, test = (fold.train, fold.test) if isinstance(fold, Fold) else fold
        both = sorted(set(train) & set(test))
        if both:
            raise DatasetError(f"official fold {number} has {len(both)} clips in train and test, e.g. {both[0]!r}")
        made.append(Fold(train=list(train), test=list(test)))
    if not made:
        raise DatasetError(f"official splits {kind!r} have no folds")
    return Splits(kind=kind, folds=made)


def write_splits(root: str | Path, splits: Splits) -> Path:
    """Write `splits` to `root/splits.json` atomically; returns the path."""
    path = Path(root) / SPLITS_FILE
    atomic_write_json(
        path, {"kind": splits.kind, "folds": [{"train": fold.train, "test": fold.test} for fold in splits.folds]}
    )
    return path


def read_splits(root: str | Path) -> Splits:
    """Read `root/splits.json`; raises `DatasetError` if it is missing or malformed."""
    path = Path(root) / SPLITS_FILE
    if not path.is_file():
        raise DatasetError("missing", path, "write it with `cvfer synth`, `cvfer prepare` or cvfer.data.splits.write_splits")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        folds = [Fold(train=_paths(fold["train"]), test=_paths(fold["test"])) for fold in data["folds"]]
        kind = str(data["kind"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"malformed ({error})", path, "regenerate it with cvfer.data.splits.write_splits") from None
    if not folds:
        raise DatasetError("has no folds", path, "regenerate it with cvfer.data.splits.write_splits")
    return Splits(kind=kind, folds=folds)


def check_subject_independent(manifest: Manifest, splits: Splits) -> None:
    """Raise `DatasetError` naming the subject and fold if a subject is in both train and test."""
    subject_of = {clip.path: clip.subject for clip in manifest.clips}
    splits_path = manifest.root / SPLITS_FILE
    for number, fold in enumerate(splits.folds):
        unknown = [path for path in (*fold.train, *fold.test) if path not in subject_of]
        if unknown:
            raise DatasetError(f"fold {number} names clip {unknown[0]!r} that is not in the manifest", splits_path)
        train_subjects = {subject_of[path] for path in fold.train}
        leaked = sorted(train_subjects & {subject_of[path] for path in fold.test})
        if leaked:
            raise DatasetError(
                f"fold {number} is not subject-independent: subject {leaked[0]!r} is in train and test",
                splits_path,
                "make the split with cvfer.data.splits.subject_kfold",
            )


def split_validation(manifest: Manifest, train: Sequence[str], fraction: float = 0.1, seed: int = 0) -> Fold:
    """Carve whole subjects (about `fraction` of the clips) out of a training list as validation.

    Returns `Fold(train=remaining training clips, test=validation clips)`.
    """
    if not 0 < fraction < 1:
        raise DatasetError(f"validation fraction {fraction} is not in (0, 1)")
    subject_of = {clip.path: clip.subject for clip in manifest.clips}
    subjects = sorted({subject_of[path] for path in train})
    if len(subjects) < 2:
        raise DatasetError(f"cannot carve validation subjects out of {len(subjects)} training subject(s)")
    wanted = max(1, round(fraction * len(train)))
    chosen: set[str] = set()
    taken = 0
    for index in np.random.default_rng(seed).permutation(len(subjects)):
        if taken >= wanted or len(chosen) == len(subjects) - 1:
            break
        chosen.add(subjects[index])
        taken += sum(subject_of[path] == subjects[index] for path in train)
    return Fold(
        train=[path for path in train if subject_of[path] not in chosen],
        test=[path for path in train if subject_of[path] in chosen],
    )


def _paths(values: object) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise ValueError("a fold's train and test must be lists of clip paths")
    return values
