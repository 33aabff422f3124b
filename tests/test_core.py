"""Skeleton pieces: atomic writes, the manifest format, the model registry, the CLI's error path."""

from __future__ import annotations

import os

import pytest

from cvfer.data.manifest import ClipRecord, read_manifest, write_manifest
from cvfer.errors import CheckpointError, ConfigError, DatasetError
from cvfer.io import atomic_open, atomic_torch_save, atomic_write_text, load_torch_file, remove_stale_temp_files
from cvfer.models import create_model


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as handle:
        handle.write(b"half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_stale_temp_files_are_those_atomic_open_names(tmp_path):
    (tmp_path / ".other.tmp").write_text("not ours")
    with pytest.raises(FileNotFoundError), atomic_open(tmp_path / "checkpoint.pt", "wb") as handle:
        handle.write(b"half")  # as if killed here: the temp file stays
        (temp,) = [path for path in tmp_path.iterdir() if path.name.startswith(".checkpoint.pt.")]
        assert remove_stale_temp_files(tmp_path) == [temp]
    assert [path.name for path in tmp_path.iterdir()] == [".other.tmp"]


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_load_torch_file_round_trip_and_errors_name_the_file(tmp_path):
    saved = tmp_path / "weights.pt"
    atomic_torch_save(saved, {"step": 3})
    assert load_torch_file(saved, "weights", missing_fix="m", unreadable_fix="u") == {"step": 3}
    with pytest.raises(CheckpointError, match=r"absent\.pt: weights not found \(retrain\)"):
        load_torch_file(tmp_path / "absent.pt", "weights", missing_fix="retrain", unreadable_fix="u")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: unreadable: cannot read the weights"):
        load_torch_file(garbage, "weights", missing_fix="m", unreadable_fix="delete it")


def test_manifest_round_trip(tmp_path):
    clips = [
        ClipRecord("clips/a.mp4", "s1", "happiness", 9, 10, "ckplus", {"intensity": "0.5"}),
        ClipRecord("clips/b.mp4", "s2", "anger", 5, 10, "mmi"),
    ]
    write_manifest(tmp_path, clips, ["anger", "happiness"], {"source": "test"})
    manifest = read_manifest(tmp_path)
    assert manifest.clips == clips
    assert manifest.clips[0].extra == {"intensity": "0.5"}
    assert manifest.label_index(manifest.clips[0]) == 1
    assert manifest.meta == {"source": "test"}


def test_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="manifest.csv"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, [ClipRecord("a.mp4", "s1", "joy", 1, 2, "x")], ["anger"], {})
    with pytest.raises(DatasetError, match="not in classes"):
        read_manifest(tmp_path)


def test_manifest_refuses_duplicate_rows_and_apex_past_the_end(tmp_path):
    clip = ClipRecord("a.mp4", "s1", "anger", 1, 2, "x")
    write_manifest(tmp_path, [clip, ClipRecord("b.mp4", "s2", "anger", 0, 2, "x"), clip], ["anger"], {})
    with pytest.raises(DatasetError, match=r"manifest.csv: line 4: clip 'a.mp4' is listed again \(first on line 2\)"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, [clip, ClipRecord("b.mp4", "s2", "anger", 2, 2, "x")], ["anger"], {})
    with pytest.raises(DatasetError, match="manifest.csv: line 3: apex_index 2 is outside the clip's 2 frames"):
        read_manifest(tmp_path)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("no-such-model")
