"""Frozen face recognisers f_I giving z_I of the I frame (MIC Sec. 3.1, 4.4); the data pipeline calls them once
per clip, so no model checkpoint ever contains one.

- `DlibIdentityEncoder`: dlib's ResNet face descriptor (128-d), from the face_recognition_models weights.
- `SyntheticIdentityEncoder`: a trained `IdentityNet` (a small CNN cvfer trains on synthetic identities,
  `cvfer.train.identity`), a stand-in for FaceNet on the synthetic data.
- `SEResNetIdentityNet`: the SE-ResNet-18 recogniser TFEN cuts its F from.
- `load_identity_encoder("dlib" | path)`. Training, the shipped weights (`cvfer/weights/`) and "synthetic" live
  in `cvfer.train.identity`; verification metrics in `cvfer.eval.probes`.
"""

from __future__ import annotations

import abc
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cvfer.errors import CheckpointError, ConfigError
from cvfer.io import load_torch_file
from cvfer.models.backbones import ResNet18, frames_to_images

CHECKPOINT_FORMAT = "cvfer-identity-encoder/1"


class IdentityEncoder(abc.ABC):
    """f_I: face images → L2-normalised identity features."""

    name: str
    dim: int

    @abc.abstractmethod
    def encode(self, images: np.ndarray) -> np.ndarray:
        """N×H×W×3 uint8 RGB images → N×dim float32, each row of unit L2 norm."""


def checked_images(images: np.ndarray, who: str) -> np.ndarray:
    """`images` as an array, or a ConfigError naming `who` unless they are N×H×W×3 uint8."""
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
        images = checked_images(images, "DlibIdentityEncoder")
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


def images_to_tensor(images: np.ndarray) -> Tensor:
    """N×H×W×3 uint8 images → (N, 3, H, W) floats in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


class SyntheticIdentityEncoder(IdentityEncoder):
    """A recogniser cvfer trained on synthetic identities (`IdentityNet`, trained by
    `cvfer.train.identity.train_synthetic_identity_encoder`; or any module ending in an `embedding` Linear),
    in eval mode."""

    name = "synthetic"

    def __init__(self, network: nn.Module, batch_size: int = 256):
        self.network = network.eval()
        self.dim = network.embedding.out_features
        self.batch_size = batch_size

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = checked_images(images, "SyntheticIdentityEncoder")
        outputs = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                outputs.append(self.network(images_to_tensor(images[start : start + self.batch_size])).numpy())
        return _unit_rows(np.concatenate(outputs) if outputs else np.zeros((0, self.dim), np.float32))

    @classmethod
    def load(cls, path: str | Path) -> SyntheticIdentityEncoder:
        """Read a checkpoint written by `cvfer.train.identity.train_synthetic_identity_encoder`."""
        path = Path(path)
        checkpoint = load_torch_file(
            path,
            "identity encoder checkpoint",
            missing_fix="check the path, or pass 'synthetic' for the recogniser cvfer ships",
            unreadable_fix="delete it and write it again (`cvfer weights retrain --out DIR`)",
        )
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"not a cvfer identity encoder checkpoint (format {CHECKPOINT_FORMAT} expected)",
                path,
                "write it with cvfer.train.identity.train_synthetic_identity_encoder",
            )
        network = IdentityNet(checkpoint["dim"], checkpoint["input_size"], tuple(checkpoint["widths"]))
        try:
            network.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            problem = str(error).splitlines()[0]
            raise CheckpointError(
                f"weights do not fit this cvfer's IdentityNet ({problem})",
                path,
                "write it again with `cvfer weights retrain --out DIR`",
            ) from None
        return cls(network)


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


def load_identity_encoder(spec: str | Path) -> IdentityEncoder:
    """"dlib" or a checkpoint path; "synthetic" must first become a path (`cvfer.train.identity`)."""
    if str(spec) == "dlib":
        return DlibIdentityEncoder()
    if str(spec) == "synthetic":
        raise ConfigError(
            "identity encoder 'synthetic' names cvfer's shipped recogniser, which only the trainer finds",
            fix="resolve it first: cvfer.train.identity.resolve_identity_weights('synthetic')",
        )
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"identity encoder {str(spec)!r} is neither 'dlib', 'synthetic' nor an existing file",
            fix="use --identity-encoder dlib, synthetic, or a checkpoint path",
        )
    return SyntheticIdentityEncoder.load(path)
