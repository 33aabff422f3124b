"""cvfer: facial expression recognition in video, read straight from the compressed bitstream.

Public API (imported lazily, so `import cvfer` stays light): `read_compressed`, `iter_compressed`,
`reencode`, `create_model`, `list_models`, `load_model`, `predict_timeline`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "read_compressed": "cvfer.codec",
    "iter_compressed": "cvfer.codec",
    "reencode": "cvfer.codec",
    "CompressedVideo": "cvfer.codec",
    "create_model": "cvfer.models",
    "list_models": "cvfer.models",
    "load_model": "cvfer.eval.predict",
    "predict_timeline": "cvfer.eval.timeline",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cvfer' has no attribute {name!r}")
