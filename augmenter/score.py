"""Generator scores by self-reenactment: animate each held-out clip's own onset frame with its own motion.

The real clip is then the ground truth of the generated one, so appearance (L1), geometry (AKD), identity
(AED) and — what matters for micro-expressions — motion (flow EPE / cosine, onset → apex inside the face) can
be compared directly. Every score is reported beside "copy-onset" (the onset frame repeated, i.e. no motion),
the floor a generator must beat: ME motion is so small that L1 alone rewards doing nothing.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from augmenter.errors import UserError
from augmenter.face.base import FaceBackend, FaceBox
from augmenter.flow import FlowMethod, end_point_error, face_mask, optical_flow
from augmenter.generators import ClipGenerator, PreparedClip, TargetFace, load_generator
from augmenter.manifest import read_manifest, row_fold_key
from augmenter.prepare import DEFAULT_MARGIN, prepare_clip, select_subjects

METRICS: tuple[str, ...] = ("l1", "akd", "aed", "flow_epe", "flow_cos")
# Pixels whose real flow is under this are left out of the cosine: their direction is TV-L1 noise.
COSINE_MIN_FLOW_PX = 0.2
COPY_ONSET = "copy-onset"


def crop_face_box(size: int, margin: float = DEFAULT_MARGIN) -> FaceBox:
    """The face box inside a prepared crop: prepare_clip grew the detected box by `margin` on every side."""
    side = size / (1.0 + 2.0 * margin)
    low = int(round((size - side) / 2.0))
    return FaceBox(low, low, size - low, size - low)


def flow_cosine(
    flow: np.ndarray, reference: np.ndarray, mask: np.ndarray, min_px: float = COSINE_MIN_FLOW_PX
) -> float:
    """Mean cosine similarity of two flows where the reference moves more than `min_px` inside `mask`.

    A zero flow scores 0 there (no direction is no agreement); NaN when the reference barely moves anywhere.
    """
    reference_length = np.linalg.norm(reference, axis=-1)
    where = mask & (reference_length > min_px)
    if not where.any():
        return float("nan")
    length = np.linalg.norm(flow, axis=-1)
    dot = (flow[..., 0] * reference[..., 0] + flow[..., 1] * reference[..., 1])[where]
    denominator = (length * reference_length)[where]
    cosine = np.divide(dot, denominator, out=np.zeros_like(dot), where=denominator > 1e-8)
    return float(cosine.mean())


def _landmark_tracks(backend: FaceBackend, frames: np.ndarray, box: FaceBox) -> np.ndarray:
    return np.stack([backend.landmarks(frame, box) for frame in frames]).astype(np.float32)


def score_clip(
    generated: np.ndarray,
    clip: PreparedClip,
    backend: FaceBackend,
    margin: float = DEFAULT_MARGIN,
    flow_method: FlowMethod = "tvl1",
) -> dict[str, dict[str, float]]:
    """Scores of one generated clip and of copy-onset against the real `clip` (same frame count and size)."""
    real = clip.frames
    if generated.shape != real.shape:
        raise ValueError(f"{clip.key}: generated clip {generated.shape} does not match the real {real.shape}")
    apex = clip.apex_index
    copy = np.broadcast_to(real[:1], real.shape)
    box = crop_face_box(real.shape[1], margin)
    # Landmarks and embeddings are measured the same way (same box, same resolution) on real and generated
    # frames, so detector noise is shared rather than counted as an error of the generator.
    real_tracks = _landmark_tracks(backend, real, box)
    generated_tracks = _landmark_tracks(backend, generated, box)
    real_apex_identity = backend.embedding(real[apex], box)
    real_flow = optical_flow(real[0], real[apex], flow_method)
    generated_flow = optical_flow(generated[0], generated[apex], flow_method)
    mask = face_mask(clip.landmarks[0], real.shape[1:3])
    zero_flow = np.zeros_like(real_flow)

    def l1(frames: np.ndarray) -> float:
        return float(np.abs(frames.astype(np.float32) - real.astype(np.float32)).mean() / 255.0)

    def akd(tracks: np.ndarray) -> float:
        return float(np.linalg.norm(tracks - real_tracks, axis=-1).mean())

    def aed(frame: np.ndarray) -> float:
        return float(np.linalg.norm(backend.embedding(frame, box) - real_apex_identity))

    return {
        "generator": {
            "l1": l1(generated),
            "akd": akd(generated_tracks),
            "aed": aed(generated[apex]),
            "flow_epe": end_point_error(generated_flow, real_flow, mask),
            "flow_cos": flow_cosine(generated_flow, real_flow, mask),
        },
        COPY_ONSET: {
            "l1": l1(copy),
            "akd": akd(np.broadcast_to(real_tracks[:1], real_tracks.shape)),
            "aed": aed(real[0]),
            "flow_epe": end_point_error(zero_flow, real_flow, mask),
            "flow_cos": flow_cosine(zero_flow, real_flow, mask),
        },
    }


def _mean_scores(per_clip: list[dict[str, float]], name: str) -> dict[str, float | int | str]:
    summary: dict[str, float | int | str] = {"name": name}
    for metric in METRICS:
        values = np.array([clip[metric] for clip in per_clip], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[metric] = float(finite.mean()) if finite.size else float("nan")
    summary["n_clips"] = len(per_clip)
    return summary


def _write_json_atomic(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: object) -> object:
    """NaN is not JSON: write null instead, so every JSON reader can load the scores."""
    return None if isinstance(value, float) and math.isnan(value) else value


def score_generator(
    generator_spec: str | Path | ClipGenerator,
    manifest_path: str | Path,
    root: str | Path,
    subjects: Iterable[str] | None = None,
    size: int | None = None,
    backend: FaceBackend | str = "dlib",
    device: str = "cpu",
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    flow_method: FlowMethod = "tvl1",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Self-reenactment scores of a generator and of copy-onset over a manifest's clips (held-out subjects).

    `generator_spec`: "landmark-tps", a .pt checkpoint, or a ready ClipGenerator. `subjects` as in the
    manifest's subject column ("1", "006") or fold keys ("casme2/1"); default all. `size` defaults to the
    checkpoint's own size (landmark-tps: 128). Returns (and with `out`, writes atomically) the JSON document
    {"generator": {name, l1, akd, aed, flow_epe, flow_cos, n_clips}, "copy_onset": {…}}; means over clips,
    l1 on a [0, 1] scale, akd and flow_epe in pixels of the size² crop, aed in the backend's embedding units.
    """
    if isinstance(backend, str):
        from augmenter.face import get_face_backend

        backend = get_face_backend(backend)
    if isinstance(generator_spec, str | Path):
        name = str(generator_spec)
        generator = load_generator(generator_spec, device=device, size=size)
    else:
        generator = generator_spec
        name = generator.kind
    size = generator.size if size is None else int(size)
    manifest = read_manifest(manifest_path)
    chosen = select_subjects(manifest, subjects)
    if chosen.empty:
        known = ", ".join(sorted(set(manifest["subject"].astype(str))))
        raise UserError(
            f"{manifest_path}: no clips of subjects {sorted(subjects or [])}; the manifest has {known}"
        )
    leaked = sorted({row_fold_key(row) for _, row in chosen.iterrows()} & set(generator.training_subjects))
    if leaked:
        raise UserError(
            f"{name}: was trained on {', '.join(leaked)}, which are scored here; score held-out subjects only"
        )
    per_clip: list[dict[str, dict[str, float]]] = []
    for index, (_, row) in enumerate(chosen.iterrows()):
        clip = prepare_clip(row, root, size, backend, cache_dir=cache_dir)
        target = TargetFace(clip.key, row_fold_key(row), clip.frames[0], clip.landmarks[0])
        generated = generator.animate(clip, target)
        per_clip.append(score_clip(generated, clip, backend, flow_method=flow_method))
        if progress is not None:
            progress(index + 1, len(chosen))
    document = {
        "generator": _mean_scores([c["generator"] for c in per_clip], name),
        "copy_onset": _mean_scores([c[COPY_ONSET] for c in per_clip], COPY_ONSET),
    }
    if out is not None:
        safe = {part: {k: _json_safe(v) for k, v in scores.items()} for part, scores in document.items()}
        _write_json_atomic(Path(out), safe)
    return document
