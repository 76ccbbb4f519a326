"""The contract between a generator (FP-FOMM checkpoint, landmark-tps) and the stages that use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PreparedClip:
    """A clip cropped to the face box of its onset frame and resized to the model size.

    frames: uint8 (T, S, S, 3) RGB, onset first, offset last.
    landmarks: float32 (T, 68, 2) per-frame landmarks in crop pixel coordinates (x, y).
    apex_index: index of the apex inside frames.
    """

    key: str
    frames: np.ndarray
    landmarks: np.ndarray
    apex_index: int


@dataclass(frozen=True)
class TargetFace:
    """A still face to animate: uint8 (S, S, 3) RGB crop and its float32 (68, 2) landmarks in crop pixels."""

    key: str
    subject: str
    image: np.ndarray
    landmarks: np.ndarray


class ClipGenerator(Protocol):
    """Moves a target face with the motion of a source clip.

    kind: "fp-fomm" | "landmark-tps"; checksum: sha256 of the checkpoint (or of the settings for training-free
    generators); training_subjects: "dataset/subject" ids the weights saw, so a LOSO fold can refuse them.
    """

    kind: str
    checksum: str
    training_subjects: tuple[str, ...]
    size: int

    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, S, S, 3): frame t shows the target moved like source frame t relative to its onset."""
        ...
