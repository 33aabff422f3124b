"""Models: one module per system, all built through `create_model(name, **cfg)`."""

from cvfer.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
