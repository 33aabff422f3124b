"""One dict registry, timm-style: builder functions registered by name, `create_model` is the one door in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cvfer.errors import ConfigError

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `builder(**cfg) -> FERModel` under `name`."""

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def create_model(name: str, **cfg: Any) -> Any:
    """Build the registered model `name` with keyword configuration `cfg`."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    return builder(**cfg)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_BUILDERS)
