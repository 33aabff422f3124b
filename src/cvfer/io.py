"""Atomic file writes: a temp file in the target folder, then os.replace, so readers never see half a file;
and `load_torch_file`, the one guarded `torch.load`."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cvfer.errors import CheckpointError


def _file_mode() -> int:
    """Permissions a plain `open(path, "w")` would give: 0o666 minus the process umask."""
    umask = os.umask(0)  # reading the umask means setting it: done once, at import, not per write
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


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
