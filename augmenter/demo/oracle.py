"""demo-oracle: the ceiling control, the source clip's TRUE motion rendered onto the target face.

A demo clip's motion is known exactly: its plan (AUs, amplitude, timing, blink, weak AU) and head-jitter
path are recorded in the corpus's demo-truth.json, and augmenter/demo/renderer.py turns them into frames.
The oracle re-renders that motion on the target's own landmarks with the same renderer (landmark motion,
skin effects and their shading, blink, weak AU, head jitter), scaled by the ratio of the two faces'
inter-ocular distances so it moves the same share of the face. Sensor noise and lighting drift are left out:
they belong to the source recording, not to its motion. What a recognizer gains from these clips is the most
any generator could give on this corpus; a generator that learned nothing gives the copy-onset floor.

Training-free (it saw nobody) and numpy/OpenCV only, so it runs on torch-free Dask workers. Spec:
``demo-oracle:<corpus root>`` (the folder `augmenter demo-data` wrote, holding demo-truth.json).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from augmenter.demo.corpus import TRUTH_FILE, ClipTruth, read_demo_truth
from augmenter.demo.renderer import ClipPlan, inter_ocular, render_clip
from augmenter.errors import UserError
from augmenter.generators.base import PreparedClip, TargetFace

KIND = "demo-oracle"
VERSION = 1  # bump when the rendering changes what the oracle draws


def _clip_index(key: str) -> tuple[int, str] | None:
    """(subject number, clip id) of a "dataset/subject/clip_id" key, or None when it is not a demo key."""
    parts = key.split("/")
    if len(parts) < 3 or not parts[-2].isdigit():
        return None
    return int(parts[-2]), parts[-1]


def time_map(n_source: int, source_apex: int, n_plan: int, plan_apex: int) -> np.ndarray:
    """Index into the plan's frames for each source frame: onset→onset, apex→apex, offset→offset, linear
    between (the identity when the source kept every frame)."""
    index = np.arange(n_source, dtype=np.float64)
    rise = index * plan_apex / max(source_apex, 1)
    fall = plan_apex + (index - source_apex) * (n_plan - 1 - plan_apex) / max(n_source - 1 - source_apex, 1)
    mapped = np.where(index <= source_apex, rise, fall)
    return np.clip(np.rint(mapped), 0, n_plan - 1).astype(int)


class DemoOracleGenerator:
    """ClipGenerator that renders the recorded motion of a demo source clip onto the target (module doc)."""

    kind = KIND
    training_subjects: tuple[str, ...] = ()
    training_persons: tuple[str, ...] = ()
    training_free = True

    def __init__(self, corpus_root: Path, size: int | None = None) -> None:
        self.corpus_root = Path(corpus_root).resolve()
        truth_path = self.corpus_root / TRUTH_FILE
        if not truth_path.is_file():
            raise UserError(
                f"{truth_path}: demo truth not found; demo-oracle needs the folder `augmenter demo-data` "
                "wrote (--generator demo-oracle:<corpus root>)"
            )
        digest = hashlib.sha256(truth_path.read_bytes()).hexdigest()
        self.clips: dict[tuple[int, str], ClipTruth] = {
            (int(clip.subject), clip.filename): clip for clip in read_demo_truth(self.corpus_root)
        }
        corpus_size = int(read_demo_size(truth_path))
        self.size = int(size) if size is not None else corpus_size
        self.checksum = hashlib.sha256(f"{KIND} v{VERSION} {digest}".encode()).hexdigest()

    def truth_of(self, key: str) -> ClipTruth:
        """The recorded truth of a source clip key ("casme2/1/EP02_01f")."""
        index = _clip_index(key)
        clip = self.clips.get(index) if index is not None else None
        if clip is None:
            raise UserError(
                f"demo-oracle: source clip {key!r} is not in {self.corpus_root / TRUTH_FILE}; "
                "the oracle only animates clips of the demo corpus it was given"
            )
        return clip

    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, S, S, 3), T the source's frame count: the source's true motion on the target face."""
        clip = self.truth_of(source.key)
        plan = ClipPlan.from_dict(clip.plan)
        scale = inter_ocular(target.landmarks) / max(inter_ocular(np.asarray(clip.landmarks_onset)), 1e-6)
        scaled = ClipPlan.from_dict({**plan.as_dict(), "amplitude_px": plan.amplitude_px * scale})
        jitter = np.asarray(clip.global_shift, np.float32).reshape(plan.n_frames, 2) * np.float32(scale)
        frames, _ = render_clip(
            np.asarray(target.image, np.uint8),
            np.asarray(target.landmarks, np.float32),
            scaled,
            np.random.default_rng(0),
            jitter=jitter,
            photometric=False,
        )
        n_source = len(source.frames)
        if n_source == plan.n_frames:
            return frames
        return frames[time_map(n_source, int(source.apex_index), plan.n_frames, plan.apex_index)]


def read_demo_size(truth_path: Path) -> int:
    """The frame size a demo corpus was written at (its truth file's settings)."""
    return int(json.loads(Path(truth_path).read_text(encoding="utf-8"))["settings"]["size"])


def build_demo_oracle(
    argument: str | None = None, device: str = "cpu", size: int | None = None
) -> DemoOracleGenerator:
    """The registry's factory: `argument` is the demo corpus root; `device` is ignored (numpy only)."""
    if not argument:
        raise UserError(
            "generator demo-oracle needs the demo corpus root: --generator demo-oracle:/path/to/corpus"
        )
    return DemoOracleGenerator(Path(argument).expanduser(), size=size)
