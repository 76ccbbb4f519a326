"""Keypoint detector: FP-FOMM's fixed facial-prior keypoints (or FOMM's learned ones) and learned Jacobians.

With ``keypoints = "prior"`` (FP-FOMM) the positions are the 18 AU points (given, not learned): an hourglass
sees the downscaled image plus the prior heat channel and predicts, per keypoint, a softmax heatmap and a 2×2
Jacobian map; the Jacobian of a keypoint is its map pooled under its heatmap. Motion between two frames
therefore enters through the Jacobians and, when the keypoints are tracked, through the moved positions. With
``keypoints = "learned"`` (FOMM) there is no prior channel and each keypoint is its heatmap's expected
position.

``compat = "fomm"`` reproduces the published code: the 7×7 heads have no padding (64×64 features → 58×58
heatmaps), the prior channel is the seed's (each point's map divided by its own maximum, on the seed's 1-based
cell grid) and keypoint values are 2p/S − 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augmenter.face.prior import PRIOR_SIGMA, prior_heatmap
from augmenter.model.blocks import AntiAliasInterpolation2d, Hourglass
from augmenter.model.grid import coordinate_grid, normalized_to_pixels


def seed_prior_maps(
    points_px: torch.Tensor, image_size: int, size: tuple[int, int], sigma: float = PRIOR_SIGMA
) -> torch.Tensor:
    """The seed's per-point prior maps, (B, K, h, w), each with peak 1.

    Points are pixel (x, y) of an S×S image, moved to cells of the h×w map by ×h/S; the cell grid is 1-based
    (cell i sits at i + 1, the seed's convention: every bump lands about one cell up-left of the point); per
    point exp(−sqrt(L1 distance) / (2σ²)), divided by its own maximum, values under its mean zeroed. The seed
    hard-codes h = 64 and S = 256; the ×h/S scaling is the same at that size and defined at any other.
    """
    height, width = size
    cells = points_px * torch.tensor(
        [width / image_size, height / image_size], dtype=points_px.dtype, device=points_px.device
    )
    cols = torch.arange(1, width + 1, dtype=points_px.dtype, device=points_px.device)
    rows = torch.arange(1, height + 1, dtype=points_px.dtype, device=points_px.device)
    distance = (cols[None, None, None, :] - cells[..., 0, None, None]).abs() + (
        rows[None, None, :, None] - cells[..., 1, None, None]
    ).abs()
    maps = torch.exp(-torch.sqrt(distance) / (2.0 * sigma**2))
    maps = maps / maps.amax(dim=(-2, -1), keepdim=True)
    mean = maps.mean(dim=(-2, -1), keepdim=True)
    return torch.where(maps >= mean, maps, torch.zeros_like(maps))


def seed_prior_heatmap(
    points_px: torch.Tensor, image_size: int, size: tuple[int, int], sigma: float = PRIOR_SIGMA
) -> torch.Tensor:
    """(B, 1, h, w) the seed's prior channel: `seed_prior_maps` summed and divided by the sum's maximum."""
    total = seed_prior_maps(points_px, image_size, size, sigma).sum(dim=1, keepdim=True)
    return total / total.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)


def keypoint_values(points: torch.Tensor, size: int, compat: str) -> torch.Tensor:
    """Normalised points on the model's grid (2p/(S−1) − 1) → the keypoint values the networks compute with:
    unchanged under "augmenter", the seed's 2p/S − 1 under "fomm" (≤ 0.78 px apart at 256²)."""
    if compat == "fomm":
        return normalized_to_pixels(points, size) * (2.0 / size) - 1.0
    return points


class KPDetector(nn.Module):
    """Image (B, 3, H, W) in [0, 1] (+ points (B, K, 2) normalised, for prior keypoints) → {value, jacobian
    (B, K, 2, 2), heatmap}."""

    def __init__(
        self,
        num_kp: int = 18,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        scale_factor: float = 0.25,
        head_kernel: int = 7,
        prior_sigma: float = PRIOR_SIGMA,
        keypoints: str = "prior",
        compat: str = "augmenter",
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.prior_sigma = prior_sigma
        self.learned = keypoints == "learned"
        self.compat = compat
        self.predictor = Hourglass(
            block_expansion, num_channels + (0 if self.learned else 1), num_blocks, max_features
        )
        padding = 0 if compat == "fomm" else head_kernel // 2
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, head_kernel, padding=padding)
        self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * num_kp, head_kernel, padding=padding)
        # Start at the identity so an untrained model does not move anything.
        nn.init.zeros_(self.jacobian.weight)
        with torch.no_grad():
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * num_kp))
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor, compat)

    def prior(self, points: torch.Tensor, image_size: int, size: tuple[int, int]) -> torch.Tensor:
        """The prior heat channel of normalised points at the downscaled size."""
        if self.compat == "fomm":
            return seed_prior_heatmap(
                normalized_to_pixels(points, image_size), image_size, size, self.prior_sigma
            )
        return prior_heatmap(points, size, self.prior_sigma)

    def forward(self, image: torch.Tensor, points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        small = self.down(image)
        image_size = image.shape[-1]
        if self.learned:
            features = self.predictor(small)
        else:
            if points is None:
                raise ValueError("a facial-prior keypoint detector needs the points")
            prior = self.prior(points, image_size, tuple(small.shape[-2:])).to(small.dtype)
            features = self.predictor(torch.cat([small, prior], dim=1))
        logits = self.kp(features)
        batch, _, height, width = logits.shape
        heatmap = F.softmax(logits.flatten(2).float() / self.temperature, dim=2).view_as(logits)
        jacobian_map = self.jacobian(features).float().view(batch, self.num_kp, 4, height, width)
        jacobian = (heatmap.unsqueeze(2) * jacobian_map).flatten(3).sum(dim=-1).view(batch, self.num_kp, 2, 2)
        if self.learned:
            grid = coordinate_grid(height, width, device=heatmap.device)  # FOMM: [-1, 1] over the heatmap
            value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))
        else:
            value = keypoint_values(points, image_size, self.compat)
        return {"value": value, "jacobian": jacobian, "heatmap": heatmap}
