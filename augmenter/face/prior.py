"""The facial prior of FP-FOMM: 18 action-unit points from the 68 landmarks, and their heat channel.

The keypoints of FP-FOMM are not learned: they sit where micro-expression action units move the skin (brows,
nose bridge, eyelids, mouth corners, lower lip) plus six shifted copies that reach cheeks and lower lids. The
heat channel tells the keypoint detector where those points are; it is computed in normalised coordinates, so
the same face gives the same map at any resolution (the seed hard-coded a 64×64 grid and /256).
"""

from __future__ import annotations

import numpy as np
import torch

from augmenter.model.grid import coordinate_grid, pixels_to_normalized

# 0-based landmark indices kept as they are (brows 19/24, nose bridge 27, eyelids 38/41/43/46, mouth corners
# 48/54, lower lip 55/57/59).
AU_LANDMARKS: tuple[int, ...] = (19, 24, 27, 38, 41, 43, 46, 48, 54, 55, 57, 59)
# Shifted copies: (landmark, direction x, direction y) in units of half the inner-eye distance x42 − x39.
# 31/35 nostril wings outwards, 41/46 lower lids down, 48/54 mouth corners outwards.
AU_SHIFTED: tuple[tuple[int, float, float], ...] = (
    (31, -1.0, 0.0),
    (35, 1.0, 0.0),
    (41, 0.0, 1.0),
    (46, 0.0, 1.0),
    (48, -1.0, 0.0),
    (54, 1.0, 0.0),
)
NUM_PRIOR_POINTS = len(AU_LANDMARKS) + len(AU_SHIFTED)  # 18
PRIOR_SIGMA = 0.75
# Distances of the heat map are measured on a 64-cell grid spanning the image (the seed's grid), whatever the
# resolution, so σ keeps its meaning at 128² or 256².
PRIOR_GRID_CELLS = 64


def au_points(landmarks: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(..., 68, 2) landmarks (x, y) → (..., 18, 2) AU points in the same units; numpy or torch, any
    batch shape."""
    kept = landmarks[..., list(AU_LANDMARKS), :]
    half_eye = (landmarks[..., 42, 0] - landmarks[..., 39, 0]) / 2.0  # (...)
    shifted_index = [index for index, _, _ in AU_SHIFTED]
    directions = [[dx, dy] for _, dx, dy in AU_SHIFTED]
    if isinstance(landmarks, torch.Tensor):
        direction = torch.tensor(directions, dtype=landmarks.dtype, device=landmarks.device)
        shifted = landmarks[..., shifted_index, :] + half_eye[..., None, None] * direction
        return torch.cat([kept, shifted], dim=-2)
    direction = np.asarray(directions, dtype=np.float32)
    shifted = landmarks[..., shifted_index, :] + half_eye[..., None, None] * direction
    return np.concatenate([kept, shifted], axis=-2).astype(np.float32)


def au_points_normalized(landmarks: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """The 18 AU points of pixel landmarks of an S×S crop, in the model's [-1, 1] coordinates (float32
    tensor)."""
    tensor = landmarks if isinstance(landmarks, torch.Tensor) else torch.from_numpy(np.asarray(landmarks))
    return pixels_to_normalized(au_points(tensor.float()), size)


def prior_heatmap(
    points: torch.Tensor, size: int | tuple[int, int], sigma: float = PRIOR_SIGMA
) -> torch.Tensor:
    """(B, K, 2) normalised points → (B, 1, H, W) prior heat channel in [0, 1].

    Per point exp(−sqrt(L1 distance) / (2σ²)) with the distance in cells of a 64-cell grid; values under that
    map's mean are zeroed (keeps each bump local); the maps are summed and divided by the maximum.
    """
    height, width = (size, size) if isinstance(size, int) else size
    grid = coordinate_grid(height, width, dtype=points.dtype, device=points.device)  # (H, W, 2)
    cells = torch.tensor(
        [(PRIOR_GRID_CELLS - 1) / 2.0, (PRIOR_GRID_CELLS - 1) / 2.0], dtype=points.dtype, device=points.device
    )
    offset = (grid[None, None] - points[:, :, None, None, :]) * cells  # (B, K, H, W, 2)
    distance = offset.abs().sum(dim=-1)
    heat = torch.exp(-torch.sqrt(distance) / (2.0 * sigma**2))
    mean = heat.mean(dim=(-2, -1), keepdim=True)
    heat = torch.where(heat < mean, torch.zeros_like(heat), heat)
    total = heat.sum(dim=1, keepdim=True)
    peak = total.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
    return total / peak
