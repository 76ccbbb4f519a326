"""Building blocks shared by the networks (hourglass, residual, up/down blocks, anti-aliased resize).

Attribute names (conv, norm, pool, conv1/norm1, encoder.down_blocks, decoder.up_blocks, down.weight) follow
the FOMM checkpoints' state-dict keys so official weights load where shapes match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from augmenter.model.grid import resize_map


class ResBlock2d(nn.Module):
    """Pre-activation residual block that keeps the resolution (the generator's bottleneck)."""

    def __init__(self, features: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.norm2 = nn.BatchNorm2d(features, affine=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(hidden)))


class SameBlock2d(nn.Module):
    """conv → BN → ReLU at the same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv → BN → ReLU → 2×2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock2d(nn.Module):
    """Nearest ×2 (or to an explicit size, so odd resolutions work) → conv → BN → ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


def level_features(block_expansion: int, max_features: int, level: int) -> int:
    """Channels at hourglass depth `level` (FOMM's rule: doubling per level, capped)."""
    return min(max_features, block_expansion * (2**level))


class Encoder(nn.Module):
    """Hourglass encoder: returns the input and every level's features (skips for the decoder)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else level_features(block_expansion, max_features, i),
                level_features(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = [x]
        for block in self.down_blocks:
            outputs.append(block(outputs[-1]))
        return outputs


class Decoder(nn.Module):
    """Hourglass decoder: upsamples and concatenates each skip; ends with block_expansion + in_features
    channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            factor = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock2d(
                    factor * level_features(block_expansion, max_features, i + 1),
                    level_features(block_expansion, max_features, i),
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            skip = skips.pop()
            out = torch.cat([block(out, size=tuple(skip.shape[-2:])), skip], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style encoder/decoder used by the keypoint detector and the dense motion network."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Band-limited downsampling: a Gaussian blur (σ = (1/scale − 1)/2, kernel 2·round(4σ) + 1), then

    - compat "augmenter": edge-replicated blur, bilinear resize on the model's pixel-centre convention (any
      scale, any size);
    - compat "fomm": zero-padded blur, then every int(1/scale)-th pixel from the first (FOMM's operator, so
      imported weights see the inputs they were trained on).
    """

    def __init__(self, channels: int, scale: float, compat: str = "augmenter") -> None:
        super().__init__()
        self.scale = float(scale)
        self.compat = compat
        sigma = max((1.0 / self.scale - 1.0) / 2.0, 1e-3)
        kernel_size = 2 * round(sigma * 4) + 1
        # Built on the CPU whatever the default device (a meta-device build for shapes stays cheap).
        coords = torch.arange(kernel_size, dtype=torch.float32, device="cpu") - (kernel_size - 1) / 2.0
        bump = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = bump[:, None] * bump[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone())
        self.groups = channels
        self.pad = kernel_size // 2
        self.stride = int(1.0 / self.scale)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.compat == "fomm":
            return -(-height // self.stride), -(-width // self.stride)
        return max(2, math.floor(height * self.scale + 0.5)), max(2, math.floor(width * self.scale + 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        if self.compat == "fomm":
            blurred = F.conv2d(F.pad(x, (self.pad,) * 4), self.weight.to(x.dtype), groups=self.groups)
            return blurred[:, :, :: self.stride, :: self.stride]
        blurred = F.conv2d(
            F.pad(x, (self.pad,) * 4, mode="replicate"), self.weight.to(x.dtype), groups=self.groups
        )
        return resize_map(blurred, *self.output_size(*x.shape[-2:]))
