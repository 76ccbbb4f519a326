"""Clip preprocessing: one face box per clip, square crop, resize, per-frame landmarks, cached on disk.

The box comes from the ONSET frame and is reused for every frame of the clip: micro-expressions are tiny, and
a box re-detected per frame would jitter by more pixels than the expression moves. Landmarks are fitted on the
full-resolution frame inside that fixed box, then mapped into crop pixels, keeping their jitter well under a
pixel at model size. Coordinates follow augmenter.flow: pixel centres at integers, (x, y) = (column, row).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.face.base import FaceBackend, FaceBox
from augmenter.flow import FlowMethod, optical_flow
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.manifest import clip_frames, clip_key, read_manifest, row_fold_key

# Fraction of the (squared) face box added on every side: dlib's boxes cut the forehead and the chin's edge,
# and the generators need some context around the moving skin.
DEFAULT_MARGIN = 0.25
# dlib returns whole-pixel landmarks. Fitting them on the crop region resampled to at least this many pixels
# makes that rounding ~4× finer at 128² output; on the demo corpus it halved the frame-to-frame jitter of
# still points.
LANDMARK_FIT_SIDE = 512
# Frames with a shorter side than this are upscaled for a second detection try (tight face crops).
SMALL_FRAME_SIDE = 256
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# The manifest columns that decide a prepared clip; labels (au, emotion…) and extra plan columns do not.
CLIP_IDENTITY_COLUMNS: tuple[str, ...] = (
    "dataset",
    "subject",
    "clip_id",
    "frames_dir",
    "frame_pattern",
    "onset",
    "apex",
    "offset",
)
# Bump when the cached arrays' meaning changes, so stale caches are ignored rather than misread.
CACHE_VERSION = 3


@dataclass(frozen=True)
class SquareCrop:
    """A square region of a frame (may extend past its borders; those pixels are edge-padded)."""

    left: int
    top: int
    side: int

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Frame pixel coordinates → crop pixel coordinates after resizing the square to size×size."""
        scale = size / self.side
        offset = np.array([self.left, self.top], dtype=np.float64)
        return ((np.asarray(points, np.float64) - offset + 0.5) * scale - 0.5).astype(np.float32)


def square_crop(box: FaceBox, margin: float = DEFAULT_MARGIN) -> SquareCrop:
    """A square centred on the box, its side the box's longer side grown by `margin` on each side."""
    side = max(1, int(round(max(box.width, box.height) * (1.0 + 2.0 * margin))))
    centre_x = (box.left + box.right) / 2.0
    centre_y = (box.top + box.bottom) / 2.0
    return SquareCrop(
        left=int(round(centre_x - side / 2.0)), top=int(round(centre_y - side / 2.0)), side=side
    )


def crop_and_resize(image: np.ndarray, crop: SquareCrop, size: int) -> np.ndarray:
    """uint8 (size, size, 3): the square region, edge-padded where it leaves the frame, area-resampled."""
    height, width = image.shape[:2]
    bottom, right = crop.top + crop.side, crop.left + crop.side
    pad_top, pad_left = max(0, -crop.top), max(0, -crop.left)
    pad_bottom, pad_right = max(0, bottom - height), max(0, right - width)
    region = image[max(0, crop.top) : min(height, bottom), max(0, crop.left) : min(width, right)]
    if pad_top or pad_left or pad_bottom or pad_right:
        region = np.pad(region, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)), mode="edge")
    interpolation = cv2.INTER_AREA if crop.side >= size else cv2.INTER_CUBIC
    return cv2.resize(region, (size, size), interpolation=interpolation)


def fit_landmarks(
    backend: FaceBackend, image: np.ndarray, box: FaceBox, crop: SquareCrop, size: int
) -> np.ndarray:
    """float32 (68, 2) landmarks of the face in `box`, in crop pixels at size².

    They are fitted on the square crop region resampled to at least LANDMARK_FIT_SIDE px (never below the
    frame's own resolution), so whole-pixel rounding of the detector does not show as sub-pixel jitter.
    """
    fit_side = max(crop.side, LANDMARK_FIT_SIDE)
    region = crop_and_resize(image, crop, fit_side)
    scale = fit_side / crop.side
    fit_box = FaceBox(
        left=int(round((box.left - crop.left) * scale)),
        top=int(round((box.top - crop.top) * scale)),
        right=int(round((box.right - crop.left) * scale)),
        bottom=int(round((box.bottom - crop.top) * scale)),
    )
    points = np.asarray(backend.landmarks(region, fit_box), dtype=np.float64)
    return ((points + 0.5) * (size / fit_side) - 0.5).astype(np.float32)


