"""The face-analysis contract every backend (dlib, insightface) fulfils."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class FaceBox:
    """Pixel box, right/bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


class FaceBackend(Protocol):
    """Detect the main face, its 68 iBUG landmarks and an identity embedding.

    Images are RGB uint8 (H, W, 3). Landmarks are float32 (68, 2), (x, y) pixels in the image given.
    """

    name: str
    identity_threshold: float  # embedding distance under which two faces are the same person

    def detect(self, image: np.ndarray) -> FaceBox | None:
        """The largest face, or None."""
        ...

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray: ...

    def embedding(self, image: np.ndarray, box: FaceBox) -> np.ndarray: ...
