"""Skeleton pieces: atomic writes, the manifest format, the model registry, the CLI's error path."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import pytest
import torch

from cvfer.data.manifest import ClipRecord, read_manifest, write_manifest
from cvfer.errors import CheckpointError, ConfigError, DatasetError, OutputError
from cvfer.io import (
    LOCK_FILE,
    atomic_open,
    atomic_torch_save,
    atomic_write_text,
    check_output_folder,
    load_torch_file,
    remove_stale_temp_files,
    run_lock,
)
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
    with pytest.raises(OutputError, match="checkpoint.pt: cannot be written"), atomic_open(tmp_path / "checkpoint.pt", "wb") as handle:
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


def _load(path, **options):
    return load_torch_file(path, "weights", missing_fix="m", unreadable_fix="u", corrupt_fix="delete it", **options)


def test_torch_files_carry_a_checksum_verified_on_load(tmp_path):
    saved = tmp_path / "weights.pt"
    atomic_torch_save(saved, {"weight": torch.arange(4000.0)})
    assert torch.equal(_load(saved, expect_checksum=True)["weight"], torch.arange(4000.0))
    intact = saved.read_bytes()
    for where in (len(intact) // 2, 100, len(intact) - 10):  # tensor data, a zip header, the checksum itself
        damaged = bytearray(intact)
        damaged[where] ^= 0x04
        saved.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"weights\.pt: corrupt: checksum mismatch.*\(delete it\)$"):
            _load(saved)
    saved.write_bytes(intact[:-40])  # the end lost
    with pytest.raises(CheckpointError, match=r"weights\.pt: corrupt: checksum mismatch"):
        _load(saved)


def test_a_file_without_checksum_loads_with_one_warning(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"step": 1}, old)
    with pytest.warns(UserWarning, match=r"old\.pt: weights has no checksum \(written by an older cvfer\)"):
        assert _load(old, expect_checksum=True) == {"step": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load(old, expect_checksum=True) == {"step": 1}  # once per file
        assert _load(old) == {"step": 1}  # a foreign file loaded where no checksum is expected: no warning


def test_a_torch_write_needs_room_for_the_new_file_beside_the_old(tmp_path, monkeypatch):
    saved = tmp_path / "checkpoint.pt"
    atomic_torch_save(saved, {"step": 1})
    before = saved.read_bytes()
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=3 * 2**20))
    with pytest.raises(OutputError, match=r"checkpoint\.pt: cannot be written: the new 4\.0 MiB file beside the old one "
                       r"needs 5\.2 MiB free, .* has 3\.0 MiB \(free disk space"):
        atomic_torch_save(saved, {"step": 2, "weight": torch.zeros(2**20)})
    assert saved.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_write_that_fills_the_disk_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    saved = tmp_path / "model.pt"
    atomic_torch_save(saved, {"step": 1})
    before = saved.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match=r"model\.pt: cannot be written: no space left on the device .* is intact"):
        atomic_torch_save(saved, {"step": 2})
    with pytest.raises(OutputError, match=r"notes\.txt: cannot be written"):
        atomic_write_text(tmp_path / "notes.txt", "x")
    assert saved.read_bytes() == before and os.listdir(tmp_path) == ["model.pt"]


def test_an_out_folder_where_no_file_can_be_made_is_refused(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # the probe, as on a read-only mount
    with pytest.raises(ConfigError, match=r"run: --out cannot be written: no new file can be made in .* \(Read-only"):
        check_output_folder(tmp_path / "run", "--out")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_refused(tmp_path):
    (tmp_path / "locked").mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="no new file can be made"):
        check_output_folder(tmp_path / "locked" / "run", "--out")


def test_one_run_at_a_time_per_folder(tmp_path):
    with run_lock(tmp_path / "run") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ConfigError, match=rf"--out is in use by another cvfer process \(PID {os.getpid()} holds .*{LOCK_FILE}"):
            with run_lock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run").exists()  # made for the run, left empty: removed


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cvfer.io import run_lock\nwith run_lock(sys.argv[1]): print(flush=True); input()",
         str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    holder.stdout.readline()
    with pytest.raises(ConfigError, match=f"PID {holder.pid} holds"):
        with run_lock(tmp_path):
            pass
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK_FILE).read_text() == f"{holder.pid}\n"  # killed: its lock file stays behind
    with run_lock(tmp_path) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / LOCK_FILE).exists()


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


def test_a_half_written_manifest_row_is_refused(tmp_path):
    write_manifest(tmp_path, [ClipRecord("a.mp4", "s1", "anger", 1, 2, "x"), ClipRecord("b.mp4", "s2", "anger", 0, 2, "x")], ["anger"], {})
    manifest = tmp_path / "manifest.csv"
    text = manifest.read_text()
    manifest.write_text(text[: text.rindex(",")])  # the last row cut before its protocol
    with pytest.raises(DatasetError, match=r"manifest.csv: line 3: has 5 fields, the header 6 \(a half-written"):
        read_manifest(tmp_path)
    manifest.write_text(text.replace("anger,1,2,x", "anger,1,2,x,surplus"))
    with pytest.raises(DatasetError, match="line 2: has 7 fields, the header 6"):
        read_manifest(tmp_path)
    manifest.write_text(text.rstrip("\n"))
    with pytest.warns(UserWarning, match=r"does not end with a newline, so its last row \(line 3\) may be cut short"):
        read_manifest(tmp_path)
