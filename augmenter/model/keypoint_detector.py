"""Keypoint detector of FP-FOMM: fixed facial-prior keypoints, learned local Jacobians.

Keypoint positions are the 18 AU points (given, not learned). An hourglass sees the downscaled image plus the
prior heat channel and predicts, per keypoint, a softmax heatmap and a 2×2 Jacobian map; the Jacobian of a
keypoint is its map pooled under its heatmap. Motion between two frames therefore enters through the Jacobians
and, when the keypoints are tracked, through the moved positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augmenter.face.prior import PRIOR_SIGMA, prior_heatmap
from augmenter.model.blocks import AntiAliasInterpolation2d, Hourglass


class KPDetector(nn.Module):
    """Image (B, 3, H, W) in [0, 1] + points (B, K, 2) normalised → {value, jacobian (B, K, 2, 2),
    heatmap}."""

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
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.prior_sigma = prior_sigma
        self.predictor = Hourglass(block_expansion, num_channels + 1, num_blocks, max_features)
        padding = head_kernel // 2
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, head_kernel, padding=padding)
        self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * num_kp, head_kernel, padding=padding)
        # Start at the identity so an untrained model does not move anything.
        nn.init.zeros_(self.jacobian.weight)
        with torch.no_grad():
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * num_kp))
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, image: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        small = self.down(image)
        height, width = small.shape[-2:]
        prior = prior_heatmap(points, (height, width), self.prior_sigma).to(small.dtype)
        features = self.predictor(torch.cat([small, prior], dim=1))
        logits = self.kp(features)
        batch = logits.shape[0]
        heatmap = F.softmax(logits.flatten(2).float() / self.temperature, dim=2).view_as(logits)
        jacobian_map = self.jacobian(features).float().view(batch, self.num_kp, 4, height, width)
        jacobian = (heatmap.unsqueeze(2) * jacobian_map).flatten(3).sum(dim=-1).view(batch, self.num_kp, 2, 2)
        return {"value": points, "jacobian": jacobian, "heatmap": heatmap}
