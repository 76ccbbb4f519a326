"""Optical flow, face masks and optical strain: shared by teacher-flow training, scoring and recognition.

One convention everywhere in the project: a flow is float32 (H, W, 2) holding (dx, dy) in pixels, the
displacement that carries the content at pixel (x, y) of image `a` to (x + dx, y + dy) in image `b`, i.e.
``b[y + dy, x + dx] ≈ a[y, x]``. Pixel centres sit at integer coordinates (x = column, y = row), the same
convention as dlib landmarks and ``cv2.remap``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import points_in_poly
from skimage.registration import optical_flow_tvl1

FlowMethod = Literal["tvl1", "farneback", "dis"]
FLOW_METHODS: tuple[str, ...] = ("tvl1", "farneback", "dis")


def to_grey(image: np.ndarray) -> np.ndarray:
    """float32 grey in [0, 1]; accepts uint8 or float images, RGB or already grey."""
    image = np.asarray(image)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    image = image.astype(np.float32) / scale
    if image.ndim == 3:
        if image.shape[2] == 1:
            return image[..., 0]
        # ITU-R 601 luma, the weights cv2 and skimage use for RGB → grey.
        return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    return image


def _grey_u8(grey: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)


def optical_flow(a: np.ndarray, b: np.ndarray, method: FlowMethod = "tvl1") -> np.ndarray:
    """Dense flow from `a` to `b` as float32 (H, W, 2) (dx, dy) pixels (see the module docstring).

    tvl1: skimage's TV-L1 (the method of the ME recognition literature; slowest, ~0.1 s at 128²). skimage
    returns (v_row, u_col) with ``a[y, x] ≈ b[y + v, x + u]``: our direction, only the channel order differs.
    farneback / dis: OpenCV on 8-bit grey; their (dx, dy) output already follows our convention.
    """
    grey_a, grey_b = to_grey(a), to_grey(b)
    if grey_a.shape != grey_b.shape:
        raise ValueError(f"images differ in shape: {grey_a.shape} vs {grey_b.shape}")
    if method == "tvl1":
        v_row, u_col = optical_flow_tvl1(grey_a, grey_b, dtype=np.float32)
        return np.stack([u_col, v_row], axis=-1).astype(np.float32)
    if method == "farneback":
        # Window 9 px: small enough for 64² faces, large enough to be stable on skin texture.
        flow = cv2.calcOpticalFlowFarneback(
            _grey_u8(grey_a),
            _grey_u8(grey_b),
            None,
            pyr_scale=0.5,
            levels=3,
            winsize=9,
            iterations=5,
            poly_n=5,
            poly_sigma=1.1,
            flags=0,
        )
        return np.asarray(flow, dtype=np.float32)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        # The preset stops refining at half resolution; 64–128² faces need the full one (on a known sub-pixel
        # field at 64², mean error 0.31 → 0.10 px, still a few ms per frame).
        dis.setFinestScale(0)
        flow = dis.calc(_grey_u8(grey_a), _grey_u8(grey_b), None)
        return np.asarray(flow, dtype=np.float32)
    raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")


def face_mask(landmarks68: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """bool (H, W): pixel centres inside the convex hull of the landmarks — where face motion is measured."""
    height, width = int(shape[0]), int(shape[1])
    points = np.asarray(landmarks68, dtype=np.float64).reshape(-1, 2)
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # degenerate (collinear/duplicate) points: no area
        return np.zeros((height, width), dtype=bool)
    rows, cols = np.mgrid[0:height, 0:width]
    centres = np.column_stack([cols.ravel(), rows.ravel()]).astype(np.float64)
    return points_in_poly(centres, hull).reshape(height, width)


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """float32 (H, W) strain magnitude sqrt(ux² + vy² + ½(uy + vx)²) of a (dx, dy) flow.

    ux = ∂dx/∂x, vy = ∂dy/∂y, uy = ∂dx/∂y, vx = ∂dy/∂x (central differences). This is the magnitude of the
    symmetric strain tensor; meb's variant ½(uy² + vx²) differs on shear only.
    """
    flow = np.asarray(flow, dtype=np.float32)
    u, v = flow[..., 0], flow[..., 1]
    uy, ux = np.gradient(u)
    vy, vx = np.gradient(v)
    return np.sqrt(ux**2 + vy**2 + 0.5 * (uy + vx) ** 2).astype(np.float32)


def end_point_error(flow: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean Euclidean distance between two (dx, dy) flows, inside `mask` when given."""
    error = np.linalg.norm(np.asarray(flow, np.float32) - np.asarray(reference, np.float32), axis=-1)
    if mask is not None:
        if not mask.any():
            return float("nan")
        error = error[mask]
    return float(error.mean())


# AU regions: skin that FACS describes by appearance changes *between* dlib's 68 landmarks, where landmark
# tracks cannot see the motion. Each is a disk (or one disk per side) placed from the landmarks and sized by
# the inner-eye-corner distance d = |p42 − p39| (≈ 0.23 of the face width), so the regions scale with the
# face and need no fixed pixel sizes.
#   glabella    AU4's vertical furrows: centred between the inner brow ends (21, 22) and the inner eye
#               corners (39, 42), radius 0.4 d; it holds the nasion (27), the one landmark there.
#   cheeks      AU6's infraorbital bulge: 0.8 d below the middle of each lower lid (40–41, 46–47) along the
#               face's down direction (27 → 30) and 0.2 d away from the midline (clear of the nose wing),
#               radius 0.45 d.
#   nasolabial  AU10/12's deepened fold (and AU14's dimple region): 0.4 of the way from nose wing to mouth
#               corner (31 → 48, 35 → 54), moved 0.35 d away from the midline, radius 0.3 d.
# Every region is clipped to the landmarks' hull (face_mask): on a turned face a disk may reach past the jaw.
AU_REGIONS: tuple[str, ...] = ("glabella", "cheeks", "nasolabial")


def _disk(centre: np.ndarray, radius: float, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (cols - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= radius**2


def _outward(point: np.ndarray, midline_x: float) -> np.ndarray:
    """Unit vector along x away from the face's midline (the side `point` is on)."""
    return np.array([np.sign(point[0] - midline_x) or 1.0, 0.0])


def au_region_masks(landmarks68: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """bool (H, W) masks of the AU regions (AU_REGIONS above) and "au", their union, from 68 landmarks."""
    points = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    size = (int(shape[0]), int(shape[1]))
    d = float(np.linalg.norm(points[42] - points[39]))
    down = points[30] - points[27]
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    midline_x = float(points[27:31, 0].mean())
    glabella = _disk(points[[21, 22, 39, 42]].mean(axis=0), 0.4 * d, size)
    cheeks = np.zeros(size, dtype=bool)
    for lid in ((40, 41), (46, 47)):
        below = points[list(lid)].mean(axis=0) + 0.8 * d * down
        cheeks |= _disk(below + 0.2 * d * _outward(below, midline_x), 0.45 * d, size)
    nasolabial = np.zeros(size, dtype=bool)
    for wing, corner in ((31, 48), (35, 54)):
        fold = points[wing] + 0.4 * (points[corner] - points[wing])
        nasolabial |= _disk(fold + 0.35 * d * _outward(fold, midline_x), 0.3 * d, size)
    face = face_mask(points, size)
    masks = {"glabella": glabella & face, "cheeks": cheeks & face, "nasolabial": nasolabial & face}
    masks["au"] = masks["glabella"] | masks["cheeks"] | masks["nasolabial"]
    return masks
