"""Multi-scale patch discriminator (pix2pix style) for the LSGAN and feature-matching losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augmenter.model.grid import resize_map


class DiscriminatorBlock(nn.Module):
    """4×4 conv (valid) → instance norm (not on the first block) → leaky ReLU → optional 2×2 pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool, pool: bool, spectral: bool) -> None:
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=4)
        self.conv = nn.utils.spectral_norm(conv) if spectral else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, 2, ceil_mode=True) if self.pool else out


class Discriminator(nn.Module):
    """One scale: returns (feature maps, prediction map)."""

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 32,
        num_blocks: int = 4,
        max_features: int = 512,
        spectral: bool = True,
    ) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            in_features = num_channels if i == 0 else min(max_features, block_expansion * 2**i)
            out_features = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(
                DiscriminatorBlock(in_features, out_features, i != 0, i != num_blocks - 1, spectral)
            )
        self.down_blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(min(max_features, block_expansion * 2**num_blocks), 1, kernel_size=1)
        self.conv = nn.utils.spectral_norm(conv) if spectral else conv

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        out = x
        for block in self.down_blocks:
            out = block(out)
            features.append(out)
        return features, self.conv(out)


def scale_key(scale: float) -> str:
    """FOMM's ModuleDict key for a scale (1 → "1", 0.5 → "0-5")."""
    value = float(scale)
    return str(int(value)) if value.is_integer() else str(value).replace(".", "-")


class MultiScaleDiscriminator(nn.Module):
    """One discriminator per image scale; takes an image and resizes it itself."""

    def __init__(self, scales: tuple[float, ...] = (1,), **kwargs: object) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.discs = nn.ModuleDict({scale_key(scale): Discriminator(**kwargs) for scale in self.scales})

    def forward(self, image: torch.Tensor) -> dict[float, tuple[list[torch.Tensor], torch.Tensor]]:
        height, width = image.shape[-2:]
        out = {}
        for scale in self.scales:
            scaled = (
                image
                if scale == 1
                else resize_map(image, max(8, round(height * scale)), max(8, round(width * scale)))
            )
            out[scale] = self.discs[scale_key(scale)](scaled)
        return out
