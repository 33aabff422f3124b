"""Training the face recognisers cvfer uses on synthetic data, and the copies that ship with it.

- `fit_identity_network`: any embedding network trained with the CosFace loss on (images, ids).
- `train_synthetic_identity_encoder`: MIC's f_I for synthetic data (an `IdentityNet`).
- `train_tfen_face_recogniser`: TFEN's F for synthetic data (an `SEResNetIdentityNet`).
- `retrain_shipped_weights`: both, with the recipe of the files in `cvfer/weights/` (`cvfer weights retrain`),
  plus the reduced retrain whose verification AUC the tests compare against (`reduced_check_auc`).
- `resolve_identity_weights(spec)`: "synthetic" → the shipped file (or your own in `$CVFER_CACHE/identity`);
  the trainer calls it before building a model or loading f_I, so `cvfer.models` only ever reads a given
  file. Nothing is trained on first use.
"""

from __future__ import annotations

import hashlib
import json
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

from cvfer.errors import CheckpointError, ConfigError
from cvfer.io import atomic_torch_save, atomic_write_json
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
    half_precision: bool = False,
    **fit_options: Any,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Render synthetic identities, train `build_network()` on `num_identities` of them and measure
    verification on `held_out_identities` more (never trained on), after rounding the weights to float16
    when `half_precision`. Returns the trained network and the checkpoint's "training" and "verification"."""
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
    if half_precision:
        network.load_state_dict(_state_dict(network, half_precision=True))
    verification = verification_auc(SyntheticIdentityEncoder(network), images[~train_mask], identity_ids[~train_mask])
    training = {
        "num_identities": num_identities, "per_identity": per_identity, "size": size, "seed": seed,
        "half_precision": half_precision, **fit_options, **logs,
    }
    held_out = {"held_out_identities": held_out_identities, "auc": verification.auc, "eer": verification.eer}
    return network, training, held_out


def _state_dict(network: nn.Module, half_precision: bool, prefixes: tuple[str, ...] = ("",)) -> dict[str, Tensor]:
    """The network's state dict entries under any of `prefixes`, floating-point ones as float16 if asked."""
    return {
        key: value.half() if half_precision and value.is_floating_point() else value
        for key, value in network.state_dict().items()
        if key.startswith(prefixes)
    }


def train_synthetic_identity_encoder(
    out_path: str | Path, *, size: int = 64, dim: int = 128, half_precision: bool = False, **options: Any
) -> SyntheticIdentityEncoder:
    """Train MIC's f_I for synthetic data (an `IdentityNet`) and save the checkpoint at `out_path` atomically,
    its weights as float16 when `half_precision`.

    `options`: num_identities (200), per_identity (10), seed (0), held_out_identities (40), progress (True)
    and any `fit_identity_network` option."""
    network, training, verification = _fit_on_synthetic_identities(
        lambda: IdentityNet(dim, size), size=size, half_precision=half_precision, **options
    )
    atomic_torch_save(
        out_path,
        {
            "format": CHECKPOINT_FORMAT,
            "dim": dim,
            "input_size": network.input_size,
            "widths": list(network.widths),
            "state_dict": _state_dict(network, half_precision),
            "training": training,
            "verification": verification,
        },
    )
    return SyntheticIdentityEncoder(network)


# TFEN cuts its frozen F from these stages of the recogniser (cvfer.models.tfen.TFEN._load_face_recogniser).
FACE_EXTRACTOR_PREFIXES = ("backbone.stem.", "backbone.stages.0.", "backbone.stages.1.")


