"""demo-fresh: the "more real data" control — NEW clips drawn from the corpus's own planner and renderer.

Why it exists. demo-oracle re-renders a source clip's exact plan on another face; for a flow recognizer that
is nearly the source clip's own flow field again, so it carries almost no new information and cannot bound
what augmentation may give. The control that can move the number is more real data: for each pairing, a new
clip of the source's AUs (new amplitude, timing, blink, weak AU, head jitter, lighting drift and sensor
noise, drawn by `plan_clip` exactly as the corpus draws its clips) on the target person's face, JPEG-coded
like the recording, then cropped like a real clip (face box of its onset frame, square crop with prepare's
margin, resized to the store size). Its label is the source clip's, since it shows the same AUs.

The gap between `demo-fresh` (ceiling) and `demo-oracle` (perfect motion transfer) is what motion transfer
leaves on the table; copy-onset is the floor. Training-free (it saw nobody); numpy, OpenCV and dlib only.
Spec: ``demo-fresh:<corpus root>``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from augmenter.demo.corpus import TRUTH_FILE, encode_jpeg, plan_clip
from augmenter.demo.oracle import DemoOracleGenerator, time_map
from augmenter.demo.renderer import ClipPlan, render_clip
from augmenter.errors import UserError
from augmenter.generators.base import PreparedClip, TargetFace

KIND = "demo-fresh"
VERSION = 1  # bump when what a fresh clip draws changes


def _jpeg_roundtrip(frame: np.ndarray) -> np.ndarray:
    """The frame as the corpus stores it: JPEG at the corpus quality, decoded again."""
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(frame), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=2)
def _corpus_faces(subjects: int, size: int) -> tuple:
    """The corpus's clean faces (before any motion), rebuilt from the same packaged photos as the corpus."""
    from augmenter.demo.faces import demo_faces
    from augmenter.face import get_face_backend

    return tuple(demo_faces(subjects, size, get_face_backend("dlib")))


class DemoFreshGenerator(DemoOracleGenerator):
    """ClipGenerator drawing a new clip of the source's AUs on the target person (module doc)."""

    kind = KIND

    def __init__(self, corpus_root: Path, size: int | None = None) -> None:
        super().__init__(corpus_root, size=size)
        truth_path = self.corpus_root / TRUTH_FILE
        self.settings = json.loads(truth_path.read_text(encoding="utf-8"))["settings"]
        digest = hashlib.sha256(truth_path.read_bytes()).hexdigest()
        self.checksum = hashlib.sha256(f"{KIND} v{VERSION} {digest}".encode()).hexdigest()
        self.identity_of = {int(c.subject): c.identity for c in self.clips.values()}

    def _face(self, target: TargetFace):  # noqa: ANN202 - a DemoFace
        """The clean corpus face of the target's subject (checked against the truth's identity)."""
        subject = target.subject.rsplit("/", 1)[-1]
        if not subject.isdigit() or int(subject) not in self.identity_of:
            raise UserError(
                f"demo-fresh: target {target.key!r} is not a subject of {self.corpus_root / TRUTH_FILE}; "
                "fresh clips are drawn for the demo corpus's own persons"
            )
        faces = _corpus_faces(int(self.settings["subjects"]), int(self.settings["size"]))
        face = faces[int(subject) - 1]
        if face.identity != self.identity_of[int(subject)]:
            raise UserError(
                f"demo-fresh: subject {subject} is {face.identity} in the installed photos but "
                f"{self.identity_of[int(subject)]} in {self.corpus_root}; the demo faces changed since the "
                "corpus was written — write it again (augmenter demo-data)"
            )
        return face

    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, S, S, 3), T the source's frame count: a new clip of the source's AUs on the target."""
        from augmenter.crops import DEFAULT_MARGIN, crop_and_resize, detect_face, square_crop
        from augmenter.face import get_face_backend

        aus = tuple(ClipPlan.from_dict(self.truth_of(source.key).plan).aus)
        face = self._face(target)
        seed = hashlib.sha256(f"{KIND} v{VERSION} {source.key} {target.key}".encode()).digest()[:8]
        rng = np.random.default_rng(int.from_bytes(seed, "little"))
        frames_range = tuple(int(v) for v in self.settings["frames"])
        plan = plan_clip(rng, aus, int(self.settings["size"]), frames_range)
        frames, _ = render_clip(face.image, face.landmarks, plan, rng)
        frames = np.stack([_jpeg_roundtrip(frame) for frame in frames])
        box = detect_face(get_face_backend("dlib"), frames[0])
        if box is None:
            raise UserError(f"demo-fresh: no face found in the fresh clip of {source.key} on {target.key}")
        crop = square_crop(box, DEFAULT_MARGIN)
        clip = np.stack([crop_and_resize(frame, crop, self.size) for frame in frames])
        return clip[time_map(len(source.frames), int(source.apex_index), plan.n_frames, plan.apex_index)]


def build_demo_fresh(
    argument: str | None = None, device: str = "cpu", size: int | None = None
) -> DemoFreshGenerator:
    """The registry's factory: `argument` is the demo corpus root; `device` is ignored (numpy only)."""
    if not argument:
        raise UserError(
            "generator demo-fresh needs the demo corpus root: --generator demo-fresh:/path/to/corpus"
        )
    return DemoFreshGenerator(Path(argument).expanduser(), size=size)
