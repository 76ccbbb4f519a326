"""Generators that move a target face like a source clip, found by name (a timm-style registry).

A generator spec is either a registered kind, optionally with an argument after a colon ("landmark-tps",
"copy-onset", "demo-oracle:/data/demo-corpus"), or the path of a weights file whose suffix names its loader
(".pt": an augmenter FP-FOMM checkpoint; ".pth.tar" / ".tar": FOMM's own layout). Factories are
"module:function" strings imported only when used: importing this package never loads torch or a face backend.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from augmenter.errors import UserError
from augmenter.generators.base import ClipGenerator, PreparedClip, TargetFace

LANDMARK_TPS = "landmark-tps"
COPY_ONSET = "copy-onset"
DEMO_ORACLE = "demo-oracle"
DEMO_FRESH = "demo-fresh"

# kind → "module:function"; the function is called as factory(argument, device=..., size=...), argument being
# the text after "kind:" or None.
GENERATOR_KINDS: dict[str, str] = {
    LANDMARK_TPS: "augmenter.generators.landmark_tps:build_landmark_tps",
    COPY_ONSET: "augmenter.generators.copy_onset:build_copy_onset",
    DEMO_ORACLE: "augmenter.demo.oracle:build_demo_oracle",
    DEMO_FRESH: "augmenter.demo.fresh:build_demo_fresh",
}
# weights-file suffix → "module:function", called as loader(path, device=..., size=...).
CHECKPOINT_LOADERS: dict[str, str] = {
    ".pt": "augmenter.generators.fpfomm:load_fpfomm_spec",
    ".pth.tar": "augmenter.generators.fomm:load_fomm_spec",
    ".tar": "augmenter.generators.fomm:load_fomm_spec",
}
# Kinds that need no torch on a worker (numpy / OpenCV only).
TORCH_FREE_KINDS: frozenset[str] = frozenset({LANDMARK_TPS, COPY_ONSET, DEMO_ORACLE, DEMO_FRESH})

__all__ = [
    "CHECKPOINT_LOADERS",
    "COPY_ONSET",
    "DEMO_FRESH",
    "DEMO_ORACLE",
    "GENERATOR_KINDS",
    "LANDMARK_TPS",
    "ClipGenerator",
    "PreparedClip",
    "TargetFace",
    "generator_kind_of",
    "load_generator",
]


def _resolve(target: str):  # noqa: ANN202 - a factory
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def generator_kind_of(spec: str | Path) -> str | None:
    """The registered kind a spec names ("demo-oracle:/x" → "demo-oracle"), or None for a weights file."""
    text = str(spec)
    kind = text.split(":", 1)[0]
    return kind if kind in GENERATOR_KINDS else None


def _checkpoint_loader(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(CHECKPOINT_LOADERS, key=len, reverse=True):
        if name.endswith(suffix):
            return CHECKPOINT_LOADERS[suffix]
    return None


def load_generator(spec: str | Path, device: str = "cpu", size: int | None = None) -> ClipGenerator:
    """A generator from its spec (module docstring). `size` sets a training-free kind's frame size; a
    checkpoint carries its own size and refuses another.
    """
    text = str(spec)
    kind = generator_kind_of(text)
    if kind is not None:
        argument = text.split(":", 1)[1] if ":" in text else None
        return _resolve(GENERATOR_KINDS[kind])(argument, device=device, size=size)
    path = Path(text).expanduser()
    loader = _checkpoint_loader(path)
    if loader is None:
        kinds = ", ".join(repr(k) for k in GENERATOR_KINDS)
        suffixes = ", ".join(CHECKPOINT_LOADERS)
        raise UserError(f"unknown generator {text!r}; give one of {kinds} or a weights file ({suffixes})")
    if not path.is_file():
        raise UserError(
            f"{path}: generator weights not found; train one with `augmenter train` or check the path"
        )
    return _resolve(loader)(path, device=device, size=size)
