"""TFEN, the Typical Facial Expression Network of Teng et al. (paper 003): a frozen facial feature
extractor F and a trainable expression feature extractor E (conv1..conv3_x of SE-ResNet-18), a Decoupler
(Eq. 1), a 3D network over the per-frame TFE features and an identity adversary A trained in
alternation every S steps (Eq. 3-6, Algorithm 1). Choices the paper leaves open: docs/peers.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cvfer.errors import CheckpointError, ConfigError
from cvfer.io import load_torch_file
from cvfer.models.backbones import frames_to_images, resnet18_3d_stage, resnet18_stage, resnet18_stem
from cvfer.models.base import FERModel, FEROutput, TrainingForward, TrainState
from cvfer.models.registry import Preset, register_model, register_presets, variant_builder

TFE_CHANNELS = 128  # output of conv3_x: the 28×28×128 maps of Sec. 3.2-3.4 at input 224

# The paper's setup for CK+, MMI and Oulu-CASIA (Sec. 4.2-4.3) in `cvfer.train` terms, TFEN's `paper` preset:
# keys naming a TrainConfig field set it, the others are model options (as `cvfer.models.mic.MIC_PRESETS`).
# For DFEW the paper uses 200 epochs and gamma 0.5.
TFEN_PRESET: dict[str, Any] = {
    "model": "tfen",
    "epochs": 300,
    "batch_size": 32,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.008,
    "lr": 1e-3,
    "lr_schedule": "step",
    "lr_schedule_params": {"milestones": [100, 200], "gamma": 0.1},
    "num_frames": 7,
    "input_size": 224,
    "alpha": 5.0,
    "adversary_every": 3,
}

Decoupling = Literal["decoupler", "concat", "none"]


@dataclass
class TFENOutput(FEROutput):
    """FEROutput plus the per-frame TFE maps (B·T, 128, h, w) that the adversary reads while training."""

    typical_features: Tensor


def _conv1x1_group() -> nn.Sequential:
    """One Decoupler group: 1×1 convolutions with 128, 64 and 128 kernels (Sec. 3.4), BN between them."""
    return nn.Sequential(
        nn.Conv2d(TFE_CHANNELS, 128, 1),
        nn.BatchNorm2d(128),
        nn.ReLU(inplace=True),
        nn.Conv2d(128, 64, 1),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, TFE_CHANNELS, 1),
        nn.BatchNorm2d(TFE_CHANNELS),
    )


def feature_extractor() -> nn.Sequential:
    """conv1 + conv2_x + conv3_x of SE-ResNet-18: the structure of both F and E (Table 1)."""
    return nn.Sequential(resnet18_stem(), resnet18_stage(0, True), resnet18_stage(1, True))


def se_resnet18_head() -> nn.Sequential:
    """conv4_x + conv5_x of SE-ResNet-18 and global average pooling: (N, 128, h, w) -> (N, 512)."""
    return nn.Sequential(
        resnet18_stage(2, True), resnet18_stage(3, True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)
    )


class Decoupler(nn.Module):
    """TFE = f_TFE(f_EXP(E) + f_FACE(F)), Eq. 1."""

    def __init__(self):
        super().__init__()
        self.f_face = _conv1x1_group()
        self.f_exp = _conv1x1_group()
        self.f_tfe = nn.Sequential(_conv1x1_group(), nn.ReLU(inplace=True))

    def forward(self, expression: Tensor, face: Tensor) -> Tensor:
        return self.f_tfe(self.f_exp(expression) + self.f_face(face))


class ConcatFusion(nn.Module):
    """TFEN-without-Decoupler (Fig. 5): concatenate E and F, then a 1×1 convolution + BN back to 128 maps."""

    def __init__(self):
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv2d(2 * TFE_CHANNELS, TFE_CHANNELS, 1), nn.BatchNorm2d(TFE_CHANNELS))

    def forward(self, expression: Tensor, face: Tensor) -> Tensor:
        return self.fuse(torch.cat([expression, face], dim=1))


class TFENRecognizer(nn.Module):
    """The test-time TFEN (F, E, Decoupler, 3D network, classifier): frames -> expression logits."""

    def __init__(
        self, num_classes: int, input_size: int | None, decoupling: Decoupling, temporal_3d: bool, dropout: float
    ):
        super().__init__()
        self.input_size = input_size
        self.temporal_3d = temporal_3d
        self.expression_extractor = feature_extractor()
        self.face_extractor: nn.Module | None = None
        self.decoupler: nn.Module | None = None
        if decoupling != "none":
            self.face_extractor = feature_extractor().requires_grad_(False).eval()
            self.decoupler = Decoupler() if decoupling == "decoupler" else ConcatFusion()
        if temporal_3d:
            # 3D network T: conv4_x + conv5_x of the 3D ResNet-18, then average pooling (2×7×7 at input 224).
            self.temporal: nn.Module = nn.Sequential(
                resnet18_3d_stage(2), resnet18_3d_stage(3), nn.AdaptiveAvgPool3d(1), nn.Flatten(1)
            )
        else:
            # TFEN-without-3D-Network (Fig. 8): conv4_x + conv5_x of SE-ResNet-18 on each frame.
            self.temporal = se_resnet18_head()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))

    def train(self, mode: bool = True) -> TFENRecognizer:
        """Switch modes, keeping the frozen F (and its BatchNorm statistics) in evaluation mode."""
        super().train(mode)
        if self.face_extractor is not None:
            self.face_extractor.eval()
        return self

    def typical_features(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> per-frame TFE maps (B·T, 128, h, w); E's features where nothing is decoupled."""
        images = frames_to_images(frames, self.input_size)
        expression = self.expression_extractor(images)
        if self.face_extractor is None or self.decoupler is None:
            return expression
        with torch.no_grad():
            face = self.face_extractor(images)
        return self.decoupler(expression, face)

    def classify(self, tfe: Tensor, num_frames: int) -> FEROutput:
        """Logits and the 512-d expression feature from per-frame TFE maps of `num_frames`-frame clips."""
        if self.temporal_3d:
            volume = tfe.unflatten(0, (-1, num_frames)).transpose(1, 2)  # (B, 128, T, h, w)
            features = self.temporal(volume)
            return FEROutput(self.classifier(features), features)
        frame_features = self.temporal(tfe).unflatten(0, (-1, num_frames))
        frame_logits = self.classifier(frame_features)
        # Fig. 8: the per-frame recognition results are averaged over the sequence.
        return FEROutput(frame_logits.mean(dim=1), frame_features.mean(dim=1))

    def forward(self, batch: dict[str, Tensor]) -> TFENOutput:
        frames = batch["frames"]
        tfe = self.typical_features(frames)
        out = self.classify(tfe, frames.shape[1])
        return TFENOutput(out.logits, out.features, tfe)


