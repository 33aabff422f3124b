"""The run's model: its builder's keyword arguments (what model.pt records) and its construction."""

from __future__ import annotations

from typing import Any

import torch

from cvfer.data.manifest import Manifest
from cvfer.errors import ConfigError
from cvfer.models import create_model
from cvfer.models.base import FERModel
from cvfer.models.registry import builder_accepts, builder_signature
from cvfer.train.config import TrainConfig
from cvfer.train.data import image_size
from cvfer.train.distributed import DistributedContext
from cvfer.train.identity import resolve_identity_weights


def model_cfg(config: TrainConfig, manifest: Manifest, identity_dim: int | None) -> dict[str, Any]:
    """The dataset's sizes (+ identity_dim / num_subjects where the builder takes them) and `config.model_cfg`.

    TFEN's `face_weights` is left out: F's weights travel in model.pt's state dict."""
    options = {key: value for key, value in config.model_cfg.items() if key != "face_weights"}
    return {
        "num_classes": len(manifest.classes),
        "image_size": image_size(manifest),
        "num_frames": config.num_frames,
        **({"identity_dim": identity_dim} if identity_dim is not None else {}),
        **({"num_subjects": len(manifest.subjects())} if builder_accepts(config.model, "num_subjects") else {}),
        **options,
    }


def build_model(config: TrainConfig, cfg: dict[str, Any], context: DistributedContext) -> FERModel:
    """`create_model(config.model, **cfg)` after `torch.manual_seed(config.seed)`, on the run's device.

    The options are bound to the builder's signature first, so only a real mismatch (e.g. --alpha for cnn-lstm)
    is reported as one, and a TypeError raised inside a constructor as itself. TFEN's `face_weights`
    ("synthetic": trained once, then cached) is resolved to a file here."""
    face_weights = config.model_cfg.get("face_weights")
    options = {**cfg, **({"face_weights": face_weights} if face_weights is not None else {})}
    try:
        builder_signature(config.model).bind(**options)
    except TypeError as error:
        raise ConfigError(
            f"model {config.model!r} rejects its options ({error})",
            fix="drop the model options (--alpha, --mi-estimator, --set model.KEY) it does not take",
        ) from None
    if face_weights is not None:
        options["face_weights"] = resolve_identity_weights(face_weights, "tfen-face")
    torch.manual_seed(config.seed)
    model = create_model(config.model, **options)
    if not isinstance(model, FERModel):
        raise ConfigError(f"model {config.model!r} is not a cvfer FERModel")
    if config.sync_batchnorm and context.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(context.device)
