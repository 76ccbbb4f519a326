"""The contract between a generator (FP-FOMM checkpoint, landmark-tps) and the stages that use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

# What a training-free generator (landmark-tps, copy-onset, demo-oracle) records as its training subjects and
# persons in a store: it saw nobody, which is not the same as an empty list (= unknown, refused when strict).
TRAINING_FREE = "training-free"


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

    kind: "fp-fomm" | "fomm" | "landmark-tps" | "copy-onset" | …; checksum: sha256 of the checkpoint (or of
    the settings for training-free generators); training_subjects: "dataset/subject" fold keys the weights saw
    and training_persons: the persons they saw, so a fold can refuse them (empty on a learned generator means
    unknown); training_free: True when nothing was learned from data (both lists empty, meaning "nobody").
    A generator may also offer `animate_many(sources, target) -> list[np.ndarray]`, the clips of several
    sources on one target with the target encoded once; `generate` calls it for pairings sharing a target.
    """

    kind: str
    checksum: str
    training_subjects: tuple[str, ...]
    training_persons: tuple[str, ...]
    training_free: bool
    size: int

    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, S, S, 3): frame t shows the target moved like source frame t relative to its onset."""
        ...
