"""Models: one module per system, all built through `create_model(name, **cfg)`."""

from cvfer.models.registry import create_model, list_models, register_model
from cvfer.models import ceflnet, cnn_lstm, tfen  # noqa: F401, E402  (registers the decoded-frame peers)
from cvfer.models import mic  # noqa: F401, E402  (registers MIC and its ablations)

__all__ = ["create_model", "list_models", "register_model"]
