"""Dense motion network: from sparse keypoint motions to one backward warp field and an occlusion map.

Each keypoint k gives a local first-order motion T_k(z) = p_s + J_s J_d⁻¹ (z − p_d) that maps a driving-frame
position z to the source frame. An hourglass sees the heatmap difference and the source warped by every T_k,
and predicts a softmax mask that mixes them into one field. FOMM adds an identity "background" motion as an
extra choice; in the seed's formulation the mask collapses onto it (DESIGN §5a); with tracked keypoints and
the teacher flow it did not (and it helped on validation), so it is a switch.

`landmark_tps` adds one more choice: the thin-plate spline that moves the face's tracked landmarks (keypoint
dicts carry them as "landmarks", (B, L, 2) normalised) with the frame's border pinned — the motion of the
training-free landmark-tps generator. Its mask starts at LANDMARK_TPS_INITIAL_SHARE of every pixel, so an
untrained network moves the face like landmark-tps and training learns where the keypoints' local motions
do better (a TPS motion candidate, as in Zhao & Zhang's Thin-Plate Spline Motion Model, CVPR 2022).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from augmenter.model.blocks import AntiAliasInterpolation2d, Hourglass
from augmenter.model.grid import (
    PADDING_MODES,
    border_grid_points,
    coordinate_grid,
    gaussian_heatmaps,
    tps_sampling_grid,
    warp,
)

# The landmark TPS candidate's share of the softmax mask before training.
LANDMARK_TPS_INITIAL_SHARE = 0.9
# Border points pinned still per side of the frame (landmark-tps uses the same).
LANDMARK_TPS_BORDER_PER_SIDE = 4


def relative_jacobians(
    kp_source: dict[str, torch.Tensor], kp_driving: dict[str, torch.Tensor]
) -> torch.Tensor:
    """J_s · J_d⁻¹ per keypoint, (B, K, 2, 2); computed in float32 (inverting in half precision is
    unstable)."""
    source = kp_source["jacobian"].float()
    driving = kp_driving["jacobian"].float()
    # X J_d = J_s  ⇔  J_dᵀ Xᵀ = J_sᵀ
    return torch.linalg.solve(driving.transpose(-1, -2), source.transpose(-1, -2)).transpose(-1, -2)


def landmark_tps_motion(
    kp_source: dict[str, torch.Tensor], kp_driving: dict[str, torch.Tensor], height: int, width: int
) -> torch.Tensor:
    """(B, 1, H, W, 2) the sampling grid of the TPS that sends the driving frame's landmarks to the source's,
    the frame's border pinned."""
    driving = kp_driving["landmarks"].float()
    source = kp_source["landmarks"].float()
    if source.shape[0] != driving.shape[0]:
        source = source.expand(driving.shape[0], -1, -1)
    border = border_grid_points(LANDMARK_TPS_BORDER_PER_SIDE).to(driving.device)
    border = border[None].expand(driving.shape[0], -1, -1)
    grid = tps_sampling_grid(
        torch.cat([driving, border], dim=1), torch.cat([source, border], dim=1), height, width
    )
    return grid[:, None]


def sparse_motions(
    kp_source: dict[str, torch.Tensor],
    kp_driving: dict[str, torch.Tensor],
    height: int,
    width: int,
    background: bool,
) -> torch.Tensor:
    """(B, K [+1], H, W, 2) sampling grids, one per keypoint (and the identity first when `background`)."""
    source_points = kp_source["value"].float()
    driving_points = kp_driving["value"].float()
    grid = coordinate_grid(height, width, device=source_points.device)  # (H, W, 2)
    relative = grid[None, None] - driving_points[:, :, None, None, :]  # (B, K, H, W, 2)
    jacobian = relative_jacobians(kp_source, kp_driving)  # (B, K, 2, 2)
    moved = torch.einsum("bkij,bkhwj->bkhwi", jacobian, relative) + source_points[:, :, None, None, :]
    if not background:
        return moved
    identity = grid[None, None].expand(moved.shape[0], 1, height, width, 2)
    return torch.cat([identity, moved], dim=1)


class DenseMotionNetwork(nn.Module):
    """Predicts {deformation (B, h, w, 2), occlusion_map (B, 1, h, w), mask, sparse_deformed} at
    scale_factor."""

    def __init__(
        self,
        num_kp: int = 18,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 1024,
        num_blocks: int = 5,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        background: bool = True,
        estimate_occlusion_map: bool = True,
        head_kernel: int = 7,
        landmark_tps: bool = False,
        compat: str = "augmenter",
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.padding_mode = PADDING_MODES[compat]
        self.background = background
        self.landmark_tps = landmark_tps
        self.kp_variance = kp_variance
        self.scale_factor = scale_factor
        motions = num_kp + int(background) + int(landmark_tps)
        self.hourglass = Hourglass(block_expansion, motions * (num_channels + 1), num_blocks, max_features)
        # FOMM's heads are 7×7; on small CPU models a 7×7 head on every hourglass channel is most of the cost.
        padding = head_kernel // 2
        self.mask = nn.Conv2d(self.hourglass.out_filters, motions, kernel_size=head_kernel, padding=padding)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=head_kernel, padding=padding)
            if estimate_occlusion_map
            else None
        )
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor, compat)
        if landmark_tps:
            # share s of the softmax against M − 1 choices at 0: bias = log(s / (1 − s) · (M − 1))
            share = LANDMARK_TPS_INITIAL_SHARE
            with torch.no_grad():
                self.mask.bias[int(background)] += math.log(share / (1.0 - share) * (motions - 1))

    def forward(
        self,
        source_image: torch.Tensor,
        kp_driving: dict[str, torch.Tensor],
        kp_source: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        small = self.down(source_image)
        batch, channels, height, width = small.shape
        heat = gaussian_heatmaps(
            kp_driving["value"].float(), height, width, self.kp_variance
        ) - gaussian_heatmaps(kp_source["value"].float(), height, width, self.kp_variance)
        grids = sparse_motions(kp_source, kp_driving, height, width, self.background)  # (B, M, h, w, 2)
        if self.landmark_tps:
            if "landmarks" not in kp_driving or "landmarks" not in kp_source:
                raise ValueError("dense_motion.landmark_tps needs the landmarks in both keypoint dicts")
            tps = landmark_tps_motion(kp_source, kp_driving, height, width)
            at = int(self.background)  # order: identity, landmark TPS, keypoints
            grids = torch.cat([grids[:, :at], tps.to(grids.dtype), grids[:, at:]], dim=1)
        motions = grids.shape[1]
        if motions > self.num_kp:  # the identity and TPS choices have no keypoint heat
            heat = torch.cat([heat.new_zeros(batch, motions - self.num_kp, height, width), heat], dim=1)
        repeated = (
            small.unsqueeze(1)
            .expand(batch, motions, channels, height, width)
            .reshape(-1, channels, height, width)
        )
        deformed = warp(repeated, grids.reshape(-1, height, width, 2), self.padding_mode).view(
            batch, motions, channels, height, width
        )
        features = torch.cat([heat.unsqueeze(2).to(deformed.dtype), deformed], dim=2).view(
            batch, -1, height, width
        )
        prediction = self.hourglass(features)
        mask = F.softmax(self.mask(prediction).float(), dim=1)  # (B, M, h, w)
        deformation = (grids * mask.unsqueeze(-1)).sum(dim=1)  # (B, h, w, 2)
        out = {"deformation": deformation, "mask": mask, "sparse_deformed": deformed}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction).float())
        return out
