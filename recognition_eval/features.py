"""Recognition features: onset→apex optical flow (u, v) and optical strain on the face crop, cached per clip.

Real clips go through augmenter.prepare.prepare_clip (one face box per clip, square crop, cached); synthetic
clips are already face crops in the Zarr store (onset = frame 0, apex = the store's apex_index). Flow is
computed once at the crop size (`FeatureSettings.crop_size`) and cached as float32 (crop, crop, 3) planes (u,
v, strain); each recognizer then resizes the planes to its own input (`resize_planes`), scaling displacements
with the image so a flow stays in pixels of the resized map. Strain is a ratio of displacements to distances,
so it is resized without scaling.

The cache key holds the clip key, the manifest row, the frame files' sizes and mtimes and every setting, so a
changed file or setting recomputes and an unchanged one never does. Files are written atomically (temp +
rename).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from augmenter.cache import atomic_savez, load_npz
from augmenter.crops import DEFAULT_MARGIN
from augmenter.flow import FLOW_METHODS, optical_flow, optical_strain
from augmenter.manifest import clip_key, list_frames
from augmenter.prepare import prepare_clip

# Bump when the meaning of cached planes changes, so stale files are ignored rather than misread.
FEATURE_CACHE_VERSION = 1


@dataclass(frozen=True)
class FeatureSettings:
    """How flow features are computed; every field is part of the cache key.

    method: tvl1 (default, the literature's), farneback or dis.
    crop_size: side of the face crop the flow is computed on (prepare_clip's size).
    backend: face backend name for the crop (dlib offline).
    remove_global_motion: subtract the crop's median flow, so a small head shift between onset and apex does
        not drown the facial motion (micro-expressions move a few pixels; head jitter can move as much).
    """

    method: str = "tvl1"
    crop_size: int = 128
    backend: str = "dlib"
    margin: float = DEFAULT_MARGIN
    remove_global_motion: bool = True

    def __post_init__(self) -> None:
        if self.method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {self.method!r}; choose one of {', '.join(FLOW_METHODS)}")


@dataclass(frozen=True)
class ClipFeatures:
    """The (crop, crop, 3) float32 planes (u, v, strain) of one clip and how they were obtained."""

    key: str
    planes: np.ndarray
    computed: bool  # False = read from the cache (no face or flow work was done)
    apex_estimated: bool


def flow_planes(
    onset: np.ndarray, apex: np.ndarray, method: str = "tvl1", remove_global_motion: bool = True
) -> np.ndarray:
    """float32 (H, W, 3): flow (u = dx, v = dy) from onset to apex and its strain magnitude."""
    flow = optical_flow(onset, apex, method=method)  # type: ignore[arg-type]
    if remove_global_motion:
        flow = flow - np.median(flow.reshape(-1, 2), axis=0)
    strain = optical_strain(flow)
    return np.concatenate([flow, strain[..., None]], axis=-1).astype(np.float32)


def resize_planes(planes: np.ndarray, size: int) -> np.ndarray:
    """float32 (size, size, 3): planes area-resampled to `size`; u and v scaled by size / crop side."""
    planes = np.asarray(planes, dtype=np.float32)
    side = planes.shape[0]
    if side == size:
        return planes.copy()
    interpolation = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    resized = cv2.resize(planes, (size, size), interpolation=interpolation).astype(np.float32)
    resized[..., :2] *= size / side
    return resized


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _cache_file(cache_dir: Path, label: str, payload: dict) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
    return cache_dir / f"flow-{safe}-{_digest(payload)}.npz"


def middle_index(n_frames: int) -> int:
    """The frame that stands in for an unknown apex (SMIC): the middle of onset..offset."""
    return (n_frames - 1) // 2


def real_clip_features(
    row: pd.Series | dict,
    root: str | Path,
    settings: FeatureSettings,
    cache_dir: str | Path,
    prepare_cache_dir: str | Path | None = None,
) -> ClipFeatures:
    """Flow planes of a manifest clip: face crop by prepare_clip, onset → apex (middle frame if estimated)."""
    key = clip_key(row)
    estimated = str(row.get("apex_estimated", False)).lower() in ("true", "1")
    stamps = []
    for _, path in list_frames(row, root):
        stat = path.stat()
        stamps.append([path.name, stat.st_size, stat.st_mtime_ns])
    payload = {
        "version": FEATURE_CACHE_VERSION,
        "kind": "real",
        "row": {k: str(v) for k, v in dict(row).items()},
        "settings": asdict(settings),
        "files": stamps,
    }
    path = _cache_file(Path(cache_dir), key, payload)
    cached = load_npz(path, ("planes",))
    if cached is not None:
        return ClipFeatures(key, cached["planes"], computed=False, apex_estimated=estimated)
    clip = prepare_clip(
        row, root, settings.crop_size, settings.backend, prepare_cache_dir, margin=settings.margin
    )
    apex_index = middle_index(len(clip.frames)) if estimated else clip.apex_index
    planes = flow_planes(
        clip.frames[0], clip.frames[apex_index], settings.method, settings.remove_global_motion
    )
    atomic_savez(path, planes=planes)
    return ClipFeatures(key, planes, computed=True, apex_estimated=estimated)


def synthetic_clip_features(
    frames: np.ndarray, apex_index: int, identity: dict, settings: FeatureSettings, cache_dir: str | Path
) -> ClipFeatures:
    """Flow planes of a synthetic clip (a face crop already): frame 0 → apex_index, resized to crop_size.

    `identity` names the clip (store path, index, generator checksum …); the cache key also holds a digest
    of the two frames the flow is computed from, so a store re-made at the same path with other pixels
    (another size, another rendering) never reuses stale planes.
    """
    onset, apex = np.asarray(frames[0]), np.asarray(frames[int(apex_index)])
    pixels = hashlib.sha256(onset.tobytes() + apex.tobytes() + str(onset.shape).encode()).hexdigest()[:20]
    payload = {
        "version": FEATURE_CACHE_VERSION,
        "kind": "synthetic",
        "id": identity,
        "pixels": pixels,
        "settings": asdict(settings),
    }
    label = "syn-" + str(identity.get("source_clip", "")) + "-" + str(identity.get("index", ""))
    path = _cache_file(Path(cache_dir), label, payload)
    cached = load_npz(path, ("planes",))
    if cached is not None:
        return ClipFeatures(label, cached["planes"], computed=False, apex_estimated=False)
    if onset.shape[0] != settings.crop_size:
        side = settings.crop_size
        interpolation = cv2.INTER_AREA if onset.shape[0] > side else cv2.INTER_LINEAR
        onset = cv2.resize(onset, (side, side), interpolation=interpolation)
        apex = cv2.resize(apex, (side, side), interpolation=interpolation)
    planes = flow_planes(onset, apex, settings.method, settings.remove_global_motion)
    atomic_savez(path, planes=planes)
    return ClipFeatures(label, planes, computed=True, apex_estimated=False)


def stack_planes(clips: Sequence[ClipFeatures], size: int, channels: Sequence[int]) -> np.ndarray:
    """float32 (N, C, size, size) network input from cached planes (channel indices into u, v, strain)."""
    if not clips:
        return np.zeros((0, len(channels), size, size), dtype=np.float32)
    maps = [resize_planes(c.planes, size)[..., list(channels)] for c in clips]
    return np.ascontiguousarray(np.stack(maps).transpose(0, 3, 1, 2), dtype=np.float32)
