"""insightface backend: SCRFD detector, 1k3d68 landmarks (68 iBUG points) and ArcFace embedding.

insightface ships no models and downloads them at run time, which fails offline and is forbidden here. We
only use a model pack already on disk (default buffalo_l under $INSIGHTFACE_HOME or ~/.insightface/models)
and load each ONNX file directly, so nothing is ever fetched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from augmenter.errors import UserError
from augmenter.face.base import FaceBox
from augmenter.face.landmarks68 import LEFT_EYE, MOUTH_LEFT_CORNER, MOUTH_RIGHT_CORNER, NOSE_TIP, RIGHT_EYE

DEFAULT_PACK = "buffalo_l"
# ONNX files of the buffalo_l pack, by role. The 1k3d68 model predicts the 68 iBUG points in iBUG order.
PACK_FILES: dict[str, str] = {
    "detection": "det_10g.onnx",
    "landmark_3d_68": "1k3d68.onnx",
    "recognition": "w600k_r50.onnx",
}
DETECTION_SIZE = (640, 640)


def default_model_root() -> Path:
    """Where insightface keeps its packs: $INSIGHTFACE_HOME/models or ~/.insightface/models."""
    home = os.environ.get("INSIGHTFACE_HOME")
    return (Path(home) if home else Path.home() / ".insightface").expanduser() / "models"


def _candidate_pack_dirs(model_root: Path | None) -> list[Path]:
    """`model_root` may be the pack itself, a `models` folder, or an insightface home holding `models/`."""
    if model_root is None:
        return [default_model_root() / DEFAULT_PACK]
    root = Path(model_root).expanduser()
    return [root, root / DEFAULT_PACK, root / "models" / DEFAULT_PACK]


def find_model_pack(model_root: Path | None = None) -> Path | None:
    """The first candidate folder holding every ONNX file we need, or None."""
    for folder in _candidate_pack_dirs(model_root):
        if all((folder / name).is_file() for name in PACK_FILES.values()):
            return folder
    return None


def _five_points(landmarks68: np.ndarray) -> np.ndarray:
    """ArcFace's alignment points (eye centres, nose tip, mouth corners) from the 68 iBUG points."""
    points = np.asarray(landmarks68, dtype=np.float32)
    return np.stack(
        [
            points[list(LEFT_EYE)].mean(axis=0),
            points[list(RIGHT_EYE)].mean(axis=0),
            points[NOSE_TIP],
            points[MOUTH_LEFT_CORNER],
            points[MOUTH_RIGHT_CORNER],
        ]
    ).astype(np.float32)


class InsightFaceBackend:
    """`FaceBackend` on a local buffalo_l pack. Embeddings are L2-normalised, so the Euclidean threshold 1.14
    equals ArcFace's usual cosine-similarity threshold 0.35 (d² = 2 − 2·cos)."""

    name = "insightface"
    identity_threshold = 1.14

    def __init__(self, model_root: Path | None = None) -> None:
        pack = find_model_pack(model_root)
        if pack is None:
            looked = _candidate_pack_dirs(model_root)[0]
            needed = ", ".join(PACK_FILES.values())
            raise UserError(
                f"{looked}: insightface model pack not found (needs {needed}); copy the {DEFAULT_PACK} pack "
                "there or set INSIGHTFACE_HOME, or use the dlib backend (--face-backend dlib)"
            )
        from insightface.model_zoo import model_zoo

        self.pack_dir = pack
        self._models = {}
        for role, file_name in PACK_FILES.items():
            model = model_zoo.get_model(str(pack / file_name), providers=["CPUExecutionProvider"])
            if model is None:
                raise UserError(f"{pack / file_name}: insightface cannot load this model; reinstall the pack")
            if role == "detection":
                model.prepare(ctx_id=-1, input_size=DETECTION_SIZE)
            else:
                model.prepare(ctx_id=-1)
            self._models[role] = model

    @staticmethod
    def _bgr(image: np.ndarray) -> np.ndarray:
        """insightface models take OpenCV BGR; our images are RGB."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image[:, :, 2::-1])

    def detect(self, image: np.ndarray) -> FaceBox | None:
        """The largest SCRFD box, or None."""
        height, width = np.asarray(image).shape[:2]
        boxes, _ = self._models["detection"].detect(self._bgr(image), input_size=DETECTION_SIZE)
        if boxes is None or len(boxes) == 0:
            return None
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        left, top, right, bottom = boxes[int(np.argmax(areas)), :4]
        return FaceBox(
            left=max(0, int(np.floor(left))),
            top=max(0, int(np.floor(top))),
            right=min(width, int(np.ceil(right))),
            bottom=min(height, int(np.ceil(bottom))),
        )

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 iBUG points (x, y) from the 1k3d68 model (its depth column is dropped)."""
        from insightface.app.common import Face

        face = Face(bbox=np.array([box.left, box.top, box.right, box.bottom], dtype=np.float32))
        points = self._models["landmark_3d_68"].get(self._bgr(image), face)
        return np.asarray(points[:, :2], dtype=np.float32)

    def embedding(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """L2-normalised ArcFace vector, aligned on five points derived from the 68 landmarks."""
        from insightface.app.common import Face

        face = Face(kps=_five_points(self.landmarks(image, box)))
        vector = np.asarray(self._models["recognition"].get(self._bgr(image), face), dtype=np.float32).ravel()
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
