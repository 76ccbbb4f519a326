"""Generators that move a target face like a source clip: FP-FOMM checkpoints and training-free landmark-tps.

Implementations are imported lazily inside `load_generator`, so importing this package (e.g. for the contract
in base.py) never loads torch or the face backends.
"""

from __future__ import annotations

from pathlib import Path

from augmenter.errors import UserError
from augmenter.generators.base import ClipGenerator, PreparedClip, TargetFace

LANDMARK_TPS = "landmark-tps"

__all__ = ["LANDMARK_TPS", "ClipGenerator", "PreparedClip", "TargetFace", "load_generator"]


def load_generator(spec: str | Path, device: str = "cpu", size: int | None = None) -> ClipGenerator:
    """A generator from its spec: "landmark-tps", or the path of an FP-FOMM .pt checkpoint.

    `size` sets landmark-tps' frame size (any size works; default 128); a checkpoint carries its own size.
    """
    text = str(spec)
    if text == LANDMARK_TPS:
        from augmenter.generators.landmark_tps import LandmarkTPSGenerator

        return LandmarkTPSGenerator() if size is None else LandmarkTPSGenerator(size=size)
    path = Path(text).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise UserError(f"{path}: generator checkpoint not found; train one with `augmenter train`")
        from augmenter.generators.fpfomm import load_fpfomm

        generator = load_fpfomm(path, device)
        if size is not None and generator.size != size:
            raise UserError(
                f"{path}: checkpoint was trained at {generator.size}px but size {size} was asked; "
                f"use --size {generator.size} or another checkpoint"
            )
        return generator
    raise UserError(f"unknown generator {text!r}; give {LANDMARK_TPS!r} or the path of a .pt checkpoint")
