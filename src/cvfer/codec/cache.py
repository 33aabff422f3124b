"""On-disk cache of `read_compressed` results, keyed by the file's content and the read parameters.

Entries are `.npz` files written atomically (temp file + rename, `cvfer.io`), so processes filling the
same cache at once never see half an entry: at worst two compute the same entry and the last rename
wins with identical content. An unreadable entry is recomputed, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from cvfer.codec.reader import CompressedVideo, _check_file, read_compressed
from cvfer.io import atomic_open

# Bump when read_compressed's output changes for the same file and parameters.
CACHE_VERSION = 1
_HASH_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class CompressedCache:
    """`read_compressed` with results stored under `root`; `get` has read_compressed's signature."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._digests: dict[tuple[str, int, int], str] = {}

    def _content_digest(self, path: Path) -> str:
        """The file's sha256, remembered per (path, mtime, size) so a clip is hashed once per process."""
        status = path.stat()
        stamp = (str(path.resolve()), status.st_mtime_ns, status.st_size)
        if stamp not in self._digests:
            self._digests[stamp] = file_digest(path)
        return self._digests[stamp]

    def entry_path(self, path: str | Path, *, num_frames: int | None = None, residual: str = "rgb",
                   accumulate: bool = False) -> Path:
        """Where the entry for `path` read with these parameters lives."""
        path = Path(path)
        _check_file(path)
        params = {"version": CACHE_VERSION, "num_frames": num_frames, "residual": residual, "accumulate": accumulate}
        key = hashlib.sha256((self._content_digest(path) + json.dumps(params, sort_keys=True)).encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npz"

    def get(self, path: str | Path, *, num_frames: int | None = None, residual: str = "rgb",
            accumulate: bool = False) -> CompressedVideo:
        """The cached result for `path` and these parameters, computing and storing it on a miss."""
        path = Path(path)
        entry = self.entry_path(path, num_frames=num_frames, residual=residual, accumulate=accumulate)
        cached = _load(entry, path)
        if cached is not None:
            return cached
        video = read_compressed(path, num_frames=num_frames, residual=residual, accumulate=accumulate)
        _store(entry, video)
        return video


def _store(entry: Path, video: CompressedVideo) -> None:
    meta = {"frame_types": video.frame_types, "fps": video.fps, "size": list(video.size)}
    with atomic_open(entry, "wb") as handle:
        np.savez(
            handle,
            iframe=video.iframe,
            motion_vectors=video.motion_vectors,
            residuals=video.residuals,
            frame_indices=video.frame_indices,
            meta=np.array(json.dumps(meta)),
        )


def _load(entry: Path, path: Path) -> CompressedVideo | None:
    """The entry as a `CompressedVideo` for `path`, or None when it is missing or unreadable."""
    try:
        with np.load(entry, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            return CompressedVideo(
                path=path,
                iframe=arrays["iframe"],
                motion_vectors=arrays["motion_vectors"],
                residuals=arrays["residuals"],
                frame_types=meta["frame_types"],
                frame_indices=arrays["frame_indices"],
                fps=float(meta["fps"]),
                size=(int(meta["size"][0]), int(meta["size"][1])),
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None


@functools.lru_cache(maxsize=8)
def _cache_at(root: Path) -> CompressedCache:
    return CompressedCache(root)


def read_compressed_cached(path: str | Path, cache_dir: str | Path, **params) -> CompressedVideo:
    """`read_compressed(path, **params)` through the `CompressedCache` at `cache_dir` (one per folder and process)."""
    return _cache_at(Path(cache_dir)).get(path, **params)
