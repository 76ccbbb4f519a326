"""Thin-plate-spline displacement fields and forward warping of images, in pixel coordinates (numpy / OpenCV).

Grid convention (the project's only one): pixel centres at integer coordinates, (x, y) = (column, row), the
same as dlib landmarks, ``cv2.remap`` and augmenter.flow; torch code converts with augmenter.model.grid
(``align_corners=True``: −1/+1 are the centres of the first/last pixels). A displacement field is float32
(..., H, W, 2) of (dx, dy): the content at (x, y) moves to (x + dx, y + dy), the meaning of a flow a → b.
"""

from __future__ import annotations

import cv2
import numpy as np


def _radial_basis(squared_distance: np.ndarray) -> np.ndarray:
    """The 2-D thin-plate kernel U = r² log r, written as ½ r² log r² (0 at r = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        values = 0.5 * squared_distance * np.log(squared_distance)
    return np.where(squared_distance > 0, values, 0.0)


def _pairwise_squared(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    difference = points[:, None, :] - centres[None, :, :]
    return np.einsum("mnc,mnc->mn", difference, difference)


def border_points(size: tuple[int, int], per_side: int = 3) -> np.ndarray:
    """float64 (4·per_side, 2) points along the image border (corners included), pinned still by the TPS
    so the background does not swing when the face moves."""
    height, width = size
    ts = np.linspace(0.0, 1.0, per_side + 1)[:-1]
    x_max, y_max = width - 1.0, height - 1.0
    top = np.stack([ts * x_max, np.zeros_like(ts)], 1)
    right = np.stack([np.full_like(ts, x_max), ts * y_max], 1)
    bottom = np.stack([(1 - ts) * x_max, np.full_like(ts, y_max)], 1)
    left = np.stack([np.zeros_like(ts), (1 - ts) * y_max], 1)
    return np.concatenate([top, right, bottom, left])


def merge_close_points(points: np.ndarray, within_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(unique points (M, 2), averaging matrix (M, N)): points closer than `within_px` become one.

    Coincident landmarks are common (a closed mouth puts inner-lip points 61–63 onto 67–65); a TPS through two
    equal points with different moves is singular and explodes. Merged points move by their members' mean.
    """
    points = np.asarray(points, dtype=np.float64)
    groups: list[list[int]] = []
    centres: list[np.ndarray] = []
    for index, point in enumerate(points):
        for group, centre in zip(groups, centres, strict=True):
            if np.linalg.norm(point - centre) < within_px:
                group.append(index)
                break
        else:
            groups.append([index])
            centres.append(point)
    merge = np.zeros((len(groups), len(points)))
    for row, group in enumerate(groups):
        merge[row, group] = 1.0 / len(group)
    return merge @ points, merge


def tps_field_operator(
    control: np.ndarray, shape: tuple[int, int], regularization: float = 0.0, merge_within_px: float = 0.75
) -> np.ndarray:
    """float64 (H·W, N): the linear map from N control-point displacements to the TPS field at each pixel.

    A TPS interpolant is linear in the values it interpolates, so one operator serves every frame and channel:
    field = operator @ displacements. Control points closer than `merge_within_px` are merged (see
    merge_close_points); `regularization` (λ on the kernel's diagonal) trades exact interpolation for
    smoothness when control points are noisy.
    """
    unique, merge = merge_close_points(control, merge_within_px)
    count = unique.shape[0]
    kernel = _radial_basis(_pairwise_squared(unique, unique)) + regularization * np.eye(count)
    affine = np.concatenate([np.ones((count, 1)), unique], axis=1)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = kernel
    system[:count, count:] = affine
    system[count:, :count] = affine.T
    # Only the columns that multiply control values are needed (the right-hand side's last 3 rows are zero).
    right_hand = np.eye(count + 3)[:, :count]
    try:
        solve = np.linalg.solve(system, right_hand)  # (M+3, M)
    except np.linalg.LinAlgError:  # e.g. all points on one line: fall back to the least-squares solution
        solve = np.linalg.lstsq(system, right_hand, rcond=None)[0]
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.column_stack([cols.ravel(), rows.ravel()]).astype(np.float64)
    basis = np.concatenate(
        [_radial_basis(_pairwise_squared(pixels, unique)), np.ones((pixels.shape[0], 1)), pixels], axis=1
    )
    return basis @ solve @ merge


def tps_displacement_fields(
    control: np.ndarray, displacements: np.ndarray, shape: tuple[int, int], regularization: float = 0.0
) -> np.ndarray:
    """float32 (T, H, W, 2) fields that move each control point by its displacement, smoothly in between.

    control: (N, 2) points (x, y); displacements: (T, N, 2) or (N, 2). One matrix product for all frames.
    """
    displacements = np.asarray(displacements, dtype=np.float64)
    single = displacements.ndim == 2
    if single:
        displacements = displacements[None]
    operator = tps_field_operator(control, shape, regularization)
    fields = np.einsum("mn,tnc->tmc", operator, displacements).reshape(displacements.shape[0], *shape, 2)
    fields = fields.astype(np.float32)
    return fields[0] if single else fields


def _pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return cols, rows


def backward_map(field: np.ndarray, iterations: int = 2) -> np.ndarray:
    """float32 (H, W, 2) offsets o with output(y) = input(y + o(y)) for a forward displacement `field`.

    Forward warping asks, for each output pixel y, which x satisfies x + D(x) = y; the fixed point
    x = y − D(x) converges in a couple of steps for smooth fields of a few pixels.
    """
    field = np.asarray(field, dtype=np.float32)
    cols, rows = _pixel_grid(field.shape[:2])
    offsets = -field
    for _ in range(iterations):
        sampled = cv2.remap(
            field,
            cols + offsets[..., 0],
            rows + offsets[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        offsets = -sampled
    return offsets


def warp_forward(image: np.ndarray, field: np.ndarray, iterations: int = 2) -> np.ndarray:
    """The image with its content moved by the forward displacement `field` (bicubic, edges replicated).

    The flow from `image` to the result is `field` (up to interpolation error), which is what scoring checks.
    """
    offsets = backward_map(field, iterations)
    cols, rows = _pixel_grid(offsets.shape[:2])
    warped = cv2.remap(
        image,
        cols + offsets[..., 0],
        rows + offsets[..., 1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return warped.reshape(image.shape)
