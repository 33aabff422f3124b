"""CEFLNet, the clip-aware emotion-rich feature learning network of Liu et al. (paper 004): overlapping
clips of a video, ResNet-18 frame features, a clip feature encoder (self-attention learning, Eq. 1, and
local-global relation learning, Eq. 2-3) and the emotional intensity activation network (Eq. 4-9),
trained with Eq. 11. Choices the paper leaves open: docs/peers.md."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cvfer.errors import ConfigError
from cvfer.models.backbones import ResNet18, encode_frames
from cvfer.models.base import FERModel, FEROutput, TrainingForward, TrainState
from cvfer.models.registry import Preset, register_model, register_presets, variant_builder

FEATURE_DIM = ResNet18.out_features

# The paper's setup (Sec. 4.1, Table 1) in `cvfer.train` terms, CEFLNet's `paper` preset: keys naming a
# TrainConfig field set it, the others are model options. 75 frames as the paper's 75-frame window; the
# warm-up length is not given.
CEFLNET_PRESET: dict[str, Any] = {
    "model": "ceflnet",
    "epochs": 120,
    "batch_size": 8,
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr": 1e-4,
    "lr_schedule": "cosine",
    "lr_schedule_params": {"warmup_epochs": 5},
    "num_frames": 75,
    "input_size": 224,
    "num_clips": 7,
    "frames_per_clip": 5,
}


def clip_frame_indices(num_frames: int, num_clips: int = 7, frames_per_clip: int = 5, random: bool = False) -> Tensor:
    """(num_clips, frames_per_clip) frame indices of overlapping clips over `num_frames` frames.

    The paper splits 75 frames into 7 windows of 15 frames with a stride of 10 (a third overlaps) and
    takes 5 frames of each; here windows are 1.5 strides long for any length. Each window is cut into
    `frames_per_clip` equal bins and one frame is taken per bin: a random one (torch's global generator)
    when `random` (training), the middle one otherwise (testing). Short videos repeat frames.
    """
    if num_frames < 1 or num_clips < 1 or frames_per_clip < 1:
        raise ConfigError(f"cannot cut {num_frames} frames into {num_clips} clips of {frames_per_clip} frames")
    stride = num_frames / (num_clips + 0.5)
    window = 1.5 * stride
    starts = torch.arange(num_clips, dtype=torch.float64) * stride
    if random:
        within = torch.rand(num_clips, frames_per_clip, dtype=torch.float64)
    else:
        within = torch.full((num_clips, frames_per_clip), 0.5, dtype=torch.float64)
    offsets = (torch.arange(frames_per_clip, dtype=torch.float64) + within) * window / frames_per_clip
    return (starts[:, None] + offsets).floor().long().clamp(0, num_frames - 1)


class SelfAttention(nn.Module):
    """Self-attention learning over the frames of a clip: softmax(I_Q I_K^T / sqrt(d)) I_V, Eq. 1."""

    def __init__(self, dim: int = FEATURE_DIM):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, frames: Tensor) -> Tensor:
        """(N, K, d) frame features of N clips -> (N, K, d) attended features f'."""
        weights = self.query(frames) @ self.key(frames).transpose(1, 2) / math.sqrt(frames.shape[-1])
        return weights.softmax(dim=-1) @ self.value(frames)


class LocalGlobalRelation(nn.Module):
    """Local-global relation learning: w_k = σ([pool(f') : f'_k] q^0) (Eq. 2), R = (Σ_k w_k f'_k / Σ_k w_k) q^1
    (Eq. 3); the clip summary pool(f') is the mean over the clip's frames."""

    def __init__(self, dim: int = FEATURE_DIM):
        super().__init__()
        self.relation = nn.Linear(2 * dim, 1)
        self.project = nn.Linear(dim, dim)

    def forward(self, attended: Tensor) -> Tensor:
        """(N, K, d) -> (N, d) clip features R."""
        clip = attended.mean(dim=1, keepdim=True).expand_as(attended)
        weights = torch.sigmoid(self.relation(torch.cat([clip, attended], dim=-1)))
        return self.project((weights * attended).sum(dim=1) / weights.sum(dim=1))


class EmotionIntensityActivation(nn.Module):
    """EIAN: 1-D convolutions over clips give per-class emotional scores A (softmax over clips, Eq. 5); the
    activation map M_c = A_c ⊙ V^f (Eq. 7) is max-pooled over clips (Eq. 8) and scored by q^2 (Eq. 9)."""

    def __init__(self, num_classes: int, dim: int = FEATURE_DIM):
        super().__init__()
        self.temporal = nn.Sequential(nn.Conv1d(dim, dim, 3, padding=1), nn.ReLU(inplace=True))
        self.scores = nn.Conv1d(dim, num_classes, 1)  # W^T of Eq. 5
        self.classifier = nn.Linear(dim, num_classes)  # q^2 of Eq. 9

    def emotional_scores(self, video: Tensor) -> Tensor:
        """(B, d, n) video representation V^f -> (B, C, n) scores A, each class's row summing to 1 over clips."""
        return self.scores(self.temporal(video)).softmax(dim=-1)

    def forward(self, clip_features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n, d) clip features -> logits (B, C) and z_E (B, d): the predicted class's emotion-rich feature."""
        video = clip_features.transpose(1, 2)  # V^f of Eq. 4: the clip features side by side in time
        activation = self.emotional_scores(video).unsqueeze(2) * video.unsqueeze(1)  # (B, C, d, n), Eq. 7
        emotion_rich = activation.amax(dim=-1)  # (B, C, d), Eq. 8
        logits = (emotion_rich * self.classifier.weight).sum(dim=-1) + self.classifier.bias  # Eq. 9
        predicted = logits.argmax(dim=1)
        return logits, emotion_rich[torch.arange(len(predicted), device=logits.device), predicted]


class MeanClassifier(nn.Module):
    """The heads of the Table 6 rows without EIAN: average the sequence of features, then a linear layer."""

    def __init__(self, num_classes: int, dim: int = FEATURE_DIM):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, sequence: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, d) -> logits (B, C) and the averaged feature (B, d)."""
        features = sequence.mean(dim=1)
        return self.linear(features), features


def clip_aware_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq. 11: −Σ_c [Y_c log p_c + (1 − Y_c) log(1 − p_c)] on softmax probabilities p, batch mean.

    log(1 − p_c) is computed as logsumexp of the other logits minus logsumexp of all, which stays finite."""
    num_classes = logits.shape[1]
    log_total = logits.logsumexp(dim=1, keepdim=True)
    log_p = logits - log_total
    others = logits.unsqueeze(1).expand(-1, num_classes, -1)
    diagonal = torch.eye(num_classes, dtype=torch.bool, device=logits.device)
    log_not_p = others.masked_fill(diagonal, float("-inf")).logsumexp(dim=2) - log_total
    target = nn.functional.one_hot(labels, num_classes).to(logits.dtype)
    return -(target * log_p + (1 - target) * log_not_p).sum(dim=1).mean()