def train_tfen_face_recogniser(
    out_path: str | Path,
    *,
    size: int = 64,
    dim: int = 128,
    half_precision: bool = False,
    face_extractor_only: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Train an `SEResNetIdentityNet` on synthetic identities (TFEN's pretrained recogniser on synthetic
    data) and save {"format", "state_dict", "training", "verification"} at `out_path` atomically; returns it.
    `face_extractor_only` keeps only the stages TFEN's F is cut from (conv1..conv3_x, 6 % of the weights; A
    then starts from random weights), `half_precision` stores float16. `options` as for
    `train_synthetic_identity_encoder`."""
    network, training, verification = _fit_on_synthetic_identities(
        lambda: SEResNetIdentityNet(dim, size), size=size, half_precision=half_precision, **options
    )
    prefixes = FACE_EXTRACTOR_PREFIXES if face_extractor_only else ("",)
    checkpoint = {
        "format": TFEN_FACE_FORMAT,
        "state_dict": _state_dict(network, half_precision, prefixes),
        "training": {**training, "face_extractor_only": face_extractor_only},
        "verification": verification,
    }
    atomic_torch_save(out_path, checkpoint)
    return checkpoint


# The files in cvfer/weights/ and what each is: shipped with the package, read by "synthetic".
SHIPPED_FILES: dict[Recogniser, str] = {
    "identity-encoder": SYNTHETIC_CHECKPOINT_NAME,
    "tfen-face": TFEN_FACE_CHECKPOINT_NAME,
}
SHIPPED_RECORD_NAME = "weights.json"
SHIPPED_RECORD_FORMAT = "cvfer-shipped-weights/1"
# The shipped recipe is each trainer's defaults; the reduced retrain (same code, fewer identities, images and
# epochs) is what the tests repeat, in seconds, and compare with the figure recorded at retrain time.
REDUCED_CHECK_OPTIONS: dict[Recogniser, dict[str, Any]] = {
    "identity-encoder": {"num_identities": 40, "per_identity": 6, "held_out_identities": 20, "epochs": 4, "size": 64},
    "tfen-face": {"num_identities": 16, "per_identity": 4, "held_out_identities": 12, "epochs": 2, "size": 32},
}
REDUCED_CHECK_TOLERANCE = 0.03  # AUC; float summation order differs between CPUs


def shipped_weights_dir() -> Path:
    """The package folder `cvfer/weights/` holding the shipped recognisers and `weights.json`."""
    from importlib.resources import files

    return Path(str(files("cvfer.weights")))


def held_out_verification(encoder: SyntheticIdentityEncoder, training: dict[str, Any], held_out_identities: int) -> float:
    """Verification AUC of `encoder` on the held-out identities of the training recorded in `training` (a
    checkpoint's "training"): those rendered after its `num_identities`, never trained on."""
    from cvfer.data.synthetic import identity_images
    from cvfer.eval.probes import verification_auc

    images, identity_ids = identity_images(
        held_out_identities, training["per_identity"], training["size"], training["seed"],
        first_identity=training["num_identities"],
    )
    return float(verification_auc(encoder, images, identity_ids).auc)


def reduced_check_auc(recogniser: Recogniser, options: dict[str, Any]) -> float:
    """Held-out verification AUC of `recogniser` retrained in memory with reduced `options` (single run, no file)."""
    options = dict(options)
    size = options.pop("size")
    build = (lambda: IdentityNet(128, size)) if recogniser == "identity-encoder" else (lambda: SEResNetIdentityNet(128, size))
    _, _, verification = _fit_on_synthetic_identities(build, size=size, progress=False, **options)
    return float(verification["auc"])


def read_shipped_record(folder: str | Path | None = None) -> dict[str, Any]:
    """`weights.json` of `folder` (default the package's): per file its recogniser, size, SHA-256, training
    settings, held-out verification and reduced-check figure; empty files list if there is none yet."""
    path = Path(folder or shipped_weights_dir()) / SHIPPED_RECORD_NAME
    if not path.is_file():
        return {"format": SHIPPED_RECORD_FORMAT, "files": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def retrain_shipped_weights(
    out_dir: str | Path, recognisers: tuple[Recogniser, ...] = tuple(SHIPPED_FILES), *, progress: bool = True
) -> dict[str, Any]:
    """Retrain the shipped recognisers with the shipped recipe (float16; TFEN's F cut out) into `out_dir`,
    run each one's reduced check, and record all of it in `out_dir/weights.json`; returns that record.
    Single-threaded runs reproduce the shipped files' figures."""
    out_dir = Path(out_dir)
    record = read_shipped_record(out_dir)
    for recogniser in recognisers:
        name = SHIPPED_FILES[recogniser]
        path = out_dir / name
        if progress:
            tqdm.write(f"training {recogniser} -> {path}")
        if recogniser == "identity-encoder":
            train_synthetic_identity_encoder(path, half_precision=True, progress=progress)
        else:
            train_tfen_face_recogniser(path, half_precision=True, face_extractor_only=True, progress=progress)
        checkpoint = torch.load(path, weights_only=True)
        options = REDUCED_CHECK_OPTIONS[recogniser]
        if progress:
            tqdm.write(f"reduced check of {recogniser} ({options})")
        record["files"][name] = {
            "recogniser": recogniser,
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "training": checkpoint["training"],
            "verification": checkpoint["verification"],
            "reduced_check": {"options": options, "auc": reduced_check_auc(recogniser, options)},
            "torch": torch.__version__,
        }
        atomic_write_json(out_dir / SHIPPED_RECORD_NAME, record)
    return record


def identity_cache_dir() -> Path | None:
    """`$CVFER_CACHE/identity` when $CVFER_CACHE is set: your own synthetic recognisers there (same file names,
    e.g. from `cvfer weights retrain --out $CVFER_CACHE/identity`) replace the shipped ones; None otherwise."""
    root = os.environ.get("CVFER_CACHE")
    return Path(root) / "identity" if root else None


def resolve_identity_weights(spec: str | Path, recogniser: Recogniser = "identity-encoder") -> Path:
    """The weights file `spec` names: a path as given, or for "synthetic" cvfer's `recogniser` of synthetic
    identities (MIC's f_I or TFEN's F): `identity_cache_dir()`'s file if there is one, else the shipped file."""
    if str(spec) != SYNTHETIC:
        return Path(spec)
    name = SHIPPED_FILES[recogniser]
    own_dir = identity_cache_dir()
    if own_dir is not None and (own_dir / name).is_file():
        return own_dir / name
    shipped = shipped_weights_dir() / name
    if not shipped.is_file():
        raise CheckpointError(
            "cvfer's synthetic face recogniser is missing from the installed package",
            shipped,
            "reinstall cvfer, or write it again with `cvfer weights retrain`",
        )
    return shipped
