"""Flow conventions on a real face: known translations are recovered with the right sign by every method."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import data, transform

from augmenter.flow import FLOW_METHODS, end_point_error, face_mask, optical_flow, optical_strain


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    """The astronaut's face (a real, public-domain photo) at 64², float RGB in [0, 255]."""
    face = data.astronaut()[30:230, 140:340]
    return transform.resize(face, (64, 64), anti_aliasing=True).astype(np.float32) * 255.0


def _translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Content at (x, y) moves to (x + dx, y + dy): ndimage.shift's output[y, x] = input[y - dy, x - dx]."""
    moved = np.stack([ndimage.shift(image[..., c], (dy, dx), order=3, mode="nearest") for c in range(3)], -1)
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", FLOW_METHODS)
@pytest.mark.parametrize("shift", [(0.5, 0.0), (1.0, -0.5), (-2.0, 1.5)])
def test_translation_recovered_with_sign(
    astronaut_face: np.ndarray, method: str, shift: tuple[float, float]
) -> None:
    onset = np.clip(np.rint(astronaut_face), 0, 255).astype(np.uint8)
    moved = _translate(astronaut_face, *shift)
    flow = optical_flow(onset, moved, method=method)
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    inner = flow[8:-8, 8:-8].reshape(-1, 2)
    median = np.median(inner, axis=0)
    np.testing.assert_allclose(median, shift, atol=0.1)
    # The reverse pair reads the opposite displacement.
    back = np.median(optical_flow(moved, onset, method=method)[8:-8, 8:-8].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(back, -np.asarray(shift), atol=0.1)


def test_identical_frames_give_near_zero_flow(astronaut_face: np.ndarray) -> None:
    frame = np.clip(np.rint(astronaut_face), 0, 255).astype(np.uint8)
    for method in FLOW_METHODS:
        assert np.abs(optical_flow(frame, frame, method=method)).mean() < 0.02, method


def test_unknown_method_rejected(astronaut_face: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown flow method"):
        optical_flow(astronaut_face, astronaut_face, method="lucas")  # type: ignore[arg-type]


def test_face_mask_is_hull_of_points() -> None:
    square = np.array([[10, 10], [30, 10], [30, 20], [10, 20], [20, 15]], dtype=np.float32)  # one inner point
    mask = face_mask(np.tile(square, (14, 1))[:68], (40, 50))
    assert mask.shape == (40, 50)
    assert mask[15, 20] and mask[11, 11] and not mask[5, 20] and not mask[15, 35]
    assert 180 <= mask.sum() <= 231  # 21×11 pixel centres on/inside the rectangle
    assert not face_mask(np.zeros((68, 2)), (8, 8)).any()  # degenerate landmarks: empty, not an error


def test_optical_strain_of_linear_fields() -> None:
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    stretch = np.stack([0.1 * xs, np.zeros_like(xs)], -1)  # ux = 0.1
    np.testing.assert_allclose(optical_strain(stretch), 0.1, atol=1e-5)
    rotation = np.stack([-0.1 * ys, 0.1 * xs], -1)  # uy = -vx: rigid rotation has no strain
    np.testing.assert_allclose(optical_strain(rotation), 0.0, atol=1e-5)
    shear = np.stack([0.1 * ys, 0.1 * xs], -1)  # uy = vx = 0.1 → sqrt(½ · 0.2²)
    np.testing.assert_allclose(optical_strain(shear), np.sqrt(0.5) * 0.2, atol=1e-5)


def test_end_point_error_masks() -> None:
    flow = np.zeros((4, 4, 2), np.float32)
    truth = np.zeros((4, 4, 2), np.float32)
    truth[0, 0] = (3.0, 4.0)
    assert end_point_error(flow, truth) == pytest.approx(5.0 / 16)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert end_point_error(flow, truth, mask) == pytest.approx(5.0)
    assert np.isnan(end_point_error(flow, truth, np.zeros((4, 4), bool)))
