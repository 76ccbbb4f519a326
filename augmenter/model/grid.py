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


def warp(image: torch.Tensor, sampling_grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Backward warp: output(z) = image(sampling_grid(z)); the grid is (B, h, w, 2) and resized to the
    image; `padding_mode` is what is read outside the frame ("border" or FOMM's "zeros")."""
    height, width = image.shape[-2:]
    if sampling_grid.shape[1:3] != (height, width):
        sampling_grid = resize_grid(sampling_grid, height, width)
    return F.grid_sample(
        image,
        sampling_grid.to(image.dtype),
        mode="bilinear",
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
