"""Training the face recognisers cvfer uses on synthetic data, and the cache that keeps them.

- `fit_identity_network`: any embedding network trained with the CosFace loss on (images, ids).
- `train_synthetic_identity_encoder`: MIC's f_I for synthetic data (an `IdentityNet`).
- `train_tfen_face_recogniser`: TFEN's F for synthetic data (an `SEResNetIdentityNet`).
- `resolve_identity_weights(spec)`: "synthetic" → the cached checkpoint, trained on first use; the trainer
  calls it before building a model or loading f_I, so `cvfer.models` only ever reads a given file.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cvfer.errors import ConfigError
from cvfer.io import atomic_torch_save
from cvfer.models.identity import (
    CHECKPOINT_FORMAT,
    IdentityNet,
    SEResNetIdentityNet,
    SyntheticIdentityEncoder,
    checked_images,
    images_to_tensor,
)

SYNTHETIC = "synthetic"
SYNTHETIC_CHECKPOINT_NAME = "synthetic-identity-v1.pt"
TFEN_FACE_FORMAT = "cvfer-tfen-face-recogniser/1"
TFEN_FACE_CHECKPOINT_NAME = "tfen-face-se-resnet18-v1.pt"

Recogniser = Literal["identity-encoder", "tfen-face"]


def cosine_margin_logits(
    embeddings: Tensor, class_weights: Tensor, labels: Tensor, scale: float, margin: float
) -> Tensor:
    """CosFace logits s·(cos θ_j − m·[j = y]) between normalised embeddings and class centres."""
    cosine = nn.functional.normalize(embeddings, dim=1) @ nn.functional.normalize(class_weights, dim=1).T
    return scale * (cosine - margin * nn.functional.one_hot(labels, cosine.shape[1]).to(cosine.dtype))


def fit_identity_network(
    images: np.ndarray,
    identity_ids: np.ndarray,
    *,
    dim: int = 128,
    input_size: int = 64,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 3e-3,
    scale: float = 16.0,
    margin: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    build_network: Callable[[], nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train a network with the CosFace loss on (images, ids); random horizontal flips and ±4 px shifts.

    The network is `IdentityNet(dim, input_size)`, or `build_network()`: any module mapping [0, 1] images to
    embeddings through a final `embedding` Linear (whose width then replaces `dim`). Either is built after
    seeding, so its initialisation is fixed by `seed`.

    Returns the network (eval mode) and training logs (final loss, training accuracy, seconds)."""
    images = checked_images(images, "fit_identity_network")
    classes, labels_np = np.unique(np.asarray(identity_ids), return_inverse=True)
    if len(classes) < 2 or len(images) != len(labels_np):
        raise ConfigError("training an identity encoder needs one id per image and at least two identities")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = IdentityNet(dim, input_size) if build_network is None else build_network()
    dim = network.embedding.out_features
    class_weights = nn.Parameter(torch.randn(len(classes), dim) * 0.01)
    parameters = [*network.parameters(), class_weights]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    data, labels = images_to_tensor(images), torch.from_numpy(labels_np.astype(np.int64))
    start = time.perf_counter()
    loss_sum = correct = seen = 0.0
    network.train()
    for epoch in tqdm(range(epochs), desc="identity encoder", unit="epoch", disable=not progress):
        order = torch.randperm(len(data), generator=generator)
        loss_sum = correct = seen = 0.0
        for batch_start in range(0, len(data), batch_size):
            index = order[batch_start : batch_start + batch_size]
            batch = _augment(data[index], generator)
            logits = cosine_margin_logits(network(batch), class_weights, labels[index], scale, margin)
            loss = nn.functional.cross_entropy(logits, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(index)
            correct += float((logits.argmax(1) == labels[index]).sum())
            seen += len(index)
    network.eval()
    logs = {"loss": loss_sum / seen, "train_accuracy": correct / seen, "seconds": time.perf_counter() - start}
    return network, logs


def _augment(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flip and a random shift of up to 4 pixels (edge-padded) per batch."""
    if torch.rand((), generator=generator) < 0.5:
        batch = batch.flip(-1)
    dx, dy = (int(value) for value in torch.randint(-4, 5, (2,), generator=generator))
    padded = nn.functional.pad(batch, (4, 4, 4, 4), mode="replicate")
    height, width = batch.shape[-2:]
    return padded[..., 4 + dy : 4 + dy + height, 4 + dx : 4 + dx + width]


def _fit_on_synthetic_identities(
    build_network: Callable[[], nn.Module],
    *,
    size: int,
    num_identities: int = 200,
    per_identity: int = 10,
    seed: int = 0,
    held_out_identities: int = 40,
    progress: bool = True,
    **fit_options: Any,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Render synthetic identities, train `build_network()` on `num_identities` of them and measure
    verification on `held_out_identities` more (never trained on). Returns the trained network and the
    checkpoint's "training" and "verification"."""
    from cvfer.data.synthetic import identity_images
    from cvfer.eval.probes import verification_auc

    if held_out_identities < 2:
        raise ConfigError(f"held_out_identities={held_out_identities}", fix="use at least 2 for verification")
    total = num_identities + held_out_identities
    images, identity_ids = identity_images(total, per_identity, size, seed, progress=progress)
    train_mask = identity_ids < num_identities
    network, logs = fit_identity_network(
        images[train_mask], identity_ids[train_mask], build_network=build_network, seed=seed, progress=progress,
        **fit_options,
    )
    verification = verification_auc(SyntheticIdentityEncoder(network), images[~train_mask], identity_ids[~train_mask])
    training = {"num_identities": num_identities, "per_identity": per_identity, "size": size, "seed": seed, **logs}
    held_out = {"held_out_identities": held_out_identities, "auc": verification.auc, "eer": verification.eer}
    return network, training, held_out


def train_synthetic_identity_encoder(
    out_path: str | Path, *, size: int = 64, dim: int = 128, **options: Any
) -> SyntheticIdentityEncoder:
    """Train MIC's f_I for synthetic data (an `IdentityNet`) and save the checkpoint at `out_path` atomically.

    `options`: num_identities (200), per_identity (10), seed (0), held_out_identities (40), progress (True)
    and any `fit_identity_network` option."""
    network, training, verification = _fit_on_synthetic_identities(lambda: IdentityNet(dim, size), size=size, **options)
    atomic_torch_save(
        out_path,
        {
            "format": CHECKPOINT_FORMAT,
            "dim": dim,
            "input_size": network.input_size,
            "widths": list(network.widths),
            "state_dict": network.state_dict(),
            "training": training,
            "verification": verification,
        },
    )
    return SyntheticIdentityEncoder(network)


def train_tfen_face_recogniser(out_path: str | Path, *, size: int = 64, dim: int = 128, **options: Any) -> dict[str, Any]:
    """Train an `SEResNetIdentityNet` on synthetic identities (TFEN's pretrained recogniser on synthetic
    data) and save {"state_dict", "training", "verification"} at `out_path` atomically; returns it.
    `options` as for `train_synthetic_identity_encoder`."""
    network, training, verification = _fit_on_synthetic_identities(
        lambda: SEResNetIdentityNet(dim, size), size=size, **options
    )
    checkpoint = {
        "format": TFEN_FACE_FORMAT,
        "state_dict": network.state_dict(),
        "training": training,
        "verification": verification,
    }
    atomic_torch_save(out_path, checkpoint)
    return checkpoint


def identity_cache_dir() -> Path:
    """Where the synthetic recognisers are kept: $CVFER_CACHE/identity, else ~/.cache/cvfer/identity."""
    root = os.environ.get("CVFER_CACHE") or Path.home() / ".cache" / "cvfer"
    return Path(root) / "identity"


def resolve_identity_weights(spec: str | Path, recogniser: Recogniser = "identity-encoder") -> Path:
    """The weights file `spec` names: a path as given, or for "synthetic" cvfer's `recogniser` of synthetic
    identities (MIC's f_I or TFEN's F) in `identity_cache_dir()`, trained there on first use."""
    if str(spec) != SYNTHETIC:
        return Path(spec)
    if recogniser == "tfen-face":
        path = identity_cache_dir() / TFEN_FACE_CHECKPOINT_NAME
        what, train = "TFEN's SE-ResNet-18 face recogniser once on synthetic identities", train_tfen_face_recogniser
    else:
        path = identity_cache_dir() / SYNTHETIC_CHECKPOINT_NAME
        what, train = "the synthetic identity encoder once (about 2 minutes)", train_synthetic_identity_encoder
    if not path.is_file():
        tqdm.write(f"training {what} -> {path}")
        train(path)
    return path
