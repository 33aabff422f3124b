"""MIC, Mutual Information Regularized Identity-aware FER in Compressed Video (Liu et al.; paper 000).

The FER branch (f_E shared over residual frames, an LSTM whose last hidden state is z_E, a linear Cls)
reads only the P-frame residuals at test time. In training, a neural MI estimator T_θ measures the
information z_E holds about z_I (the frozen face recogniser's feature of the I frame, computed by the data
pipeline) and the branch minimises CE + α·MI + β·L_rec (Eq. 6), where L_rec is the squared error of a decoder
Dec(z_E, z_I) reconstructing the apex frame (Eq. 5). T_θ maximises the DV bound; Dec minimises L_rec
(Algorithm 1). Choices the paper leaves open, the variants and the presets: docs/mic.md.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cvfer.errors import ConfigError
from cvfer.models.backbones import resnet18_stage, resnet18_stem
from cvfer.models.base import FERModel, FEROutput, TrainingForward, TrainState
from cvfer.models.mine import MI_ESTIMATORS, create_mi_estimator, marginal_permutation
from cvfer.models.registry import Preset, register_model, register_presets

FEATURE_DIM = 512  # f_E: R^{h×w×3} → R^512 and z_E ∈ R^512 (Sec. 3.1)

# Training setups of Sec. 4.2, registered as MIC's presets below: keys naming a TrainConfig field set it,
# the rest (alpha, beta_*) go to the model. Batch 48, Adam (β1 = 0.9), weight decay 1e-5, 100 epochs and
# the lr milestones are the paper's; the CK+/MMI base lr is not: the paper's 1e-1 does not train with Adam
# (docs/mic.md, "Learning rate"), so the same schedule starts at 1e-3 (PAPER_LEARNING_RATES keeps 1e-1).
# AFEW has no annotated apex frame, so the paper trains it without the reconstruction (mic-no-rec).
_ADAM_SETUP: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 48,
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 1e-5,
    "lr_schedule": "step",
}
_CKPLUS_MMI_SETUP: dict[str, Any] = {
    "model": "mic",
    **_ADAM_SETUP,
    "lr": 1e-3,
    "lr_schedule_params": {"milestones": [30], "gamma": 0.1},
    "alpha": 0.1,
    "beta_start": 1.0,
    "beta_epochs": 30,
}
MIC_PRESETS: dict[str, dict[str, Any]] = {
    "ckplus": copy.deepcopy(_CKPLUS_MMI_SETUP),
    "mmi": copy.deepcopy(_CKPLUS_MMI_SETUP),
    "afew": {
        "model": "mic-no-rec",
        **_ADAM_SETUP,
        "lr": 1e-4,
        "lr_schedule_params": {"milestones": [30, 60], "factors": [0.08, 0.001]},
        "alpha": 0.2,
    },
}
# A quick CPU run of MIC on a synthetic benchmark (`make demo`, docs/results.md): same losses and groups,
# 6 epochs, small lr; β falls to 0 over the first 4 (the paper: 30 of 100).
DEMO_PRESET: dict[str, Any] = {
    "model": "mic",
    "epochs": 6,
    "batch_size": 16,
    "lr": 1e-3,
    "num_frames": 8,
    "beta_epochs": 4,
}
# The initial learning rates Sec. 4.2 states (Adam): kept for reference and for reproducing its failure.
PAPER_LEARNING_RATES: dict[str, float] = {"ckplus": 1e-1, "mmi": 1e-1, "afew": 1e-4}

Backbone = Literal["kim", "resnet6"]
Disentangle = Literal["mi", "adversary"]


def linear_beta(epoch: int, beta_start: float = 1.0, beta_epochs: int = 30) -> float:
    """β of the reconstruction term at 0-based `epoch`: `beta_start` falling linearly to 0 at `beta_epochs`
    (the paper's "1→0:30", Table 11); 0 throughout when `beta_epochs` is 0."""
    if beta_epochs <= 0:
        return 0.0
    return beta_start * max(0.0, 1.0 - epoch / beta_epochs)


class KimFrameEncoder(nn.Module):
    """f_E after Kim et al.'s CNN as MIC cuts it: C1 (5×5 conv, 32) – 2×2 max pool – C2 (5×5 conv, 64) –
    2×2 max pool – F4 (FC → 512), ReLU after each; an input BatchNorm first puts the small residual values
    (Δ/255) on a unit scale, as CoViAR's residual network does."""

    def __init__(self, in_channels: int, image_size: int, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.convolutions = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(channels[1] * (image_size // 4) ** 2, FEATURE_DIM), nn.ReLU(inplace=True))

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.convolutions(self.input_norm(images)).flatten(1))


class ResNet6FrameEncoder(nn.Module):
    """MIC+ResNet6: conv1 and conv2_x of ResNet-18 (its first five conv layers), then an FC → 512 over a
    4×4 average-pooled grid (global pooling would discard where on the face the residual energy lies)."""

    grid = 4

    def __init__(self, in_channels: int):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.body = nn.Sequential(resnet18_stem(in_channels), resnet18_stage(0), nn.AdaptiveAvgPool2d(self.grid))
        self.fc = nn.Sequential(nn.Linear(64 * self.grid**2, FEATURE_DIM), nn.ReLU(inplace=True))

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.body(self.input_norm(images)).flatten(1))


class MICExpressionNet(nn.Module):
    """The FER branch, all that runs at test time: f_E per frame → LSTM → z_E (last hidden state) → Cls.

    `feature_norm` puts a LayerNorm between f_E and the LSTM (not in the paper): without it, Adam's
    early steps on F4's 4096→512 weights can blow its outputs up ~75× and saturate the LSTM's gates, after
    which z_E is constant and nothing trains (2 of 10 folds of `small`, docs/results.md)."""

    def __init__(
        self, num_classes: int, image_size: int, backbone: Backbone, motion_vectors: bool, feature_norm: bool = True
    ):
        super().__init__()
        self.image_size = image_size
        self.motion_vectors = motion_vectors
        in_channels = 5 if motion_vectors else 3
        if backbone == "kim":
            self.frame_encoder: nn.Module = KimFrameEncoder(in_channels, image_size)
        elif backbone == "resnet6":
            self.frame_encoder = ResNet6FrameEncoder(in_channels)
        else:
            raise ConfigError(f"unknown MIC backbone {backbone!r}", fix="use 'kim' or 'resnet6'")
        self.feature_norm = nn.LayerNorm(FEATURE_DIM) if feature_norm else nn.Identity()
        self.lstm = nn.LSTM(FEATURE_DIM, FEATURE_DIM, batch_first=True)
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

    def frames(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, T, C, H, W) input: the residuals, with the motion vectors as channels 4-5 for MIC+T^t."""
        residuals = _checked_frames(batch, "residuals", 3, self.image_size)
        if not self.motion_vectors:
            return residuals
        motion = _checked_frames(batch, "motion_vectors", 2, self.image_size)
        if motion.shape[:2] != residuals.shape[:2]:
            raise ConfigError(
                f"batch['motion_vectors'] has {tuple(motion.shape[:2])} (B, T), residuals {tuple(residuals.shape[:2])}",
                fix="load both inputs from the same clips with the same num_frames",
            )
        return torch.cat([residuals, motion], dim=2)

    def forward(self, batch: dict[str, Tensor]) -> FEROutput:
        frames = self.frames(batch)
        batch_size, steps = frames.shape[:2]
        frame_features = self.feature_norm(self.frame_encoder(frames.flatten(0, 1))).view(batch_size, steps, FEATURE_DIM)
        _, (hidden, _) = self.lstm(frame_features)
        expression = hidden[-1]
        return FEROutput(logits=self.classifier(expression), features=expression)


def _checked_frames(batch: dict[str, Tensor], key: str, channels: int, image_size: int) -> Tensor:
    if key not in batch:
        raise ConfigError(f"MIC needs batch[{key!r}]", fix=f"load the {key!r} input (model.train_inputs)")
    frames = batch[key]
    if frames.dim() != 5 or frames.shape[2] != channels or frames.shape[-2:] != (image_size, image_size):
        raise ConfigError(
            f"batch[{key!r}] has shape {tuple(frames.shape)}, expected (B, T, {channels}, {image_size}, {image_size})",
            fix="build the model with the image_size the clips are stored at",
        )
    return frames


class ApexDecoder(nn.Module):
    """Dec(z_E, z_I) → apex frame: FC to a 256-channel base grid, stride-2 transposed convs (BN, ReLU)
    doubling it up to image_size, a 3×3 conv to RGB and a sigmoid."""

    def __init__(self, identity_dim: int, image_size: int):
        super().__init__()
        doublings = max(1, int(math.log2(image_size / 4)))
        if image_size % 2**doublings:
            raise ConfigError(
                f"image_size={image_size} cannot be decoded by stride-2 upsampling",
                fix=f"use an image_size divisible by {2**doublings}, e.g. 32, 48 or 64",
            )
        self.base = image_size // 2**doublings
        widths = [max(256 // 2**i, 32) for i in range(doublings + 1)]
        self.project = nn.Sequential(nn.Linear(FEATURE_DIM + identity_dim, widths[0] * self.base**2), nn.ReLU(True))
        layers: list[nn.Module] = []
        for in_width, out_width in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(in_width, out_width, 4, 2, 1), nn.BatchNorm2d(out_width), nn.ReLU(True)]
        layers += [nn.Conv2d(widths[-1], 3, 3, padding=1), nn.Sigmoid()]
        self.upsample = nn.Sequential(*layers)
        self.base_width = widths[0]

    def forward(self, expression: Tensor, identity: Tensor) -> Tensor:
        grid = self.project(torch.cat([expression, identity], dim=1))
        return self.upsample(grid.view(-1, self.base_width, self.base, self.base))


@dataclass
class MICForward(TrainingForward):
    """MIC's forward pass: z_E (in `output`), z_I where T_θ or Dec reads it, T_θ's inputs (z_E, √D·z_I) gathered
    over the global batch, and the subjects the identity adversary predicts."""

    identity: Tensor | None = None
    mine_inputs: tuple[Tensor, Tensor] | None = None
    subjects: Tensor | None = None


class MIC(FERModel):
    """MIC and its ablations (one class; the registered builders set the variant options)."""

    def __init__(
        self,
        num_classes: int = 7,
        image_size: int = 64,
        num_frames: int = 8,
        identity_dim: int = 128,
        *,
        backbone: Backbone = "kim",
        motion_vectors: bool = False,
        feature_norm: bool = True,
        disentangle: Disentangle = "mi",
        mi_estimator: str = "mine",
        estimator_hidden: int = 256,
        mine_marginal: str = "shuffle",
        mine_critic: str = "concat",
        alpha: float = 0.1,
        reconstruction: bool = True,
        beta_start: float = 1.0,
        beta_epochs: int = 30,
        num_subjects: int | None = None,
        shuffle_seed: int = 0,
    ):
        super().__init__()
        _validate(image_size, num_frames, identity_dim, disentangle, mi_estimator, alpha, beta_start, beta_epochs)
        self.num_frames = num_frames
        self.identity_dim = identity_dim
        self.alpha = alpha
        self.beta_start = beta_start if reconstruction else 0.0
        self.beta_epochs = beta_epochs
        self.shuffle_seed = shuffle_seed
        self.expression = MICExpressionNet(num_classes, image_size, backbone, motion_vectors, feature_norm)
        self.mi_estimator = None
        if disentangle == "mi":
            self.mi_estimator = create_mi_estimator(
                mi_estimator, FEATURE_DIM, identity_dim, estimator_hidden, marginal=mine_marginal, critic=mine_critic
            )
        self.identity_adversary: nn.Module | None = None
        self.num_subjects = num_subjects
        if disentangle == "adversary":
            if num_subjects is None or num_subjects < 2:
                raise ConfigError(
                    f"mic-mi-adv needs num_subjects >= 2 (got {num_subjects})",
                    fix="pass num_subjects = the number of subjects in the dataset (model.num_subjects=N)",
                )
            self.identity_adversary = nn.Sequential(
                nn.Linear(FEATURE_DIM, estimator_hidden), nn.ReLU(True), nn.Linear(estimator_hidden, num_subjects)
            )
        self.decoder = ApexDecoder(identity_dim, image_size) if reconstruction else None
        frames_inputs = ("residuals", "motion_vectors") if motion_vectors else ("residuals",)
        self.test_inputs = frames_inputs
        self.train_inputs = frames_inputs + ("identity",) + (("apex",) if reconstruction else ())

    def forward(self, batch: dict[str, Tensor]) -> FEROutput:
        return self.expression(batch)

    def beta(self, epoch: int) -> float:
        """Weight of the reconstruction term at `epoch`."""
        return linear_beta(epoch, self.beta_start, self.beta_epochs) if self.decoder is not None else 0.0

    def training_forward(self, batch: dict[str, Tensor], state: TrainState) -> MICForward:
        """z_E of the batch, with z_I, T_θ's inputs and the subjects where the losses and critics read them."""
        output = self(batch)
        identity = self._identity(batch) if self.mi_estimator is not None or self.decoder is not None else None
        forward = MICForward(output, identity)
        if self.mi_estimator is not None and identity is not None:
            # The product of marginals is drawn from the global batch: every rank gathers z_E and z_I and
            # draws the same permutation, so the bound is the same on every rank. z_I rows have unit L2 norm,
            # so components are ~1/√D; rescaling (MI is invariant to it) gives T_θ inputs of unit scale, like
            # z_E's LSTM outputs.
            forward.mine_inputs = (
                state.all_gather(output.features),
                state.all_gather(identity) * math.sqrt(self.identity_dim),
            )
        if self.identity_adversary is not None:
            forward.subjects = self._subjects(batch)
        return forward

    def training_losses(  # type: ignore[override]
        self, batch: dict[str, Tensor], forward: MICForward, state: TrainState
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """{"fer": CE + α·MI + β·L_rec (Eq. 6), "mine": −DV bound (or CLUB's −log q), "decoder": L_rec}."""
        output = forward.output
        expression = output.features
        ce = nn.functional.cross_entropy(output.logits, batch["label"])
        accuracy = (output.logits.argmax(1) == batch["label"]).float().mean()
        fer_loss = ce
        losses: dict[str, Tensor] = {}
        logs: dict[str, float] = {"ce": float(ce.detach()), "accuracy": float(accuracy)}

        if self.mi_estimator is not None and forward.mine_inputs is not None:
            global_expression, identity_input = forward.mine_inputs
            permutation = marginal_permutation(
                global_expression.shape[0], self.shuffle_seed, state.step, global_expression.device
            )
            estimate = self.mi_estimator(global_expression, identity_input, permutation)
            # MI >= 0: an estimate below 0 only says the estimator is momentarily wrong (e.g. CLUB's q anti-
            # correlated with z_I), and the encoder must not profit from pushing it further down.
            fer_loss = fer_loss + self.alpha * estimate.mi.clamp(min=0)
            losses["mine"] = estimate.estimator_loss
            logs["mi"] = float(estimate.mi.detach())

        if self.identity_adversary is not None and forward.subjects is not None:
            identity_logits = self.identity_adversary(expression)
            adversary_loss = nn.functional.cross_entropy(identity_logits, forward.subjects)
            # The encoder pushes the adversary's posterior toward uniform over subjects (FLF-style confusion).
            confusion = -nn.functional.log_softmax(identity_logits, dim=1).mean(1).mean()
            fer_loss = fer_loss + self.alpha * confusion
            losses["adversary"] = adversary_loss
            logs["identity_ce"] = float(adversary_loss.detach())
            logs["identity_accuracy"] = float((identity_logits.argmax(1) == forward.subjects).float().mean())

        beta = self.beta(state.epoch)
        logs["beta"] = beta
        # Past the β ramp the decoder no longer shapes z_E, so it is not run ("only ... at the start", Sec. 3.3).
        if self.decoder is not None and forward.identity is not None and beta > 0:
            apex = batch.get("apex")
            if apex is None:
                raise ConfigError(
                    "MIC's reconstruction needs batch['apex']", fix="load the 'apex' input or use mic-no-rec"
                )
            reconstruction_loss = nn.functional.mse_loss(self.decoder(expression, forward.identity), apex)
            fer_loss = fer_loss + beta * reconstruction_loss
            losses["decoder"] = reconstruction_loss
            logs["reconstruction"] = float(reconstruction_loss.detach())

        losses["fer"] = fer_loss
        return losses, logs

    def critic_losses(  # type: ignore[override]
        self, forward: MICForward, state: TrainState, repeat: int
    ) -> dict[str, Tensor]:
        """T_θ's loss on a fresh shuffle of the step's detached (z_E, z_I), and the adversary's CE on its
        detached z_E: extra critic updates that keep the estimate tight while z_E moves."""
        losses: dict[str, Tensor] = {}
        if self.mi_estimator is not None and forward.mine_inputs is not None:
            expression, identity = (tensor.detach() for tensor in forward.mine_inputs)
            permutation = marginal_permutation(
                expression.shape[0], self.shuffle_seed, state.step, expression.device, draw=repeat
            )
            losses["mine"] = self.mi_estimator(expression, identity, permutation).estimator_loss
        if self.identity_adversary is not None and forward.subjects is not None:
            expression = forward.output.features.detach()
            losses["adversary"] = nn.functional.cross_entropy(self.identity_adversary(expression), forward.subjects)
        return losses

    def _identity(self, batch: dict[str, Tensor]) -> Tensor:
        identity = batch.get("identity")
        if identity is None or identity.dim() != 2 or identity.shape[1] != self.identity_dim:
            shape = None if identity is None else tuple(identity.shape)
            raise ConfigError(
                f"batch['identity'] has shape {shape}, MIC was built with identity_dim={self.identity_dim}",
                fix="load the 'identity' input and set identity_dim to the identity encoder's dim",
            )
        return identity

    def _subjects(self, batch: dict[str, Tensor]) -> Tensor:
        subjects = batch.get("subject")
        if subjects is None or int(subjects.max()) >= int(self.num_subjects or 0) or int(subjects.min()) < 0:
            raise ConfigError(
                f"mic-mi-adv needs batch['subject'] in [0, {self.num_subjects})",
                fix="set num_subjects to the dataset's number of subjects",
            )
        return subjects

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """f_E + LSTM + Cls ("fer"), T_θ ("mine"), the identity adversary ("adversary"), Dec ("decoder")."""
        groups = {"fer": list(self.expression.parameters())}
        if self.mi_estimator is not None:
            groups["mine"] = list(self.mi_estimator.parameters())
        if self.identity_adversary is not None:
            groups["adversary"] = list(self.identity_adversary.parameters())
        if self.decoder is not None:
            groups["decoder"] = list(self.decoder.parameters())
        return groups

    def inference_module(self) -> nn.Module:
        """Only f_E + LSTM + Cls: no T_θ, adversary or decoder in the saved test-time model."""
        return self.expression


def _validate(
    image_size: int,
    num_frames: int,
    identity_dim: int,
    disentangle: str,
    mi_estimator: str,
    alpha: float,
    beta_start: float,
    beta_epochs: int,
) -> None:
    checks = [
        (image_size >= 8 and image_size % 4 == 0, "image_size", image_size, "a multiple of 4, at least 8"),
        (num_frames >= 1, "num_frames", num_frames, ">= 1"),
        (identity_dim >= 1, "identity_dim", identity_dim, ">= 1"),
        (disentangle in ("mi", "adversary"), "disentangle", disentangle, "'mi' or 'adversary'"),
        (mi_estimator in MI_ESTIMATORS, "mi_estimator", mi_estimator, f"one of {MI_ESTIMATORS}"),
        (alpha >= 0, "alpha", alpha, ">= 0"),
        (beta_start >= 0, "beta_start", beta_start, ">= 0"),
        (beta_epochs >= 0, "beta_epochs", beta_epochs, ">= 0"),
    ]
    for ok, name, value, rule in checks:
        if not ok:
            raise ConfigError(f"MIC option {name}={value!r} is invalid", fix=f"use {rule}")


def _builder(**variant: Any) -> Any:
    """A builder of MIC with the options in `variant` fixed; its signature is MIC's without them, so
    `builder_accepts` tells which options a variant takes (num_subjects included, which the trainer passes
    only to builders naming it)."""
    parameters = inspect.signature(MIC).parameters.values()
    signature = inspect.Signature([param for param in parameters if param.name not in variant], return_annotation=MIC)

    def build(**options: Any) -> MIC:
        fixed = sorted(set(options) & set(variant))
        if fixed:
            raise ConfigError(f"options {fixed} are fixed by this MIC variant", fix="choose another variant name")
        unknown = sorted(set(options) - set(signature.parameters))
        if unknown:
            raise ConfigError(f"unknown MIC options {unknown}", fix=f"use {sorted(signature.parameters)}")
        return MIC(**variant, **options)

    build.__signature__ = signature  # type: ignore[attr-defined]
    return build


register_model("mic")(_builder())
register_model("mic-mi")(_builder(alpha=0.0))
register_model("mic-mi-adv")(_builder(disentangle="adversary"))
register_model("mic-no-rec")(_builder(reconstruction=False))
register_model("mic-mv")(_builder(motion_vectors=True))
register_model("mic-resnet6")(_builder(backbone="resnet6"))
register_presets(
    "mic",
    {
        "ckplus": Preset(MIC_PRESETS["ckplus"], "MIC paper §4.2 on CK+, base lr 1e-3 instead of 1e-1"),
        "mmi": Preset(MIC_PRESETS["mmi"], "MIC paper §4.2 on MMI, base lr 1e-3 instead of 1e-1"),
        "afew": Preset(MIC_PRESETS["afew"], "MIC paper §4.2 on AFEW, without the reconstruction"),
        "demo": Preset(DEMO_PRESET, "MIC settings for CPU"),
    },
    compare="demo",
)
