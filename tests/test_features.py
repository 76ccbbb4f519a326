"""Flow features on real faces: direction and scale of u/v, strain, apex choice, and an honest cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

import recognition_eval.features as features
from augmenter.manifest import read_manifest
from augmenter.prepare import prepare_clip
from recognition_eval.features import (
    FeatureSettings,
    flow_planes,
    middle_index,
    real_clip_features,
    resize_planes,
    stack_planes,
    synthetic_clip_features,
)


def _face_crop(size: int = 128) -> np.ndarray:
    """The astronaut's face (public domain, shipped with scikit-image) at size²."""
    return cv2.resize(data.astronaut()[30:250, 140:360], (size, size), interpolation=cv2.INTER_AREA)


def _warp(image: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Backward-sample so content at p moves to p + (dx, dy) (first order, fine for small smooth fields)."""
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    return cv2.remap(image, cols - dx, rows - dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@pytest.fixture
def flow_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real optical-flow computations made through the features module (the real function runs)."""
    calls = [0]
    real = features.optical_flow

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "optical_flow", counting)
    return calls


def test_local_motion_survives_global_motion_removal_and_shows_in_strain() -> None:
    onset = _face_crop()
    rows, cols = np.mgrid[0:128, 0:128].astype(np.float32)
    bump = np.exp(-((cols - 64) ** 2 + (rows - 90) ** 2) / (2 * 10.0**2)).astype(np.float32)
    # The whole head shifts 3 px right, and a mouth-sized patch additionally moves 2.5 px up.
    apex = _warp(onset, np.full_like(bump, 3.0), -2.5 * bump)
    kept = flow_planes(onset, apex, "tvl1", remove_global_motion=False)
    assert np.median(kept[..., 0]) == pytest.approx(3.0, abs=0.3)
    planes = flow_planes(onset, apex, "tvl1", remove_global_motion=True)
    assert planes.shape == (128, 128, 3) and planes.dtype == np.float32
    assert abs(np.median(planes[..., 0])) < 0.2
    assert planes[85:95, 59:69, 1].mean() < -1.5  # the patch moved up (negative dy)
    assert abs(planes[10:30, 10:30, 1].mean()) < 0.5  # far from it, nothing moved
    strain = planes[..., 2]
    assert strain[70:110, 44:84].mean() > 3 * strain[5:30, 5:30].mean()


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_opencv_methods_see_the_same_motion(method: str) -> None:
    onset = _face_crop()
    rows, cols = np.mgrid[0:128, 0:128].astype(np.float32)
    bump = np.exp(-((cols - 64) ** 2 + (rows - 64) ** 2) / (2 * 14.0**2)).astype(np.float32)
    planes = flow_planes(onset, _warp(onset, 2.0 * bump, 0 * bump), method)
    assert planes[58:70, 58:70, 0].mean() > 1.0


def test_resize_scales_displacements_but_not_strain() -> None:
    planes = np.zeros((128, 128, 3), np.float32)
    planes[..., 0], planes[..., 1], planes[..., 2] = 4.0, -2.0, 0.3
    small = resize_planes(planes, 32)
    assert small.shape == (32, 32, 3)
    assert (
        np.allclose(small[..., 0], 1.0)
        and np.allclose(small[..., 1], -0.5)
        and np.allclose(small[..., 2], 0.3)
    )
    stacked = stack_planes([features.ClipFeatures("k", planes, True, False)] * 2, 28, [0, 1])
    assert stacked.shape == (2, 2, 28, 28) and np.allclose(stacked[:, 0], 4.0 * 28 / 128)


def test_real_clip_features_are_cached_and_recomputed_only_when_settings_change(
    demo_manifest: tuple[Path, Path], tmp_path: Path, flow_counter: list[int]
) -> None:
    manifest, root = demo_manifest
    row = read_manifest(manifest).iloc[0]
    settings = FeatureSettings(crop_size=64)
    first = real_clip_features(row, root, settings, tmp_path / "f", tmp_path / "p")
    assert first.computed and flow_counter[0] == 1
    second = real_clip_features(row, root, settings, tmp_path / "f", tmp_path / "p")
    assert not second.computed and flow_counter[0] == 1
    assert np.array_equal(first.planes, second.planes)
    other = real_clip_features(
        row, root, FeatureSettings(crop_size=64, method="dis"), tmp_path / "f", tmp_path / "p"
    )
    assert other.computed and flow_counter[0] == 2
    assert not np.array_equal(other.planes, first.planes)
    # The flow really is onset → annotated apex of the prepared face crop.
    clip = prepare_clip(row, root, 64, "dlib", tmp_path / "p")
    assert np.allclose(first.planes, flow_planes(clip.frames[0], clip.frames[clip.apex_index]))
    assert clip.apex_index != middle_index(len(clip.frames))  # so the next test can tell the two apart


def test_estimated_apex_uses_the_middle_frame(demo_manifest: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, root = demo_manifest
    row = read_manifest(manifest).iloc[0].copy()
    row["apex_estimated"] = True
    result = real_clip_features(row, root, FeatureSettings(crop_size=64), tmp_path / "f", tmp_path / "p")
    assert result.apex_estimated
    clip = prepare_clip(row, root, 64, "dlib", tmp_path / "p")
    assert np.allclose(
        result.planes, flow_planes(clip.frames[0], clip.frames[middle_index(len(clip.frames))])
    )


def test_synthetic_clip_features_cache_by_identity(tmp_path: Path, flow_counter: list[int]) -> None:
    onset = _face_crop(64)
    frames = np.stack(
        [onset, _warp(onset, np.full((64, 64), 0.0, np.float32), np.full((64, 64), 0.0, np.float32))]
    )
    identity = {
        "store": "s.zarr",
        "index": 0,
        "pair_id": "p0",
        "generator_checksum": "abc",
        "source_clip": "EP1",
    }
    settings = FeatureSettings(crop_size=64)
    first = synthetic_clip_features(frames, 1, identity, settings, tmp_path)
    again = synthetic_clip_features(frames, 1, identity, settings, tmp_path)
    assert first.computed and not again.computed and flow_counter[0] == 1
    moved = synthetic_clip_features(frames, 1, identity | {"generator_checksum": "def"}, settings, tmp_path)
    assert moved.computed and flow_counter[0] == 2
    # The same store path, index and checksum re-made with other pixels (say, at another size) is new.
    shifted = np.stack([onset, np.roll(onset, 1, axis=1)])
    remade = synthetic_clip_features(shifted, 1, identity, settings, tmp_path)
    assert remade.computed and flow_counter[0] == 3
    assert not np.allclose(remade.planes, first.planes)
