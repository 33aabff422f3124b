"""One dict registry, timm-style: builder functions registered by name, `create_model` is the one door in;
each system's training presets are registered beside its builders (as timm keeps `default_cfgs`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvfer.errors import ConfigError

_BUILDERS: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class Preset:
    """A training setup of one system: flat settings (keys naming a `TrainConfig` field set it, the others are
    options of the model's builder; `TrainConfig.from_flat`) and one line saying what it is."""

    settings: dict[str, Any]
    about: str


# A system is the module its builders are defined in (`same_family`): its presets serve all its variants.
_PRESETS: dict[str, dict[str, Preset]] = {}
_COMPARE_PRESETS: dict[str, str] = {}


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


def builder_signature(name: str) -> inspect.Signature:
    """The signature of the builder registered as `name`: `bind` it to options to check them without building."""
    return inspect.signature(_builder(name))


def builder_options(name: str) -> list[str]:
    """The keyword arguments of the builder registered as `name` (none for an unknown name)."""
    return list(builder_signature(name).parameters) if name in _BUILDERS else []


def builder_accepts(name: str, keyword: str) -> bool:
    """Whether the builder registered as `name` takes the keyword argument `keyword` (False for unknown names)."""
    return keyword in builder_options(name)


def _family(name: str) -> str | None:
    """The module model `name` is built in (its system), None for an unknown name."""
    builder = _BUILDERS.get(name)
    return None if builder is None else builder.__module__


def same_family(first: str, second: str) -> bool:
    """Whether two registered models are built in the same module (variants of one system, which share
    the meaning of their options: MIC's `alpha` is not TFEN's); False when either name is unknown."""
    return _family(first) is not None and _family(first) == _family(second)


def register_presets(model: str, presets: dict[str, Preset], compare: str) -> None:
    """Register the training presets of registered `model`'s system (all its variants, `same_family`);
    `compare` names the one `cvfer compare` starts each of them from."""
    family = _family(model)
    if family is None:
        raise ValueError(f"register model {model!r} before its presets")
    if family in _PRESETS:
        raise ValueError(f"presets of {model!r}'s system registered twice")
    if compare not in presets:
        raise ValueError(f"presets of {model!r} have no {compare!r}")
    _PRESETS[family], _COMPARE_PRESETS[family] = dict(presets), compare


def model_presets(name: str) -> dict[str, Preset]:
    """The presets of model `name`'s system by name ({} for a model without presets or an unknown name)."""
    return dict(_PRESETS.get(_family(name) or "", {}))


def compare_preset(name: str) -> str | None:
    """The preset `cvfer compare` starts model `name` from (None: the `TrainConfig` defaults)."""
    return _COMPARE_PRESETS.get(_family(name) or "")


# The square input (pixels) each system's paper feeds its network, by system (one of its models names it);
# None: the clip as stored (MIC reads the prepared clip's residuals at their size). `cvfer bench` times at it.
NATIVE_INPUT_SIZES: dict[str, int | None] = {
    "mic": None,
    "cnn-lstm": 224,  # an ImageNet ResNet-18 per frame, as FAN+ResNet18 in MIC's Tables 1, 4
    "tfen": 224,  # paper 003 §4.2: the 224×224 centre crop of the 244×244 face at test time
    "ceflnet": 224,  # paper 004 §4.1: each face resized to 224×224
}


def native_input_size(name: str) -> int | None:
    """The input size (pixels) registered model `name`'s system is run at in its paper; None: the stored size."""
    _builder(name)  # ConfigError for an unknown name
    for system, size in NATIVE_INPUT_SIZES.items():
        if same_family(name, system):
            return size
    raise ConfigError(f"no native input size for model {name!r}", fix="add its system to registry.NATIVE_INPUT_SIZES")


def create_model(name: str, **cfg: Any) -> Any:
    """Build the registered model `name` with keyword configuration `cfg`."""
    return _builder(name)(**cfg)


def _builder(name: str) -> Callable[..., Any]:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_BUILDERS)
