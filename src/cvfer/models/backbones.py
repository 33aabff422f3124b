"""ResNet-18 written here (no torchvision), with optional squeeze-and-excitation, in stages that
other models cut: `resnet18_stem`, `resnet18_stage(k)` are conv1 and conv{k+1}_x of He et al.
`resnet18_3d_stage(k)` is the same stage of Hara et al.'s 3D ResNet-18 (TFEN's 3D network), and
`frames_to_images` turns the decoded-frame batch into backbone input, `encode_frames` runs a backbone per frame."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cvfer.errors import ConfigError

RESNET18_WIDTHS = (64, 128, 256, 512)
# ImageNet statistics: the papers' backbones are ImageNet- (or face-) pretrained with this normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SqueezeExcitation(nn.Module):
    """Channel attention of Hu et al.: global pool, bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34 block), optionally SE-gated."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, squeeze_excitation: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.se = SqueezeExcitation(out_channels) if squeeze_excitation else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.se(self.body(x)) + self.shortcut(x))


def resnet18_stem(in_channels: int = 3) -> nn.Sequential:
    """conv1 (7×7, stride 2) + BN + ReLU + 3×3 max pool: the input stage of ResNet-18."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


def resnet18_stage(index: int, squeeze_excitation: bool = False) -> nn.Sequential:
    """conv{index+2}_x of ResNet-18 (index 0..3): two basic blocks, stride 2 except the first stage."""
    out_channels = RESNET18_WIDTHS[index]
    in_channels = RESNET18_WIDTHS[index - 1] if index > 0 else 64
    stride = 1 if index == 0 else 2
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride, squeeze_excitation),
        BasicBlock(out_channels, out_channels, 1, squeeze_excitation),
    )


class ResNet18(nn.Module):
    """ResNet-18 feature extractor: (B, C, H, W) -> (B, 512) after global average pooling."""

    out_features = 512

    def __init__(self, in_channels: int = 3, squeeze_excitation: bool = False):
        super().__init__()
        self.stem = resnet18_stem(in_channels)
        self.stages = nn.Sequential(*(resnet18_stage(i, squeeze_excitation) for i in range(4)))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


class BasicBlock3d(nn.Module):
    """3D basic block of Hara et al.'s ResNet-18: two 3×3×3 convolutions; a widening block uses their
    parameter-free type-A shortcut (strided subsampling + zero channels), as their Kinetics model does."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm3d(out_channels),
        )
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        if self.extra_channels:
            shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, 0, 0, 0, self.extra_channels))
        return self.relu(self.body(x) + shortcut)


def resnet18_3d_stage(index: int) -> nn.Sequential:
    """conv{index+2}_x of the 3D ResNet-18 (index 0..3): (B, C, T, H, W) in, stride 2 in T, H, W except stage 0."""
    out_channels = RESNET18_WIDTHS[index]
    in_channels = RESNET18_WIDTHS[index - 1] if index > 0 else 64
    stride = 1 if index == 0 else 2
    return nn.Sequential(BasicBlock3d(in_channels, out_channels, stride), BasicBlock3d(out_channels, out_channels))


def frames_to_images(frames: Tensor, input_size: int | None = None) -> Tensor:
    """(B, T, 3, H, W) RGB in [0, 1] -> (B·T, 3, S, S) ImageNet-normalised, resized to `input_size` if given."""
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ConfigError(
            f"batch['frames'] has shape {tuple(frames.shape)}, expected (B, T, 3, H, W)",
            fix="load the 'frames' input with cvfer.data.dataset.ClipDataset",
        )
    images = frames.flatten(0, 1)
    if input_size is not None and images.shape[-2:] != (input_size, input_size):
        images = nn.functional.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def encode_frames(encoder: nn.Module, frames: Tensor, input_size: int | None = None) -> Tensor:
    """(B, T, 3, H, W) frames -> (B, T, d): `encoder` on each frame, prepared by `frames_to_images`."""
    return encoder(frames_to_images(frames, input_size)).unflatten(0, frames.shape[:2])
