"""Face analysis backends: dlib (offline default) and insightface (when its model pack is installed).

Every backend returns embeddings compared by Euclidean distance against its own `identity_threshold`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from augmenter.errors import UserError
from augmenter.face.base import FaceBackend, FaceBox

BACKEND_NAMES: tuple[str, ...] = ("auto", "dlib", "insightface")

__all__ = ["BACKEND_NAMES", "FaceBackend", "FaceBox", "get_face_backend", "identity_distance"]


def get_face_backend(name: str = "auto", model_root: Path | None = None) -> FaceBackend:
    """The named backend, loaded once per process (loading dlib's models takes about a second).

    "auto" picks insightface when its model pack exists under `model_root` (default: $INSIGHTFACE_HOME or
    ~/.insightface, pack buffalo_l), else dlib. `model_root` only matters for insightface.
    """
    if name not in BACKEND_NAMES:
        raise UserError(f"unknown face backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    resolved_root = None if model_root is None else Path(model_root).expanduser().resolve()
    return _load_backend(name, resolved_root)


@functools.lru_cache(maxsize=8)
def _load_backend(name: str, model_root: Path | None) -> FaceBackend:
    from augmenter.face import insightface_backend

    if name == "auto":
        name = "insightface" if insightface_backend.find_model_pack(model_root) is not None else "dlib"
    if name == "insightface":
        return insightface_backend.InsightFaceBackend(model_root)
    return _dlib_backend()


@functools.lru_cache(maxsize=1)
def _dlib_backend() -> FaceBackend:
    """One dlib backend per process whatever `model_root` was asked (it only concerns insightface)."""
    from augmenter.face.dlib_backend import DlibFaceBackend

    return DlibFaceBackend()


def identity_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Euclidean distance between two embeddings of the same backend; compare with `identity_threshold`."""
    return float(np.linalg.norm(np.asarray(first, np.float32) - np.asarray(second, np.float32)))
