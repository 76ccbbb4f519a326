"""Face backends on real photos shipped in packages (skimage's astronaut, insightface's Tom Hanks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from augmenter.errors import UserError
from augmenter.face import get_face_backend, identity_distance
from augmenter.face.base import FaceBox
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.face.landmarks68 import LEFT_EYE, MOUTH_CORNERS, NOSE_TIP, RIGHT_EYE


def _tom_hanks() -> np.ndarray:
    folder = Path(next(iter(importlib.util.find_spec("insightface").submodule_search_locations)))
    image = cv2.imread(str(folder / "data" / "images" / "Tom_Hanks_54745.png"))
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_dlib_detects_the_astronaut_not_her_suit(dlib_backend: DlibFaceBackend) -> None:
    image = skimage.data.astronaut()
    box = dlib_backend.detect(image)
    assert box is not None
    # Her face is around (x 220, y 120); the suit's false detection sits lower, around y 380.
    assert box.left < 220 < box.right and box.top < 120 < box.bottom
    assert 70 <= box.width <= 130
    points = dlib_backend.landmarks(image, box)
    assert points.shape == (68, 2) and points.dtype == np.float32
    slack = 0.15 * box.width  # the jaw may sit a little outside HOG's box
    assert (points[:, 0] > box.left - slack).all() and (points[:, 0] < box.right + slack).all()
    assert (points[:, 1] > box.top - slack).all() and (points[:, 1] < box.bottom + slack).all()
    eyes_y = points[list(LEFT_EYE) + list(RIGHT_EYE), 1].mean()
    assert eyes_y < points[NOSE_TIP, 1] < points[list(MOUTH_CORNERS), 1].mean()
    assert points[list(LEFT_EYE), 0].mean() < points[list(RIGHT_EYE), 0].mean()


def test_identity_distance_separates_people(dlib_backend: DlibFaceBackend) -> None:
    astronaut = skimage.data.astronaut()
    shifted = np.clip(np.roll(astronaut, (3, 2), axis=(0, 1)).astype(np.int16) + 15, 0, 255).astype(np.uint8)
    tom = _tom_hanks()
    embeddings = []
    for image in (astronaut, shifted, tom):
        box = dlib_backend.detect(image)
        assert box is not None
        embeddings.append(dlib_backend.embedding(image, box))
    assert embeddings[0].shape == (128,)
    same = identity_distance(embeddings[0], embeddings[1])
    different = identity_distance(embeddings[0], embeddings[2])
    assert same < dlib_backend.identity_threshold == 0.6 < different


def test_landmarks_on_a_tight_64px_crop_match_full_resolution(dlib_backend: DlibFaceBackend) -> None:
    image = skimage.data.astronaut()
    box = dlib_backend.detect(image)
    reference = dlib_backend.landmarks(image, box)
    crop = cv2.resize(
        image[box.top : box.bottom, box.left : box.right], (64, 64), interpolation=cv2.INTER_AREA
    )
    expected = (reference - np.array([box.left, box.top], np.float32)) * (64.0 / box.width)
    for crop_box in (dlib_backend.detect_or_whole(crop), FaceBox(0, 0, 64, 64)):
        points = dlib_backend.landmarks(crop, crop_box)
        error = np.linalg.norm(points - expected, axis=1)
        assert np.median(error) < 1.5, crop_box  # measured 0.7 px (detected box) and 1.3 px (whole crop)
        assert error.max() < 8.0


def test_backend_is_loaded_once_per_process() -> None:
    assert get_face_backend("dlib") is get_face_backend("dlib")


def test_insightface_without_models_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=str(tmp_path)) as error:
        get_face_backend("insightface", model_root=tmp_path)
    assert "\n" not in str(error.value) and "buffalo_l" in str(error.value)
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match=str(tmp_path / "home" / "models" / "buffalo_l")):
        get_face_backend("insightface")


def test_auto_falls_back_to_dlib_without_insightface_models(tmp_path: Path) -> None:
    assert get_face_backend("auto", model_root=tmp_path) is get_face_backend("dlib")


def test_unknown_backend_is_a_user_error() -> None:
    with pytest.raises(UserError, match="mediapipe"):
        get_face_backend("mediapipe")
