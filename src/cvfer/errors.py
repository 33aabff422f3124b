"""cvfer's exceptions: each carries the file, what is wrong and, where known, the fix."""

from __future__ import annotations

from pathlib import Path


class CvferError(Exception):
    """Base class for every error cvfer raises on purpose; the CLI prints it as one line."""

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.path = None if path is None else Path(path)
        self.problem = message
        self.fix = fix
        text = f"{self.path}: {message}" if self.path is not None else message
        if fix:
            text = f"{text} ({fix})"
        super().__init__(text)


class CompressedVideoError(CvferError):
    """A video cannot be read as MIC needs it (missing, corrupt, wrong codec, B frames, ...)."""


class DatasetError(CvferError):
    """A dataset folder, manifest or split file is malformed."""


class CheckpointError(CvferError):
    """A checkpoint is missing, corrupt or does not match the model asked for."""


class ConfigError(CvferError):
    """An option or configuration value is invalid."""


class OutputError(CvferError):
    """An output file cannot be written (disk full, read-only place, ...); the previous file is left intact."""
