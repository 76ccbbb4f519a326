"""The one coordinate convention of the model, used by every network, loss and inference path.

Normalised coordinates follow ``align_corners=True``: x = −1 is the centre of the first pixel column, x = +1
the centre of the last, so a pixel coordinate p (pixel centres at integers, like dlib landmarks and the
project's flows) maps to 2p / (S − 1) − 1 (under ``compat = "fomm"`` the keypoint values alone follow the
seed's 2p / S − 1, see augmenter/model/README.md). Every ``grid_sample`` and every resize of a grid or of a
map that is compared with a grid uses ``align_corners=True``; mixing conventions shifts an identity warp by up
to half a pixel, which is as large as a micro-expression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN_CORNERS = True
# What a warp reads outside the frame: "border" repeats the edge pixel (the "augmenter" numerics); FOMM /
# FP-FOMM sample zeros (``compat = "fomm"``).
PADDING_MODES: dict[str, str] = {"augmenter": "border", "fomm": "zeros"}


def coordinate_grid(
    height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """(H, W, 2) grid of (x, y) normalised pixel-centre coordinates."""
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def pixels_to_normalized(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel (x, y) in an S×S image → normalised coordinates."""
    return points * (2.0 / (size - 1)) - 1.0


def normalized_to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised coordinates → pixel (x, y) in an S×S image."""
    return (points + 1.0) * ((size - 1) / 2.0)


def warp(
    image: torch.Tensor, sampling_grid: torch.Tensor, padding_mode: str = "border", mode: str = "bilinear"
) -> torch.Tensor:
    """Backward warp: output(z) = image(sampling_grid(z)); the grid is (B, h, w, 2) and resized to the
    image; `padding_mode` is what is read outside the frame ("border" or FOMM's "zeros"); `mode` is
    grid_sample's interpolation ("bilinear" or "bicubic")."""
    height, width = image.shape[-2:]
    if sampling_grid.shape[1:3] != (height, width):
        sampling_grid = resize_grid(sampling_grid, height, width)
    return F.grid_sample(
        image,
        sampling_grid.to(image.dtype),
        mode=mode,
        padding_mode=padding_mode,
        align_corners=ALIGN_CORNERS,
    )


def resize_grid(sampling_grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a (B, h, w, 2) grid of normalised coordinates.

    The displacement from the identity is resized, not the absolute grid, so an identity field stays exact to
    rounding of the displacement (not of the coordinates) at the new resolution.
    """
    small = coordinate_grid(*sampling_grid.shape[1:3], dtype=sampling_grid.dtype, device=sampling_grid.device)
    displacement = (sampling_grid - small).permute(0, 3, 1, 2)
    resized = F.interpolate(displacement, size=(height, width), mode="bilinear", align_corners=ALIGN_CORNERS)
    large = coordinate_grid(height, width, dtype=sampling_grid.dtype, device=sampling_grid.device)
    return large + resized.permute(0, 2, 3, 1)


def resize_map(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (B, C, h, w) maps (occlusion, images) on the same pixel-centre convention."""
    if values.shape[-2:] == (height, width):
        return values
    return F.interpolate(values, size=(height, width), mode="bilinear", align_corners=ALIGN_CORNERS)


def gaussian_heatmaps(points: torch.Tensor, height: int, width: int, variance: float) -> torch.Tensor:
    """(B, K, 2) normalised points → (B, K, H, W) Gaussian bumps exp(−|z − p|² / (2 variance))."""
    grid = coordinate_grid(height, width, dtype=points.dtype, device=points.device)
    offset = grid[None, None] - points[:, :, None, None, :]
    return torch.exp(-0.5 * offset.pow(2).sum(dim=-1) / variance)


def _thin_plate_kernel(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, M, N) U = ½ r² log r² between (B, M, 2) points and (B, N, 2) centres (0 at r = 0)."""
    squared = (points[:, :, None, :] - centres[:, None, :, :]).pow(2).sum(dim=-1)
    return 0.5 * squared * torch.log(squared.clamp_min(1e-20))


def tps_sampling_grid(
    control: torch.Tensor, values: torch.Tensor, height: int, width: int, regularization: float = 1e-3
) -> torch.Tensor:
    """(B, H, W, 2) thin-plate spline through (B, N, 2) normalised `control` points with (B, N, 2) `values`.

    As a backward sampling grid it sends each control point of the output to its value in the input and
    interpolates smoothly in between (the same spline as augmenter.warp, on torch tensors and batched).
    `regularization` (λ on the kernel's diagonal) keeps the system solvable when points nearly coincide.
    Solved in float64; returned in the dtype of `control`.
    """
    centres = control.double()
    batch, count, _ = centres.shape
    system = centres.new_zeros(batch, count + 3, count + 3)
    system[:, :count, :count] = _thin_plate_kernel(centres, centres) + regularization * torch.eye(
        count, dtype=centres.dtype, device=centres.device
    )
    affine = torch.cat([centres.new_ones(batch, count, 1), centres], dim=-1)
    system[:, :count, count:] = affine
    system[:, count:, :count] = affine.transpose(1, 2)
    right_hand = torch.cat([values.double(), centres.new_zeros(batch, 3, 2)], dim=1)
    coefficients = torch.linalg.solve(system, right_hand)  # (B, N + 3, 2)
    grid = coordinate_grid(height, width, dtype=centres.dtype, device=centres.device).view(1, -1, 2)
    grid = grid.expand(batch, -1, -1)
    ones = grid.new_ones(batch, grid.shape[1], 1)
    basis = torch.cat([_thin_plate_kernel(grid, centres), ones, grid], dim=-1)
    return (basis @ coefficients).view(batch, height, width, 2).to(control.dtype)


def border_grid_points(per_side: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(4·per_side, 2) normalised points along the frame's border, corners included (pinned still by a TPS
    so the background does not swing with the face)."""
    steps = torch.linspace(-1.0, 1.0, per_side + 1, dtype=dtype)[:-1]
    ones = torch.ones_like(steps)
    return torch.cat(
        [
            torch.stack([steps, -ones], 1),
            torch.stack([ones, steps], 1),
            torch.stack([-steps, ones], 1),
            torch.stack([-ones, -steps], 1),
        ]
    )