def read_rgb(path: str | Path, what: str = "") -> np.ndarray:
    """uint8 (H, W, 3) RGB from any file cv2 reads (grey frames, e.g. SAMM's, get 3 equal channels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        context = f" ({what})" if what else ""
        raise UserError(
            f"{path}: unreadable image{context}; check the file or remove the clip from the manifest"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _backend(backend: FaceBackend | str) -> FaceBackend:
    if isinstance(backend, str):
        from augmenter.face import get_face_backend

        return get_face_backend(backend)
    return backend


def _usable(box: FaceBox | None) -> bool:
    return box is not None and box.width > 1 and box.height > 1


def detect_face(backend: FaceBackend, image: np.ndarray) -> FaceBox | None:
    """The backend's largest face, retried the ways tight face crops need; None when there is no face.

    Registered/cropped datasets (and the demo corpus at 64²) show the face edge to edge: the HOG detector then
    misses it for want of size and context. Retry on the frame upscaled to SMALL_FRAME_SIDE, then on the frame
    edge-padded by half its side; boxes are mapped back to the frame (they may then reach past its border,
    which square_crop pads).
    """
    box = backend.detect(image)
    if _usable(box):
        return box
    height, width = image.shape[:2]
    if min(height, width) < SMALL_FRAME_SIDE:
        factor = int(np.ceil(SMALL_FRAME_SIDE / min(height, width)))
        larger = cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_CUBIC)
        found = backend.detect(larger)
        if _usable(found):
            return FaceBox(
                left=int(round(found.left / factor)),
                top=int(round(found.top / factor)),
                right=int(round(found.right / factor)),
                bottom=int(round(found.bottom / factor)),
            )
    pad = min(height, width) // 2
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = backend.detect(padded)
    if _usable(found):
        return FaceBox(found.left - pad, found.top - pad, found.right - pad, found.bottom - pad)
    return None


def _detect(backend: FaceBackend, image: np.ndarray, path: Path | str, what: str) -> FaceBox:
    box = detect_face(backend, image)
    if box is None:
        raise UserError(
            f"{path}: no face found by the {backend.name} backend ({what}); use a frame with a visible "
            "frontal face or drop the clip from the manifest"
        )
    return box


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz so a killed run leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent or damaged (it is then simply recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in keys}
    except (OSError, KeyError, ValueError, EOFError):
        return None


def _cache_path(cache_dir: Path, label: str, settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
    return Path(cache_dir) / f"{safe}-{digest}.npz"


def _file_stamp(path: Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _apex_index(frame_numbers: Sequence[int], apex: int) -> int:
    """Index of the apex frame; the nearest frame when the apex number itself is missing on disk."""
    numbers = np.asarray(frame_numbers)
    return int(np.argmin(np.abs(numbers - int(apex))))


def prepare_clip(
    row: pd.Series | dict,
    root: str | Path,
    size: int,
    backend: FaceBackend | str,
    cache_dir: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
) -> PreparedClip:
    """Frames onset..offset cropped to the onset face box (square, grown by `margin`), resized to size², with
    per-frame landmarks in crop pixels. With `cache_dir`, a second call with unchanged inputs does no
    face work (the key covers the row, the settings, the backend and every frame file's size and mtime).
    """
    backend = _backend(backend)
    key = clip_key(row)
    frames = clip_frames(row, root)
    numbers = [n for n, _ in frames]
    settings = {
        "version": CACHE_VERSION,
        "row": {k: str(row[k]) for k in CLIP_IDENTITY_COLUMNS},
        "size": int(size),
        "margin": float(margin),
        "backend": backend.name,
        "files": [_file_stamp(p) for _, p in frames],
    }
    cache_file = _cache_path(Path(cache_dir), key, settings) if cache_dir is not None else None
    if cache_file is not None:
        cached = load_npz(cache_file, ("frames", "landmarks", "apex_index"))
        if cached is not None:
            return PreparedClip(key, cached["frames"], cached["landmarks"], int(cached["apex_index"]))

    onset_path = frames[0][1]
    onset = read_rgb(onset_path, f"onset frame of clip {key}")
    box = _detect(backend, onset, onset_path, f"onset frame of clip {key}")
    crop = square_crop(box, margin)
    crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    landmarks = np.empty((len(frames), 68, 2), dtype=np.float32)
    for index, (_, path) in enumerate(frames):
        image = onset if index == 0 else read_rgb(path, f"frame of clip {key}")
        if image.shape != onset.shape:
            raise UserError(
                f"{path}: frame size {image.shape[1]}x{image.shape[0]} differs from the onset frame's "
                f"{onset.shape[1]}x{onset.shape[0]} in clip {key}; frames of one clip must share a size"
            )
        crops[index] = crop_and_resize(image, crop, size)
        landmarks[index] = fit_landmarks(backend, image, box, crop, size)
    prepared = PreparedClip(key, crops, landmarks, _apex_index(numbers, int(row["apex"])))
    if cache_file is not None:
        atomic_savez(
            cache_file,
            frames=prepared.frames,
            landmarks=prepared.landmarks,
            apex_index=np.asarray(prepared.apex_index),
        )
    return prepared


def prepare_target(
    image_or_path: np.ndarray | str | Path,
    size: int,
    backend: FaceBackend | str,
    key: str,
    subject: str,
    margin: float = DEFAULT_MARGIN,
) -> TargetFace:
    """A still face (an image array or file) cropped and resized like `prepare_clip`, with its landmarks.

    `subject` is the fold key ("dataset/subject") so leave-one-subject-out can refuse a test subject's faces.
    """
    backend = _backend(backend)
    if isinstance(image_or_path, str | Path):
        where: str | Path = image_or_path
        image = read_rgb(image_or_path, f"target {key}")
    else:
        where = f"target {key}"
        image = np.asarray(image_or_path)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"target {key}: expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}"
            )
    box = _detect(backend, image, where, f"target {key}")
    crop = square_crop(box, margin)
    landmarks = fit_landmarks(backend, image, box, crop, size)
    return TargetFace(key=key, subject=subject, image=crop_and_resize(image, crop, size), landmarks=landmarks)


def select_subjects(manifest: pd.DataFrame, subjects: Iterable[str] | None) -> pd.DataFrame:
    """Rows of the given subjects, written as in the subject column ("1") or as fold keys ("casme2/1")."""
    if subjects is None:
        return manifest
    wanted = {str(s) for s in subjects}
    keys = manifest["dataset"].astype(str) + "/" + manifest["subject"].astype(str)
    return manifest[manifest["subject"].astype(str).isin(wanted) | keys.isin(wanted)]


def prepare_targets_from_manifest(
    manifest: pd.DataFrame | str | Path,
    root: str | Path,
    size: int,
    backend: FaceBackend | str,
    subjects: Iterable[str] | None = None,
    cache_dir: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
    one_per_subject: bool = False,
) -> list[TargetFace]:
    """Target faces from the onset frames of a manifest's clips (key = clip key, subject = fold key).

    `one_per_subject` keeps each subject's first clip only (one identity, one still). Cached like clips.
    """
    backend = _backend(backend)
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    frame = select_subjects(frame, subjects)
    if one_per_subject:
        frame = frame.drop_duplicates(subset=["dataset", "subject"], keep="first")
    targets = []
    for _, row in frame.iterrows():
        key = clip_key(row)
        onset_path = clip_frames(row, root)[0][1]
        settings = {
            "version": CACHE_VERSION,
            "target": key,
            "file": _file_stamp(onset_path),
            "size": int(size),
            "margin": float(margin),
            "backend": backend.name,
        }
        cache_file = (
            _cache_path(Path(cache_dir), "target-" + key, settings) if cache_dir is not None else None
        )
        cached = load_npz(cache_file, ("image", "landmarks")) if cache_file is not None else None
        if cached is not None:
            targets.append(TargetFace(key, row_fold_key(row), cached["image"], cached["landmarks"]))
            continue
        target = prepare_target(onset_path, size, backend, key=key, subject=row_fold_key(row), margin=margin)
        if cache_file is not None:
            atomic_savez(cache_file, image=target.image, landmarks=target.landmarks)
        targets.append(target)
    return targets


def prepare_targets_from_folder(
    folder: str | Path,
    size: int,
    backend: FaceBackend | str,
    margin: float = DEFAULT_MARGIN,
    dataset: str = "images",
) -> list[TargetFace]:
    """One target per face image in `folder` (sorted by name); key and subject = "<dataset>/<file stem>"."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: target folder not found; give a folder of face images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the target folder")
    backend = _backend(backend)
    return [
        prepare_target(
            p, size, backend, key=f"{dataset}/{p.stem}", subject=f"{dataset}/{p.stem}", margin=margin
        )
        for p in paths
    ]


