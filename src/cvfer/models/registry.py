"""One dict registry, timm-style: builder functions registered by name, `create_model` is the one door in."""

from __future__ import annotations

import inspect
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


def variant_builder(model_class: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
    """A builder of `model_class` with the options in `fixed` set: its signature is the class's without them."""
    signature = inspect.signature(model_class)
    unknown = set(fixed) - set(signature.parameters)
    if unknown:
        raise ValueError(f"{model_class.__name__} has no option {', '.join(sorted(unknown))}")
    signature = signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in fixed])

    def build(**cfg: Any) -> Any:
        signature.bind(**cfg)  # TypeError naming the option, as a plain builder would raise
        return model_class(**cfg, **fixed)

    build.__signature__ = signature  # type: ignore[attr-defined]
    build.__module__ = model_class.__module__  # the model's family is its module (`same_family`)
    build.__doc__ = f"{model_class.__name__} with {fixed or 'its default options'}."
    return build


def builder_accepts(name: str, keyword: str) -> bool:
    """Whether the builder registered as `name` takes the keyword argument `keyword` (False for unknown names)."""
    builder = _BUILDERS.get(name)
    return builder is not None and keyword in inspect.signature(builder).parameters


def same_family(first: str, second: str) -> bool:
    """Whether two registered models are built in the same module (variants of one system, which share
    the meaning of their options: MIC's `alpha` is not TFEN's); False when either name is unknown."""
    builders = [_BUILDERS.get(first), _BUILDERS.get(second)]
    return None not in builders and builders[0].__module__ == builders[1].__module__


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
