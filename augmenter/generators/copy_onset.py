"""copy-onset: the floor control, a generator that learned nothing.

Each clip is the target face, motionless, repeated for the source clip's frame count, so it carries the
source's labels and length but none of its motion. A recognizer that gains from these clips gains from
something other than motion (more faces, more label counts); a real generator must beat this store to claim
that its motion helps.
Training-free and numpy only.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from augmenter.errors import UserError
from augmenter.generators.base import PreparedClip, TargetFace

KIND = "copy-onset"
DEFAULT_SIZE = 128


class CopyOnsetGenerator:
    """ClipGenerator whose every frame is the target image (see module doc)."""

    kind = KIND
    training_subjects: tuple[str, ...] = ()
    training_persons: tuple[str, ...] = ()
    training_free = True

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = int(size)
        # Size is left out, as for landmark-tps: the same (non-)motion at any resolution.
        settings = {"kind": KIND, "version": 1}
        self.checksum = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, H, W, 3), T the source's frame count, every frame the target image."""
        image = np.asarray(target.image, np.uint8)
        return np.repeat(image[None], len(source.frames), axis=0)


def build_copy_onset(
    argument: str | None = None, device: str = "cpu", size: int | None = None
) -> CopyOnsetGenerator:
    """The registry's factory: copy-onset at `size` (default 128); `device` is ignored (numpy only)."""
    if argument:
        raise UserError(
            f"generator copy-onset takes no argument (got {argument!r}); use --generator copy-onset"
        )
    return CopyOnsetGenerator() if size is None else CopyOnsetGenerator(size=size)