def track_points_by_flow(frames: np.ndarray, points: np.ndarray, method: FlowMethod = "dis") -> np.ndarray:
    """float32 (T, N, 2): `points` of the onset frame carried through the clip by the flow onset → frame t.

    Re-fitting dlib per frame measures its shape model's response as much as the skin's motion (on the demo
    corpus its apex landmark error was 2–3× the true sub-pixel motion for some faces); the flow at a point
    measures the skin's own displacement. DIS costs ~2 ms per 128² frame. Frame 0 returns `points` unchanged.
    """
    points = np.asarray(points, dtype=np.float32)
    map_x = np.ascontiguousarray(points[None, :, 0])
    map_y = np.ascontiguousarray(points[None, :, 1])
    tracks = np.empty((len(frames), *points.shape), dtype=np.float32)
    tracks[0] = points
    for index in range(1, len(frames)):
        flow = optical_flow(frames[0], frames[index], method)
        sampled = cv2.remap(flow, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        tracks[index] = points + sampled[0]
    return tracks


def local_linear_smoothing_matrix(frames: int, sigma_frames: float) -> np.ndarray:
    """float64 (T, T) operator of Gaussian-weighted local-linear regression over time.

    Unlike a plain Gaussian filter it is unbiased for linear trends at the clip's ends, so the onset estimate
    is not dragged toward the motion that starts right after it, yet it averages the onset's jitter away.
    """
    times = np.arange(frames, dtype=np.float64)
    offsets = times[None, :] - times[:, None]  # (t, s): s − t
    weights = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
    moment0 = weights.sum(1, keepdims=True)
    moment1 = (weights * offsets).sum(1, keepdims=True)
    moment2 = (weights * offsets**2).sum(1, keepdims=True)
    denominator = moment0 * moment2 - moment1**2
    operator = weights * (moment2 - moment1 * offsets)
    return operator / np.where(denominator > 1e-12, denominator, np.inf) + np.where(
        denominator > 1e-12, 0.0, weights / moment0
    )


def smooth_tracks(landmarks: np.ndarray, sigma_frames: float = 2.0, dead_band_px: float = 0.5) -> np.ndarray:
    """float32 (T, N, 2) landmark tracks with detector jitter suppressed; frame 0 is returned unchanged.

    1. Tracks are smoothed over time by Gaussian-weighted local-linear regression (sigma in frames), which
       keeps the onset in place even when motion starts at once; moves are relative to the smoothed onset.
    2. Dead-band per point over the whole clip: a point whose largest move stays under `dead_band_px` is still
       skin that only jitters and is pinned; larger movers keep their track's shape, scaled by
       max(0, 1 − (dead_band / peak)²), which is continuous and leaves moves of a few dead-bands nearly whole.
    """
    tracks = np.asarray(landmarks, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"expected (T, N, 2) landmark tracks, got shape {tracks.shape}")
    frames = tracks.shape[0]
    smoothed = tracks
    if sigma_frames > 0 and frames > 2:
        operator = local_linear_smoothing_matrix(frames, sigma_frames)
        smoothed = (operator @ tracks.reshape(frames, -1)).reshape(tracks.shape)
    moves = smoothed - smoothed[:1]
    if dead_band_px > 0:
        peak = np.linalg.norm(moves, axis=-1).max(axis=0)  # (N,)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(peak > dead_band_px, 1.0 - (dead_band_px / peak) ** 2, 0.0)
        moves = moves * gain[None, :, None]
    return (tracks[:1] + moves).astype(np.float32)


# Kept for callers written against the earlier private names.
