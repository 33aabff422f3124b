"""Atomic file writes: a temp file in the target folder, then os.replace, so readers never see half a file,
and a failed write (disk full, ...) is an `OutputError` naming the file that leaves the old one intact;
checks of output paths made before any work; `run_lock`, one writer per run folder; `broken_link`; and
`atomic_torch_save` / `load_torch_file`, whose files carry a SHA-256 checksum verified on load."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cvfer.errors import CheckpointError, ConfigError, OutputError


def _file_mode() -> int:
    """Permissions a plain `open(path, "w")` would give: 0o666 minus the process umask."""
    umask = os.umask(0)  # reading the umask means setting it: done once, at import, not per write
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # atomic_open's mkstemp names: .NAME.XXXXXXXX.tmp
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
LOCK_FILE = ".cvfer.lock"
_MIB = 2**20


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success it replaces `path`, on error it is removed (and `path` left
    as it was). An `OSError` of the write itself (disk full, read-only place, ...) becomes an `OutputError`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)  # mkstemp creates 0600; the result should be shared like any other file
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise


def _write_error(path: Path, error: OSError) -> OutputError:
    """The `OutputError` for an `OSError` met while writing `path`."""
    if error.errno in _DISK_FULL:
        return OutputError(
            f"cannot be written: no space left on the device ({error.strerror}); the previous file, if any, is intact",
            path,
            "free disk space or choose another output folder, then run the command again",
        )
    return OutputError(
        f"cannot be written ({error.strerror or error}); the previous file, if any, is intact",
        path,
        "check the folder is writable, or choose another output folder",
    )


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files `atomic_open` left in `folder` when its process was killed mid-write; returns them.
    Call only while no other process writes into `folder`."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if _TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str = "--out") -> Iterator[Path]:
    """Hold `folder/.cvfer.lock` (an exclusive `flock`, with this process's PID inside) while the block runs, so
    two runs never write one folder at once: `ConfigError` naming the lock and the PID holding it if another
    process holds it. The kernel drops the lock when its process dies, so a killed run's lock file is taken over.
    `folder` is created if need be, and removed again if the block left it empty."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(folder, error) from None
    lock_path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        except OSError as error:
            raise _write_error(lock_path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{what} is in use by another cvfer process (PID {holder} holds {lock_path})",
                Path(folder),
                "wait for that run to end, or choose another folder",
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break  # else the holder removed the file between our open and flock: open the new one
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def broken_link(path: str | Path) -> str | None:
    """Why the symlink `path` leads to no file ("symlink loop", "dangling symlink to …"), or None."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop"
        return f"dangling symlink to {os.readlink(path)} ({error.strerror})"
    return None


def _check_writable(folder: Path, path: Path, what: str) -> None:
    """`ConfigError` naming `path` unless files can be made in `folder` (created if need be): its nearest
    existing ancestor must be a folder that takes a new file (probed with a temporary one)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        problem = broken_link(existing)
        if problem is not None:
            raise ConfigError(f"{what} cannot be created: {existing} is a {problem}", path, "choose another path")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} cannot be created: {existing} is a file, not a folder", path, "choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(
            f"{what} cannot be written: no new file can be made in {existing} ({error.strerror})",
            path,
            "choose a writable place",
        ) from None


@contextlib.contextmanager
def _unusable_path(path: Path, what: str) -> Iterator[None]:
    """Turn an `OSError` about the path itself (a name too long, a component not a folder) into a `ConfigError`."""
    try:
        yield
    except OSError as error:
        raise ConfigError(f"{what} cannot be used ({error.strerror or error})", path, "choose another path") from None


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """`path` as a Path; `ConfigError` unless it is, or can be made, a folder this process can write into."""
    path = Path(path)
    with _unusable_path(path, what):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what} is an existing file, not a folder", path, "pass a folder path, new or existing")
        _check_writable(path, path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """`path` as a Path; `ConfigError` unless it names a file (not a folder) this process can write."""
    path = Path(path)
    with _unusable_path(path, what):
        if path.is_dir():
            raise ConfigError(f"{what} is a folder", path, "name a file, e.g. one inside that folder")
        _check_writable(path.parent, path, what)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# A SHA-256 of what torch.save wrote, kept in the zip archive's comment (which torch ignores): the file stays
# an ordinary torch file, and `load_torch_file` can tell a damaged one from a good one.
_EOCD_SIGNATURE = b"PK\x05\x06"  # zip's end-of-central-directory record: 22 bytes + the comment
_EOCD_SIZE = 22
_CHECKSUM_MARK = b"cvfer-sha256:"
_CHECKSUM_RECORD_SIZE = len(_CHECKSUM_MARK) + 64
_warned_unverified: set[Path] = set()


def _with_checksum(data: memoryview) -> list[bytes | memoryview]:
    """The pieces of `data` (a torch zip archive without comment) with its SHA-256 set as the archive comment."""
    if bytes(data[-_EOCD_SIZE : -_EOCD_SIZE + 4]) != _EOCD_SIGNATURE or bytes(data[-2:]) != b"\0\0":
        raise ValueError("torch.save did not write a zip archive without comment")
    record = _CHECKSUM_MARK + hashlib.sha256(data).hexdigest().encode("ascii")
    return [data[:-2], len(record).to_bytes(2, "little"), record]


def check_free_space(path: str | Path, size: int) -> None:
    """`OutputError` naming `path` unless its file system has room for a new `size`-byte copy of it (an atomic
    write keeps the old file until the new one is complete, so both must fit at once)."""
    path = Path(path)
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    needed = size + size // 20 + _MIB  # 5 % and 1 MiB of slack for the file system's own blocks
    free = shutil.disk_usage(existing).free
    if free < needed:
        kept = " beside the old one" if path.exists() else ""
        raise OutputError(
            f"cannot be written: the new {size / _MIB:.1f} MiB file{kept} needs {needed / _MIB:.1f} MiB free, "
            f"{existing} has {free / _MIB:.1f} MiB",
            path,
            "free disk space or choose another output folder, then run the command again",
        )


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """`torch.save` to `path` atomically, with a SHA-256 checksum `load_torch_file` verifies; `OutputError`
    before anything is written when the disk lacks room for the new file beside the old one."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    check_free_space(path, len(data) + _CHECKSUM_RECORD_SIZE)
    with atomic_open(path, "wb") as handle:
        for piece in _with_checksum(data):
            handle.write(piece)


def _checksum_state(path: Path) -> bool | None:
    """True if the checksum record at the end of `path` matches its content, None if the file carries none,
    False if it does not match or the record itself is damaged."""
    size = path.stat().st_size
    tail_size = min(size, _EOCD_SIZE + _CHECKSUM_RECORD_SIZE)
    with path.open("rb") as handle:
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
        if _CHECKSUM_MARK not in tail:
            return None
        record = tail[-_CHECKSUM_RECORD_SIZE:]
        eocd = tail[:_EOCD_SIZE]
        digest = record[len(_CHECKSUM_MARK) :]
        if (
            len(tail) != _EOCD_SIZE + _CHECKSUM_RECORD_SIZE
            or not eocd.startswith(_EOCD_SIGNATURE)
            or int.from_bytes(eocd[-2:], "little") != _CHECKSUM_RECORD_SIZE
            or not record.startswith(_CHECKSUM_MARK)
            or not re.fullmatch(rb"[0-9a-f]{64}", digest)
        ):
            return False
        hasher = hashlib.sha256()
        handle.seek(0)
        remaining = size - _CHECKSUM_RECORD_SIZE - 2
        while remaining:
            chunk = handle.read(min(remaining, 16 * _MIB))
            if not chunk:
                return False
            hasher.update(chunk)
            remaining -= len(chunk)
        hasher.update(b"\0\0")
    return hasher.hexdigest().encode("ascii") == digest


def atomic_savefig(path: str | Path, figure: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", **kwargs)


def load_torch_file(
    path: str | Path,
    what: str,
    *,
    missing_fix: str,
    unreadable_fix: str,
    corrupt_fix: str | None = None,
    weights_only: bool = True,
    expect_checksum: bool = False,
) -> Any:
    """`torch.load` of `path` onto the CPU after verifying the checksum `atomic_torch_save` wrote; a
    `CheckpointError` naming the file and the fix if it is missing, damaged (`corrupt_fix`, by default
    `unreadable_fix`) or unreadable. `what` names the content in the message, e.g. "identity encoder checkpoint".
    A file without checksum (an older cvfer's, or a foreign one) is loaded unverified, with one warning per
    file when `expect_checksum`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found", path, missing_fix)
    if path.stat().st_size == 0:
        raise CheckpointError(f"unreadable: the {what} is an empty file", path, unreadable_fix)
    try:
        verified = _checksum_state(path)
    except OSError as error:
        raise CheckpointError(f"unreadable: cannot read the {what} ({error.strerror})", path, unreadable_fix) from None
    if verified is False:
        raise CheckpointError(
            f"corrupt: checksum mismatch, the {what} changed after it was written (damaged on disk or in a copy)",
            path,
            corrupt_fix or unreadable_fix,
        )
    if verified is None and expect_checksum and path.resolve() not in _warned_unverified:
        _warned_unverified.add(path.resolve())
        warnings.warn(f"{path}: {what} has no checksum (written by an older cvfer); loaded unverified", stacklevel=3)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # torch raises many types for a truncated or foreign file
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:200]  # torch's first sentence
        raise CheckpointError(
            f"unreadable: cannot read the {what}, torch cannot load it ({type(error).__name__}: {reason})",
            path,
            unreadable_fix,
        ) from None
