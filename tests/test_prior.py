"""The facial prior: 18 AU points from real dlib landmarks, and a heat channel that follows the face."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from augmenter.crops import crop_and_resize, square_crop
from augmenter.face.prior import (
    AU_LANDMARKS,
    NUM_PRIOR_POINTS,
    au_points,
    au_points_normalized,
    prior_heatmap,
)
from augmenter.model.grid import normalized_to_pixels


@pytest.fixture(scope="module")
def astronaut_crop(dlib_backend) -> tuple[np.ndarray, np.ndarray]:
    """A real face cropped to 64² and its real dlib landmarks in crop pixels."""
    image = data.astronaut()
    box = dlib_backend.detect(image)
    crop = square_crop(box)
    return crop_and_resize(image, crop, 64), crop.to_crop(dlib_backend.landmarks(image, box), 64)


def test_au_points_pick_and_shift_landmarks(astronaut_crop) -> None:
    _, landmarks = astronaut_crop
    points = au_points(landmarks)
    assert points.shape == (NUM_PRIOR_POINTS, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points[: len(AU_LANDMARKS)], landmarks[list(AU_LANDMARKS)])
    half_eye = (landmarks[42, 0] - landmarks[39, 0]) / 2
    assert half_eye > 2  # a real face: the inner eye corners are apart
    np.testing.assert_allclose(points[12], landmarks[31] - [half_eye, 0], rtol=1e-6)  # nostril wing outwards
    np.testing.assert_allclose(points[15], landmarks[46] + [0, half_eye], rtol=1e-6)  # lower lid down
    np.testing.assert_allclose(points[17], landmarks[54] + [half_eye, 0], rtol=1e-6)  # mouth corner outwards


def test_au_points_vectorised_over_batch_numpy_and_torch_agree(astronaut_crop) -> None:
    _, landmarks = astronaut_crop
    batch = np.stack([landmarks, landmarks + 3.0, landmarks * 0.5])[None]  # (1, 3, 68, 2)
    numpy_points = au_points(batch)
    torch_points = au_points(torch.from_numpy(batch)).numpy()
    assert numpy_points.shape == (1, 3, 18, 2)
    np.testing.assert_allclose(numpy_points, torch_points, rtol=1e-6)
    np.testing.assert_allclose(numpy_points[0, 1], au_points(landmarks) + 3.0, rtol=1e-6)


@pytest.mark.parametrize("size", [16, 32, 96])
def test_prior_heatmap_range_and_any_resolution(astronaut_crop, size: int) -> None:
    _, landmarks = astronaut_crop
    points = au_points_normalized(landmarks, 64)[None]
    heat = prior_heatmap(points, size)
    assert heat.shape == (1, 1, size, size) and heat.dtype == torch.float32
    assert float(heat.min()) == 0.0 and float(heat.max()) == pytest.approx(1.0)
    assert 0.02 < float((heat > 0).float().mean()) < 0.9  # local bumps, not a flat map


def _heat_centroid_pixels(heat: torch.Tensor, size: int) -> np.ndarray:
    height, width = heat.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    weights = heat[0, 0] / heat.sum()
    centre = torch.stack([(weights * xs).sum(), (weights * ys).sum()])
    return normalized_to_pixels(centre, size).numpy()


def test_prior_moves_with_a_translated_face(dlib_backend, astronaut_crop) -> None:
    """Shift the real face 6 px right / 4 px down, re-detect its landmarks: the heat follows at 32² and
    64²."""
    face, landmarks = astronaut_crop
    canvas = np.pad(face, ((8, 8), (8, 8), (0, 0)), mode="edge")
    shifted = canvas[4:68, 2:66]  # content moves by (+6, +4)
    box_a = dlib_backend.detect(face)
    box_b = dlib_backend.detect(shifted)
    assert box_a is not None and box_b is not None
    before = au_points_normalized(dlib_backend.landmarks(face, box_a), 64)[None]
    after = au_points_normalized(dlib_backend.landmarks(shifted, box_b), 64)[None]
    for resolution in (32, 64):
        move = _heat_centroid_pixels(prior_heatmap(after, resolution), 64) - _heat_centroid_pixels(
            prior_heatmap(before, resolution), 64
        )
        np.testing.assert_allclose(move, [6.0, 4.0], atol=1.0)
