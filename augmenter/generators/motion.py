"""What the torch generators (fp-fomm, fomm) share: frames as tensors, the size check, the face-size ratio.

Both run FOMM's relative motion transfer; they differ in where keypoints come from (the facial prior vs.
learned), not in these steps.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from augmenter.errors import UserError
from augmenter.generators.base import PreparedClip, TargetFace


def hull_area(points: np.ndarray) -> float:
    """Area of the points' convex hull (0 for degenerate sets): the face size that scales relative motion."""
    try:
        return float(ConvexHull(np.asarray(points, np.float64)).volume)
    except (QhullError, ValueError):
        return 0.0


def frames_to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (T, S, S, 3) → float (T, 3, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def check_frame_size(source: PreparedClip, target: TargetFace, size: int) -> None:
    """Refuse a clip or target prepared at another size than the weights run at."""
    if source.frames.shape[1:3] != (size, size) or target.image.shape[:2] != (size, size):
        raise UserError(
            f"{source.key} → {target.key}: clip {source.frames.shape[1:3]} / target "
            f"{target.image.shape[:2]} "
            f"do not match the checkpoint's size {size}; prepare them at --size {size}"
        )
