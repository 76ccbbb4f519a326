"""landmark-tps on a real face moved by a known smooth field: the generated motion must be that field's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from augmenter.errors import UserError
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.flow import end_point_error, face_mask, optical_flow
from augmenter.generators import load_generator
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.generators.landmark_tps import LandmarkTPSGenerator, similarity_linear_part
from augmenter.prepare import prepare_target
from augmenter.warp import tps_displacement_fields, warp_forward

SIZE = 64
FRAMES = 25
APEX = 12
# Brows up, mouth corners up and out: (landmark, direction) of AU1+2 and AU12-like bumps, 2 px at the apex.
BUMPS = ((19, (0.0, -1.0)), (24, (0.0, -1.0)), (48, (-0.6, -0.8)), (54, (0.6, -0.8)))
AMPLITUDE = 2.0


@pytest.fixture(scope="module")
def backend() -> DlibFaceBackend:
    return DlibFaceBackend()


@pytest.fixture(scope="module")
def target(backend: DlibFaceBackend) -> TargetFace:
    return prepare_target(data.astronaut(), SIZE, backend, key="astronaut", subject="images/astronaut")


def _field(points: np.ndarray, centres: np.ndarray, scale: float) -> np.ndarray:
    """The known smooth displacement at `points` (…, 2): Gaussian bumps (σ = 6 px at 64²) around landmarks."""
    out = np.zeros(points.shape, dtype=np.float64)
    sigma = 6.0 * points.dtype.type(1) * (SIZE / 64.0)
    for index, direction in BUMPS:
        weight = np.exp(-((points - centres[index]) ** 2).sum(-1) / (2 * sigma**2))
        out += scale * weight[..., None] * np.asarray(direction)
    return out


def _synthetic_clip(target: TargetFace) -> tuple[PreparedClip, np.ndarray]:
    """The target moved by the known field along a rise-and-fall profile; its landmarks moved exactly."""
    landmarks0 = target.landmarks.astype(np.float64)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    grid = np.stack([cols, rows], -1).astype(np.float64)
    profile = np.sin(np.linspace(0, np.pi, FRAMES)) ** 2  # 0 at onset, 1 at the apex (frame 12)
    truth = _field(grid, landmarks0, AMPLITUDE).astype(np.float32)
    frames = np.stack([warp_forward(target.image, truth * p) for p in profile])
    tracks = np.stack([landmarks0 + _field(landmarks0, landmarks0, AMPLITUDE) * p for p in profile])
    return PreparedClip("synthetic/astro/au12", frames, tracks.astype(np.float32), APEX), truth


@pytest.mark.parametrize("tracking", ["dis", "landmarks"])
def test_generated_motion_recovers_the_known_field(target: TargetFace, tracking: str) -> None:
    """Default DIS tracking reads the motion from the frames; "landmarks" uses the (here exact) tracks."""
    clip, truth = _synthetic_clip(target)
    generator = LandmarkTPSGenerator(size=SIZE, tracking=tracking)
    generated = generator.animate(clip, target)
    assert generated.shape == clip.frames.shape and generated.dtype == np.uint8
    np.testing.assert_array_equal(generated[0], target.image)  # onset is the target itself
    mask = face_mask(target.landmarks, (SIZE, SIZE))
    generated_flow = optical_flow(generated[0], generated[APEX])
    real_flow = optical_flow(clip.frames[0], clip.frames[APEX])
    zero = np.zeros_like(truth)
    error = end_point_error(generated_flow, truth, mask)
    assert error < 0.5 * end_point_error(zero, truth, mask), error
    # As close to the truth as TV-L1 on the real clip itself, and close to that real flow.
    assert error < end_point_error(real_flow, truth, mask) + 0.15
    assert end_point_error(generated_flow, real_flow, mask) < 0.4 * end_point_error(zero, real_flow, mask)
    # The motion rises and falls with the source: apex frame differs most from the onset.
    change = np.abs(generated.astype(np.float32) - generated[0]).mean(axis=(1, 2, 3))
    assert int(np.argmax(change)) in (APEX - 1, APEX, APEX + 1) and change[-1] < 0.2 * change[APEX]


def test_motion_is_scaled_to_a_larger_target(backend: DlibFaceBackend, target: TargetFace) -> None:
    clip, _ = _synthetic_clip(target)
    larger = prepare_target(data.astronaut(), 96, backend, key="astronaut96", subject="images/astronaut")
    generator = LandmarkTPSGenerator(size=96, tracking="landmarks")
    moves = generator.target_displacements(clip, larger)
    source_moves = clip.landmarks[APEX] - clip.landmarks[0]
    ratio = np.linalg.norm(moves[APEX, 54]) / np.linalg.norm(source_moves[54])
    assert ratio == pytest.approx(1.5, rel=0.05)  # 96 / 64
    fields = generator.displacement_fields(clip, larger)
    assert fields.shape == (FRAMES, 96, 96, 2)
    assert np.abs(fields[0]).max() < 1e-6  # the onset is the target itself
    corners = fields[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.abs(corners).max() < 1e-6  # pinned border points stay still


def test_jitter_alone_does_not_move_the_face(target: TargetFace) -> None:
    # 0.06 px at 64² ≈ 0.12 px at 128²: the per-frame jitter of prepare_clip's landmarks on still skin.
    rng = np.random.default_rng(3)
    tracks = target.landmarks[None] + rng.normal(0, 0.06, (FRAMES, 68, 2)).astype(np.float32)
    clip = PreparedClip("still", np.repeat(target.image[None], FRAMES, 0), tracks, APEX)
    # Flow tracking ignores landmark jitter: the frames do not move.
    assert np.abs(LandmarkTPSGenerator(size=SIZE).displacement_fields(clip, target)).max() < 0.05
    # dlib-style tracks need the smoothing and the dead-band.
    smoothed = LandmarkTPSGenerator(SIZE, tracking="landmarks", sigma_frames=2.0, dead_band_px=0.5)
    assert np.abs(smoothed.displacement_fields(clip, target)).max() < 0.05
    raw = LandmarkTPSGenerator(SIZE, tracking="landmarks", sigma_frames=0.0, dead_band_px=0.0)
    assert np.abs(raw.displacement_fields(clip, target)).max() > 0.1


def test_identity_settings_and_specs(tmp_path: Path) -> None:
    generator = load_generator("landmark-tps")
    assert generator.kind == "landmark-tps" and generator.training_subjects == () and generator.size == 128
    assert len(generator.checksum) == 64
    assert LandmarkTPSGenerator(size=64).checksum == generator.checksum  # size is not a motion setting
    assert LandmarkTPSGenerator(dead_band_px=0.3).checksum != generator.checksum
    assert LandmarkTPSGenerator(tracking="landmarks").checksum != generator.checksum
    with pytest.raises(ValueError, match="unknown tracking"):
        LandmarkTPSGenerator(tracking="magic")
    with pytest.raises(UserError, match="unknown generator"):
        load_generator("fomm-magic")
    with pytest.raises(UserError, match="weights not found"):
        load_generator(tmp_path / "missing.pt")


def test_similarity_linear_part_recovers_scale_and_rotation() -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 50, (68, 2))
    angle, scale = 0.3, 1.7
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(similarity_linear_part(source, source @ linear.T + 5.0), linear, atol=1e-9)


def test_tps_survives_coincident_control_points() -> None:
    """A closed mouth puts inner-lip landmarks on top of each other; their moves may differ."""
    control = np.array([[5.0, 5.0], [20.0, 8.0], [12.0, 25.0], [12.0, 25.0], [28.0, 28.0]])
    moves = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    field = tps_displacement_fields(control, moves, (32, 32))
    np.testing.assert_allclose(field[25, 12], [0.5, 0.5], atol=1e-6)  # the mean of the two moves
    assert np.abs(field).max() < 1.5


def test_tps_interpolates_control_points_exactly() -> None:
    control = np.array([[5.0, 5.0], [20.0, 8.0], [12.0, 25.0], [28.0, 28.0], [3.0, 30.0]])
    moves = np.array([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5], [0.0, 0.0], [-1.0, 0.0]])
    field = tps_displacement_fields(control, moves, (32, 32))
    for (x, y), move in zip(control.astype(int), moves, strict=True):
        np.testing.assert_allclose(field[y, x], move, atol=1e-6)
