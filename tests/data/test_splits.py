"""Subject-independent splits: coverage, independence, stratification, determinism, file round trip."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from cvfer.data.manifest import EXPRESSIONS, ClipRecord, Manifest
from cvfer.data.splits import (
    Fold,
    Splits,
    check_subject_independent,
    official_splits,
    read_splits,
    split_validation,
    subject_kfold,
    write_splits,
)
from cvfer.errors import DatasetError


def make_manifest(root, num_subjects: int = 23, seed: int = 0) -> Manifest:
    """Subjects with 1-3 clips of a random subset of the classes, as in real FER datasets."""
    rng = np.random.default_rng(seed)
    clips = []
    for subject in range(num_subjects):
        for label in rng.choice(EXPRESSIONS, size=rng.integers(2, 8), replace=False):
            for repeat in range(rng.integers(1, 4)):
                clips.append(ClipRecord(f"clips/s{subject}_{label}_{repeat}.mp4", f"s{subject}", str(label), 9, 10, "ckplus"))
    return Manifest(root=root, clips=clips, classes=list(EXPRESSIONS))


def test_every_clip_is_tested_once_and_train_is_the_rest(tmp_path):
    manifest = make_manifest(tmp_path)
    splits = subject_kfold(manifest, k=10, seed=0)
    assert splits.kind == "subject_kfold" and len(splits.folds) == 10
    all_paths = [clip.path for clip in manifest.clips]
    tested = Counter(path for fold in splits.folds for path in fold.test)
    assert set(tested) == set(all_paths) and set(tested.values()) == {1}
    for fold in splits.folds:
        assert fold.test
        assert sorted(fold.train + fold.test) == sorted(all_paths)
    check_subject_independent(manifest, splits)


def test_folds_are_stratified_and_even(tmp_path):
    manifest = make_manifest(tmp_path, num_subjects=40, seed=1)
    splits = subject_kfold(manifest, k=5, seed=0)
    label = {clip.path: clip.label for clip in manifest.clips}
    totals = Counter(label.values())
    for fold in splits.folds:
        counts = Counter(label[path] for path in fold.test)
        for name, total in totals.items():
            assert abs(counts[name] - total / 5) <= max(3, 0.35 * total / 5), (name, counts[name], total)


def test_split_is_deterministic_and_seeded(tmp_path):
    manifest = make_manifest(tmp_path)
    assert subject_kfold(manifest, 10, seed=4) == subject_kfold(manifest, 10, seed=4)
    assert any(subject_kfold(manifest, 10, seed=4) != subject_kfold(manifest, 10, seed=s) for s in range(5, 9))


def test_too_many_folds_is_an_error(tmp_path):
    manifest = make_manifest(tmp_path, num_subjects=3)
    with pytest.raises(DatasetError, match="cannot make 4 subject-independent folds from 3 subjects"):
        subject_kfold(manifest, k=4)


def test_leak_is_named_with_subject_and_fold(tmp_path):
    manifest = make_manifest(tmp_path)
    splits = subject_kfold(manifest, k=5, seed=0)
    leaked_clip = splits.folds[2].test[0]
    leaked_subject = next(clip.subject for clip in manifest.clips if clip.path == leaked_clip)
    folds = list(splits.folds)
    folds[2] = Fold(train=[*folds[2].train, leaked_clip], test=folds[2].test)
    with pytest.raises(DatasetError, match=f"fold 2 .*subject '{leaked_subject}'"):
        check_subject_independent(manifest, Splits("subject_kfold", folds))
    with pytest.raises(DatasetError, match="not in the manifest"):
        check_subject_independent(manifest, Splits("x", [Fold(train=["nope.mp4"], test=[])]))


def test_write_read_round_trip_and_errors(tmp_path):
    manifest = make_manifest(tmp_path)
    splits = subject_kfold(manifest, k=4, seed=2)
    with pytest.raises(DatasetError, match="splits.json: missing"):
        read_splits(tmp_path)
    path = write_splits(tmp_path, splits)
    assert path == tmp_path / "splits.json"
    assert read_splits(tmp_path) == splits
    path.write_text(json.dumps({"kind": "x", "folds": [{"train": ["a"], "test": 3}]}))
    with pytest.raises(DatasetError, match="malformed"):
        read_splits(tmp_path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="malformed"):
        read_splits(tmp_path)


def test_official_splits_reject_overlap():
    splits = official_splits("official", [(["a", "b"], ["c"]), Fold(train=["c"], test=["a"])])
    assert splits.kind == "official" and splits.folds[0] == Fold(train=["a", "b"], test=["c"])
    with pytest.raises(DatasetError, match="fold 1 has 1 clips in train and test"):
        official_splits("official", [(["a"], ["b"]), (["a", "b"], ["b"])])


def test_validation_carves_whole_subjects(tmp_path):
    manifest = make_manifest(tmp_path)
    fold = subject_kfold(manifest, k=5, seed=0).folds[0]
    carved = split_validation(manifest, fold.train, fraction=0.2, seed=1)
    assert sorted(carved.train + carved.test) == sorted(fold.train)
    subject = {clip.path: clip.subject for clip in manifest.clips}
    assert not {subject[p] for p in carved.train} & {subject[p] for p in carved.test}
    assert 0.1 * len(fold.train) <= len(carved.test) <= 0.4 * len(fold.train)
    assert carved == split_validation(manifest, fold.train, fraction=0.2, seed=1)
