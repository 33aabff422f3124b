"""Atomic file writes: a temp file in the target folder, then os.replace, so readers never see half a file;
checks of output paths made before any work; `broken_link`; and `load_torch_file`, the one guarded `torch.load`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cvfer.errors import CheckpointError, ConfigError


def _file_mode() -> int:
    """Permissions a plain `open(path, "w")` would give: 0o666 minus the process umask."""
    umask = os.umask(0)  # reading the umask means setting it: done once, at import, not per write
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # atomic_open's mkstemp names: .NAME.XXXXXXXX.tmp


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp creates 0600; the result should be shared like any other file
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """`path` as a Path; `ConfigError` unless it is, or can be made, a folder this process can write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} is an existing file, not a folder", path, "pass a folder path, new or existing")
    _check_writable(path, path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """`path` as a Path; `ConfigError` unless it names a file (not a folder) this process can write."""
    path = Path(path)
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


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """`torch.save` to `path` atomically."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_savefig(path: str | Path, figure: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", **kwargs)


def load_torch_file(
    path: str | Path, what: str, *, missing_fix: str, unreadable_fix: str, weights_only: bool = True
) -> Any:
    """`torch.load` of `path` onto the CPU; a `CheckpointError` naming the file and the fix if it is missing
    or unreadable. `what` names the content in the message, e.g. "identity encoder checkpoint"."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found", path, missing_fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(
            f"unreadable: cannot read the {what}, torch cannot load it ({type(error).__name__}: {error})",
            path,
            unreadable_fix,
        ) from None