class TFEN(FERModel):
    """TFEN and its ablations; groups: "main" (E, Decoupler, 3D network, classifier), "adversary" (A)."""

    train_inputs = ("frames", "label", "subject")
    test_inputs = ("frames",)

    def __init__(
        self,
        num_classes: int = 7,
        image_size: int = 64,
        num_frames: int = 7,
        input_size: int | None = None,
        num_subjects: int = 128,
        face_weights: str | Path | Mapping[str, Tensor] | None = None,
        alpha: float = 5.0,
        adversary_every: int = 3,
        dropout: float = 0.2,
        decoupling: Decoupling = "decoupler",
        adversarial: bool = True,
        temporal_3d: bool = True,
    ):
        super().__init__()
        if adversarial and decoupling == "none":
            raise ConfigError("TFEN's adversary needs decoupled features", fix="use decoupling='decoupler' or 'concat'")
        if adversary_every < 2:
            raise ConfigError(
                f"adversary_every={adversary_every} leaves no step for the expression side", fix="use S >= 2"
            )
        self.image_size = image_size
        self.num_frames = num_frames
        self.num_subjects = num_subjects
        self.alpha = alpha
        self.adversary_every = adversary_every
        self.recognizer = TFENRecognizer(num_classes, input_size, decoupling, temporal_3d, dropout)
        # Adversarial network A (Sec. 3.5): conv4_x + conv5_x of the face recogniser + identity classifier.
        self.adversary: nn.Module | None = None
        if adversarial:
            self.adversary = nn.Sequential(se_resnet18_head(), nn.Dropout(dropout), nn.Linear(512, num_subjects))
        if face_weights is not None:
            self._load_face_recogniser(face_weights)

    def _load_face_recogniser(self, face_weights: str | Path | Mapping[str, Tensor]) -> None:
        """Initialise F (and A's conv4_x/conv5_x) from a `ResNet18(squeeze_excitation=True)` state dict."""
        source = str(face_weights) if isinstance(face_weights, (str, Path)) else "face_weights"
        state = _read_state_dict(face_weights)
        prefix = next((key[: -len("stem.0.weight")] for key in state if key.endswith("stem.0.weight")), None)
        if prefix is None:
            raise CheckpointError(
                "no 'stem.0.weight' key: not a cvfer SE-ResNet-18 state dict",
                source,
                "pass the state_dict of cvfer.models.backbones.ResNet18(squeeze_excitation=True)",
            )
        renamed = {"stem.": "0.", "stages.0.": "1.", "stages.1.": "2."}
        face_state = {}
        head_state = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            key = key[len(prefix) :]
            for old, new in renamed.items():
                if key.startswith(old):
                    face_state[new + key[len(old) :]] = value
            for stage, position in (("stages.2.", "0."), ("stages.3.", "1.")):
                if key.startswith(stage):
                    head_state["0." + position + key[len(stage) :]] = value
        face_extractor = self.recognizer.face_extractor
        if face_extractor is None:
            raise ConfigError("face_weights given to a TFEN variant without a facial feature extractor", fix="drop it")
        try:
            face_extractor.load_state_dict(face_state)
            if self.adversary is not None and head_state:
                self.adversary.load_state_dict(head_state, strict=False)
        except RuntimeError as error:
            first_line = str(error).splitlines()[0]
            raise CheckpointError(
                f"does not fit TFEN's face extractor: {first_line}",
                source,
                "pass weights of cvfer.models.backbones.ResNet18(squeeze_excitation=True)",
            ) from None

    def forward(self, batch: dict[str, Tensor]) -> TFENOutput:
        return self.recognizer(batch)

    def inference_module(self) -> nn.Module:
        return self.recognizer

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"main": [p for p in self.recognizer.parameters() if p.requires_grad]}
        if self.adversary is not None:
            groups["adversary"] = list(self.adversary.parameters())
        return groups

    def training_forward(self, batch: dict[str, Tensor], state: TrainState) -> TrainingForward:
        """The recogniser's forward pass, except on A's steps (every S-th), which read only no-grad TFE maps."""
        if self.adversary is None:
            return TrainingForward(self(batch))
        subjects = batch["subject"]
        if int(subjects.max()) >= self.num_subjects or int(subjects.min()) < 0:
            raise ConfigError(
                f"subject index {int(subjects.max())} outside the adversary's {self.num_subjects} identities",
                fix="build TFEN with num_subjects = number of subjects in the dataset",
            )
        return TrainingForward(None if state.step % self.adversary_every == 0 else self(batch))

    def training_losses(
        self, batch: dict[str, Tensor], forward: TrainingForward, state: TrainState
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Algorithm 1: every S-th step trains A (Eq. 5); other steps train E, D, T (α·L_exp + Eq. 6)."""
        if self.adversary is None:
            return super().training_losses(batch, forward, state)  # cross-entropy alone
        out = forward.output
        frames, subjects = batch["frames"], batch["subject"]
        num_frames = frames.shape[1]
        if out is None:  # A's step: no forward pass of the recogniser
            with torch.no_grad():
                tfe = self.recognizer.typical_features(frames)
            one_hot = nn.functional.one_hot(subjects, self.num_subjects).to(tfe.dtype)
            scores = identity_scores(self.adversary, tfe, num_frames)
            face_mse = (scores - one_hot).square().sum(dim=1).mean()  # Eq. 5
            return {"adversary": face_mse}, {"face_mse": float(face_mse.detach())}
        ce = nn.functional.cross_entropy(out.logits, batch["label"])  # Eq. 4
        scores = identity_scores(self.adversary, out.typical_features, num_frames)
        uniform_mse = (scores - 1.0 / self.num_subjects).square().sum(dim=1).mean()  # Eq. 6, sign folded into Eq. 3
        loss = self.alpha * ce + uniform_mse  # Eq. 3 with Eq. 6: minimised by E, D, T
        logs = {"ce": float(ce.detach()), "uniform_mse": float(uniform_mse.detach()), "loss": float(loss.detach())}
        return {"main": loss}, logs


def identity_scores(adversary: nn.Module, tfe: Tensor, num_frames: int) -> Tensor:
    """G^face of Eq. 5: the adversary's softmax identity scores averaged over each clip's frames, (B, N)."""
    return adversary(tfe).softmax(dim=1).unflatten(0, (-1, num_frames)).mean(dim=1)


def _read_state_dict(face_weights: str | Path | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """A state dict given directly or saved with torch.save (optionally under a "state_dict" key)."""
    if not isinstance(face_weights, (str, Path)):
        return face_weights
    if str(face_weights) == "synthetic":
        raise ConfigError(
            "face_weights='synthetic' names the recogniser cvfer ships, which only the trainer finds",
            fix="resolve it first: cvfer.train.identity.resolve_identity_weights('synthetic', 'tfen-face')",
        )
    path = Path(face_weights)
    loaded = load_torch_file(
        path,
        "face recogniser weights",
        missing_fix="check the path",
        unreadable_fix="save the recogniser with torch.save(model.state_dict())",
    )
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointError("not a state dict", path, "save the recogniser with torch.save(model.state_dict())")
    return loaded


def _ablation(
    decoupling: Decoupling = "decoupler", adversarial: bool = True, temporal_3d: bool = True, **fixed: Any
) -> Callable[..., TFEN]:
    """A registered builder: TFEN with the components of one ablation (and `fixed` options) fixed, so they are
    not options of the builder."""
    return variant_builder(TFEN, decoupling=decoupling, adversarial=adversarial, temporal_3d=temporal_3d, **fixed)


register_model("tfen")(_ablation())
register_model("tfen-no-decoupler")(_ablation(decoupling="concat"))
register_model("tfen-no-adversary")(_ablation(adversarial=False))
# No facial feature extractor F, so no face_weights to load into it (a preset's F is dropped for this variant).
register_model("tfen-no-face-decoupling")(_ablation(decoupling="none", adversarial=False, face_weights=None))
register_model("tfen-no-3d")(_ablation(temporal_3d=False))
register_presets(
    "tfen",
    {
        "paper": Preset(TFEN_PRESET, "TFEN paper setup for CK+, MMI and Oulu-CASIA: SGD, 7 frames, input 224"),
        # `cvfer compare`'s start: frames at the stored size; F is cvfer's synthetic recogniser, fine on the
        # synthetic benchmark (give face_weights=PATH on real data).
        "cpu": Preset(
            {**TFEN_PRESET, "input_size": None, "face_weights": "synthetic"},
            "TFEN paper setup with SGD and 7 frames, input at the stored frame size instead of 224, "
            "F (where the variant has one) from cvfer's synthetic SE-ResNet-18 face recogniser",
        ),
    },
    compare="cpu",
)
