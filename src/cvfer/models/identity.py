"""Frozen face recognisers f_I giving z_I of the I frame (MIC Sec. 3.1, 4.4); the data pipeline calls them once
per clip, so no model checkpoint ever contains one.

- `DlibIdentityEncoder`: dlib's ResNet face descriptor (128-d), from the face_recognition_models weights.
- `SyntheticIdentityEncoder`: a small CNN cvfer trains itself on `cvfer.data.synthetic.identity_images`,
  identities disjoint from every benchmark identity (a stand-in for FaceNet on the synthetic data).
- `load_identity_encoder("dlib" | "synthetic" | path)`, `verification_auc` for ROC-AUC / EER on held-out people.
"""

from __future__ import annotations

import abc
import importlib.util
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cvfer.errors import CheckpointError, ConfigError
from cvfer.io import atomic_torch_save, load_torch_file
from cvfer.models.backbones import ResNet18, frames_to_images

CHECKPOINT_FORMAT = "cvfer-identity-encoder/1"
SYNTHETIC_CHECKPOINT_NAME = "synthetic-identity-v1.pt"
TFEN_FACE_FORMAT = "cvfer-tfen-face-recogniser/1"
TFEN_FACE_CHECKPOINT_NAME = "tfen-face-se-resnet18-v1.pt"


class IdentityEncoder(abc.ABC):
    """f_I: face images → L2-normalised identity features."""

    name: str
    dim: int

    @abc.abstractmethod
    def encode(self, images: np.ndarray) -> np.ndarray:
        """N×H×W×3 uint8 RGB images → N×dim float32, each row of unit L2 norm."""