class CEFLNet(FERModel):
    """CEFLNet and the rows of its Table 6 ablation (switch off EIAN, LRL, SAL)."""

    train_inputs = ("frames", "label")
    test_inputs = ("frames",)

    def __init__(
        self,
        num_classes: int = 7,
        image_size: int = 64,
        num_frames: int = 16,
        input_size: int | None = None,
        num_clips: int = 7,
        frames_per_clip: int = 5,
        self_attention: bool = True,
        relation: bool = True,
        activation: bool = True,
    ):
        super().__init__()
        if num_frames < 1 or num_clips < 1 or frames_per_clip < 1:
            raise ConfigError(f"cannot cut {num_frames} frames into {num_clips} clips of {frames_per_clip} frames")
        if relation and not self_attention:
            raise ConfigError("local-global relation learning follows self-attention", fix="keep self_attention=True")
        self.image_size = image_size
        self.num_frames = num_frames
        self.input_size = input_size
        self.num_clips = num_clips
        self.frames_per_clip = frames_per_clip
        self.backbone = ResNet18()
        self.self_attention = SelfAttention() if self_attention else None
        self.relation = LocalGlobalRelation() if relation else None
        # EIAN, or for the rows without it an average over clips (over frames in the "ResNet-18" row).
        self.head: nn.Module = EmotionIntensityActivation(num_classes) if activation else MeanClassifier(num_classes)

    def clip_indices(self, num_frames: int) -> Tensor:
        """Frame indices of the clips: random within each bin while training, bin middles at test time."""
        return clip_frame_indices(num_frames, self.num_clips, self.frames_per_clip, random=self.training)

    def forward(self, batch: dict[str, Tensor]) -> FEROutput:
        frames = batch["frames"]
        # Run the backbone once per distinct frame, then lay the features out as clips.
        distinct, positions = self.clip_indices(frames.shape[1]).flatten().unique(return_inverse=True)
        distinct, positions = distinct.to(frames.device), positions.to(frames.device)
        frame_features = encode_frames(self.backbone, frames[:, distinct], self.input_size)[:, positions]
        if self.self_attention is None:
            return FEROutput(*self.head(frame_features))
        clips = frame_features.unflatten(1, (self.num_clips, self.frames_per_clip)).flatten(0, 1)
        attended = self.self_attention(clips)
        clip_features = attended.mean(dim=1) if self.relation is None else self.relation(attended)
        return FEROutput(*self.head(clip_features.unflatten(0, (frames.shape[0], self.num_clips))))

    def training_losses(
        self, batch: dict[str, Tensor], forward: TrainingForward, state: TrainState
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """The video-level classification loss L_class of Eq. 11, the only loss of the paper."""
        loss = clip_aware_loss(forward.output.logits, batch["label"])
        return {"main": loss}, {"loss": float(loss.detach())}


def _ablation(
    self_attention: bool = True, relation: bool = True, activation: bool = True
) -> Callable[..., CEFLNet]:
    """A registered builder: CEFLNet with the components of one Table 6 row fixed (not options of the builder)."""
    return variant_builder(CEFLNet, self_attention=self_attention, relation=relation, activation=activation)


register_model("ceflnet")(_ablation())
register_model("ceflnet-sal-lrl")(_ablation(activation=False))
register_model("ceflnet-sal")(_ablation(relation=False, activation=False))
register_model("ceflnet-resnet18")(_ablation(self_attention=False, relation=False, activation=False))
register_presets(
    "ceflnet",
    {
        "paper": Preset(CEFLNET_PRESET, "CEFLNet paper setup: Adam, cosine, 75 frames, input 224"),
        "cpu": Preset(  # `cvfer compare`'s start
            {**CEFLNET_PRESET, "input_size": None, "num_frames": 16},
            "CEFLNet paper setup with Adam and cosine, input at the stored frame size, 16 frames instead of 75",
        ),
    },
    compare="cpu",
)