def _checked_images(images: np.ndarray, who: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(
            f"{who}.encode got an array of shape {images.shape} and dtype {images.dtype}",
            fix="pass N×H×W×3 uint8 RGB images",
        )
    return images


def _unit_rows(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def face_recognition_models_dir() -> Path:
    """The `models/` folder of the face_recognition_models package, located without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the face_recognition_models package (dlib's face models) is not installed",
            fix="pip install face-recognition-models, or use --identity-encoder synthetic",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibIdentityEncoder(IdentityEncoder):
    """dlib's face recognition ResNet (128-d, 99.38% on LFW per dlib) on 5-point-aligned 150×150 chips.

    Each image's largest frontal-face detection (HOG detector, upsampled `upsample` times) is aligned with the
    5-point landmark model and `dlib.get_face_chip`. When no face is detected (common for small frames: the
    detector needs faces of about 80 px), the whole image is taken as the face box and aligned from there;
    `faces_missed` counts those images over the encoder's life.
    """

    name = "dlib"
    dim = 128

    def __init__(self, upsample: int = 1, models_dir: str | Path | None = None):
        import dlib

        folder = Path(models_dir) if models_dir is not None else face_recognition_models_dir()
        recogniser_path = folder / "dlib_face_recognition_resnet_model_v1.dat"
        landmarks_path = folder / "shape_predictor_5_face_landmarks.dat"
        for path in (recogniser_path, landmarks_path):
            if not path.is_file():
                raise CheckpointError("dlib model file missing", path, "reinstall face-recognition-models")
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(landmarks_path))
        self.recogniser = dlib.face_recognition_model_v1(str(recogniser_path))
        self.upsample = upsample
        self.faces_missed = 0

    def _face_box(self, image: np.ndarray) -> Any:
        detections = self.detector(image, self.upsample)
        if len(detections) == 0:
            self.faces_missed += 1
            return self._dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
        return max(detections, key=lambda box: box.area())

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = _checked_images(images, "DlibIdentityEncoder")
        features = np.empty((len(images), self.dim), dtype=np.float32)
        for index, image in enumerate(images):
            image = np.ascontiguousarray(image)
            chip = self._dlib.get_face_chip(image, self.landmarks(image, self._face_box(image)), size=150)
            features[index] = np.asarray(self.recogniser.compute_face_descriptor(chip), dtype=np.float32)
        return _unit_rows(features)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(True),
    )


class IdentityNet(nn.Module):
    """Small face-recognition CNN: four conv–BN–ReLU stages (stride-2 stem, then 2×2 pools), global average
    pool, linear embedding of `dim`; images are resized to `input_size` first."""

    def __init__(self, dim: int = 128, input_size: int = 64, widths: tuple[int, ...] = (24, 48, 96, 128)):
        super().__init__()
        self.input_size = input_size
        self.widths = tuple(widths)
        layers: list[nn.Module] = [_conv_bn_relu(3, widths[0], 5, stride=2)]
        for index, (in_width, out_width) in enumerate(zip(widths, widths[1:])):
            layers.append(_conv_bn_relu(in_width, out_width, 3))
            if index < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding = nn.Linear(widths[-1], dim)

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) floats in [0, 1] → (N, dim) unnormalised embeddings."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return self.embedding(self.features((images - 0.5) / 0.25))


def _to_tensor(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


class SyntheticIdentityEncoder(IdentityEncoder):
    """A recogniser cvfer trained on synthetic identities (`IdentityNet`, `train_synthetic_identity_encoder`;
    or any module ending in an `embedding` Linear), in eval mode."""

    name = "synthetic"

    def __init__(self, network: nn.Module, batch_size: int = 256):
        self.network = network.eval()
        self.dim = network.embedding.out_features
        self.batch_size = batch_size

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = _checked_images(images, "SyntheticIdentityEncoder")
        outputs = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                outputs.append(self.network(_to_tensor(images[start : start + self.batch_size])).numpy())
        return _unit_rows(np.concatenate(outputs) if outputs else np.zeros((0, self.dim), np.float32))

    @classmethod
    def load(cls, path: str | Path) -> SyntheticIdentityEncoder:
        """Read a checkpoint written by `train_synthetic_identity_encoder`."""
        path = Path(path)
        checkpoint = load_torch_file(
            path,
            "identity encoder checkpoint",
            missing_fix="train one or pass 'synthetic'",
            unreadable_fix="delete it and retrain",
        )
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"not a cvfer identity encoder checkpoint (format {CHECKPOINT_FORMAT} expected)",
                path,
                "write it with cvfer.models.identity.train_synthetic_identity_encoder",
            )
        network = IdentityNet(checkpoint["dim"], checkpoint["input_size"], tuple(checkpoint["widths"]))
        try:
            network.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            problem = str(error).splitlines()[0]
            raise CheckpointError(
                f"weights do not fit this cvfer's IdentityNet ({problem})", path, "delete it and retrain"
            ) from None
        return cls(network)


@dataclass
class VerificationResult:
    """Face verification over all pairs of held-out images: ROC-AUC, equal error rate, pair counts."""

    auc: float
    eer: float
    positive_pairs: int
    negative_pairs: int


def verification_auc(encoder: IdentityEncoder, images: np.ndarray, identity_ids: np.ndarray) -> VerificationResult:
    """ROC-AUC and EER of cosine similarity for same- vs different-identity pairs (every pair of `images`)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    identity_ids = np.asarray(identity_ids)
    if len(images) != len(identity_ids) or len(np.unique(identity_ids)) < 2:
        raise ConfigError(
            f"verification needs one id per image and at least two identities (got {len(images)} images, "
            f"{len(identity_ids)} ids, {len(np.unique(identity_ids))} identities)"
        )
    features = encoder.encode(images)
    rows, cols = np.triu_indices(len(features), k=1)
    similarity = np.einsum("nd,nd->n", features[rows], features[cols])
    same = identity_ids[rows] == identity_ids[cols]
    if not same.any():
        raise ConfigError("verification needs at least two images of some identity")
    false_positive, true_positive, _ = roc_curve(same, similarity)
    false_negative = 1 - true_positive
    crossing = int(np.argmin(np.abs(false_negative - false_positive)))
    eer = float((false_positive[crossing] + false_negative[crossing]) / 2)
    return VerificationResult(float(roc_auc_score(same, similarity)), eer, int(same.sum()), int((~same).sum()))


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
    images = _checked_images(images, "fit_identity_network")
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
    data, labels = _to_tensor(images), torch.from_numpy(labels_np.astype(np.int64))
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


class SEResNetIdentityNet(nn.Module):
    """SE-ResNet-18 face recogniser: ImageNet-normalised input (as TFEN's frames), global pool, linear
    embedding of `dim`. TFEN cuts its F (stem, conv2_x, conv3_x) and A's start (conv4_x, conv5_x) from it."""

    def __init__(self, dim: int = 128, input_size: int = 64):
        super().__init__()
        self.input_size = input_size
        self.backbone = ResNet18(squeeze_excitation=True)
        self.embedding = nn.Linear(ResNet18.out_features, dim)

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) floats in [0, 1] → (N, dim) unnormalised embeddings."""
        return self.embedding(self.backbone(frames_to_images(images[:, None], self.input_size)))


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
    """Where the default synthetic encoder is kept: $CVFER_CACHE/identity, else ~/.cache/cvfer/identity."""
    root = os.environ.get("CVFER_CACHE") or Path.home() / ".cache" / "cvfer"
    return Path(root) / "identity"


def synthetic_tfen_face_weights() -> Path:
    """The SE-ResNet-18 recogniser TFEN uses on synthetic data: trained once into `identity_cache_dir()`."""
    path = identity_cache_dir() / TFEN_FACE_CHECKPOINT_NAME
    if not path.is_file():
        tqdm.write(f"training TFEN's SE-ResNet-18 face recogniser once on synthetic identities -> {path}")
        train_tfen_face_recogniser(path)
    return path


def load_identity_encoder(spec: str | Path) -> IdentityEncoder:
    """"dlib", "synthetic" (trained once into `identity_cache_dir()`, then reused) or a checkpoint path."""
    if str(spec) == "dlib":
        return DlibIdentityEncoder()
    if str(spec) == "synthetic":
        path = identity_cache_dir() / SYNTHETIC_CHECKPOINT_NAME
        if not path.is_file():
            tqdm.write(f"training the synthetic identity encoder once (about 2 minutes) -> {path}")
            return train_synthetic_identity_encoder(path)
        return SyntheticIdentityEncoder.load(path)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"identity encoder {str(spec)!r} is neither 'dlib', 'synthetic' nor an existing file",
            fix="use --identity-encoder dlib, synthetic, or a checkpoint path",
        )
    return SyntheticIdentityEncoder.load(path)
