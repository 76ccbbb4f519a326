"""Clip preprocessing: one face box per clip, square crop, resize, per-frame landmarks, cached on disk.

The box comes from the ONSET frame and is reused for every frame of the clip: micro-expressions are tiny, and
a box re-detected per frame would jitter by more pixels than the expression moves. Landmarks are fitted on the
full-resolution frame inside that fixed box, then mapped into crop pixels, keeping their jitter well under a
pixel at model size. Coordinates follow augmenter.flow: pixel centres at integers, (x, y) = (column, row).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import cv2
import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.face.base import FaceBackend, FaceBox
from augmenter.flow import FlowMethod, optical_flow
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.manifest import clip_frames, clip_key, read_manifest, row_fold_key
from augmenter.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")

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
CACHE_VERSION = 4
# The preparation cache of all stages: --cache-dir, else this variable, else CACHE_FOLDER beside the manifest
CACHE_ENV = "AUGMENTER_CACHE"
CACHE_FOLDER = "augmenter-cache"
# Per-process hit/miss counters live here inside a cache (see cache_stats).
STATS_FOLDER = "stats"


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
    points, fit_side = fit_points(backend, image, box, crop)
    return scale_points(points, fit_side, size)


def scale_points(points: np.ndarray, fit_side: int, size: int) -> np.ndarray:
    """Landmarks in pixels of the fit_side² crop → float32 landmarks in pixels of the size² crop."""
    return ((np.asarray(points, np.float64) + 0.5) * (size / fit_side) - 0.5).astype(np.float32)


def fit_points(
    backend: FaceBackend, image: np.ndarray, box: FaceBox, crop: SquareCrop
) -> tuple[np.ndarray, int]:
    """(float64 (68, 2) landmarks in pixels of the crop resampled to fit_side², fit_side): the size-free
    result of the face work, so one fit serves every crop size (see `scale_points`)."""
    fit_side = max(crop.side, LANDMARK_FIT_SIDE)
    region = crop_and_resize(image, crop, fit_side)
    scale = fit_side / crop.side
    fit_box = FaceBox(
        left=int(round((box.left - crop.left) * scale)),
        top=int(round((box.top - crop.top) * scale)),
        right=int(round((box.right - crop.left) * scale)),
        bottom=int(round((box.bottom - crop.top) * scale)),
    )
    return np.asarray(backend.landmarks(region, fit_box), dtype=np.float64), fit_side


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


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in its folder, so a killed run (or another process writing the
    same file) leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """An .npz written whole or not at all."""
    _atomic_write(path, lambda stream: np.savez(stream, **arrays))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """An .npy written whole or not at all."""
    _atomic_write(path, lambda stream: np.save(stream, array))


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent or damaged (it is then simply recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in keys}
    except (OSError, KeyError, ValueError, EOFError):
        return None


# --- the shared preparation cache ---


def resolve_cache_dir(
    cache_dir: str | Path | None,
    manifest: str | Path | pd.DataFrame | None = None,
    fallback: str | Path | None = None,
) -> Path | None:
    """The preparation cache a stage uses: `cache_dir` when given, else $AUGMENTER_CACHE, else
    `augmenter-cache/` beside the manifest file, else `fallback` (a manifest given as a table has no folder).

    Every stage resolving it the same way is what lets score, generate and evaluate reuse what train prepared.
    """
    chosen: str | Path | None = cache_dir
    if chosen is None and os.environ.get(CACHE_ENV, "").strip():
        chosen = os.environ[CACHE_ENV].strip()
    if chosen is None and manifest is not None and not isinstance(manifest, pd.DataFrame):
        chosen = Path(manifest).expanduser().resolve().parent / CACHE_FOLDER
    if chosen is None:
        chosen = fallback
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot create the preparation cache ({exc.strerror or exc}); pass --cache-dir DIR "
            f"or set {CACHE_ENV} to a writable folder"
        ) from None
    return path


@dataclass(frozen=True)
class CacheStats:
    """Lookups of one cache, summed over every process that used it.

    hits: served whole from the cache; partial: the face work (box, landmarks) came from the cache and only
    the crops were made again, at a size not seen before; misses: the face work was done.
    """

    hits: int = 0
    partial: int = 0
    misses: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def __sub__(self, before: CacheStats) -> CacheStats:
        kinds = set(self.by_kind) | set(before.by_kind)
        by_kind = {
            kind: {
                event: self.by_kind.get(kind, {}).get(event, 0) - before.by_kind.get(kind, {}).get(event, 0)
                for event in ("hit", "partial", "miss")
            }
            for kind in sorted(kinds)
        }
        return CacheStats(
            self.hits - before.hits, self.partial - before.partial, self.misses - before.misses, by_kind
        )


class _Counter:
    """This process's lookups per cache folder, rewritten atomically to stats/<host>-<pid>-<token>.json on
    each event, so pool processes and Dask workers are counted without sending anything back."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:8]
        self.pid = os.getpid()
        self.counts: dict[Path, dict[str, dict[str, int]]] = {}
        self.lock = threading.Lock()  # Dask workers prepare in several threads

    def record(self, cache_dir: Path, kind: str, event: str) -> None:
        if os.getpid() != self.pid:  # a forked child starts its own file
            self.__init__()
        with self.lock:
            counts = self.counts.setdefault(Path(cache_dir), {})
            kind_counts = counts.setdefault(kind, {"hit": 0, "partial": 0, "miss": 0})
            kind_counts[event] += 1
            folder = Path(cache_dir) / STATS_FOLDER
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{socket.gethostname()}-{self.pid}-{self.token}.json"
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(json.dumps(counts, sort_keys=True))
                os.replace(tmp, path)
            except OSError:
                pass  # counting must never break preparation (e.g. a read-only shared cache)


_COUNTER = _Counter()


def cache_stats(cache_dir: str | Path) -> CacheStats:
    """Hits, partial hits and misses recorded in `cache_dir` by every process so far (subtract two readings
    to count one stage)."""
    totals: dict[str, dict[str, int]] = {}
    for path in sorted((Path(cache_dir) / STATS_FOLDER).glob("*.json")):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for kind, events in counts.items():
            into = totals.setdefault(kind, {"hit": 0, "partial": 0, "miss": 0})
            for event in into:
                into[event] += int(events.get(event, 0))
    return CacheStats(
        hits=sum(e["hit"] for e in totals.values()),
        partial=sum(e["partial"] for e in totals.values()),
        misses=sum(e["miss"] for e in totals.values()),
        by_kind=totals,
    )


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def cache_file(cache_dir: str | Path, dataset: str, label: str, settings: dict, suffix: str = ".npz") -> Path:
    """Where one cached item lives: <cache>/<dataset>/<label>-<digest of settings><suffix>."""
    return Path(cache_dir) / _safe(str(dataset) or "unknown") / f"{_safe(label)}-{_digest(settings)}{suffix}"


def _file_stamp(path: Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _apex_index(frame_numbers: Sequence[int], apex: int) -> int:
    """Index of the apex frame; the nearest frame when the apex number itself is missing on disk."""
    numbers = np.asarray(frame_numbers)
    return int(np.argmin(np.abs(numbers - int(apex))))


@dataclass(frozen=True)
class _ClipSource:
    """What decides a prepared clip: its frames on disk and the preparation settings (the cache keys)."""

    key: str
    dataset: str
    label: str
    frames: list[tuple[int, Path]]
    face_settings: dict
    apex: int

    def face_file(self, cache_dir: Path) -> Path:
        return cache_file(cache_dir, self.dataset, self.label + "-face", self.face_settings)

    def crop_file(self, cache_dir: Path, size: int) -> Path:
        return cache_file(
            cache_dir, self.dataset, f"{self.label}-{size}px", {**self.face_settings, "size": int(size)}
        )


def _clip_source(row: pd.Series | dict, root: str | Path, backend_name: str, margin: float) -> _ClipSource:
    key = clip_key(row)
    frames = clip_frames(row, root)
    settings = {
        "version": CACHE_VERSION,
        "row": {k: str(row[k]) for k in CLIP_IDENTITY_COLUMNS},
        "margin": float(margin),
        "backend": backend_name,
        "files": [_file_stamp(p) for _, p in frames],
    }
    label = f"{row['subject']}-{row['clip_id']}"
    return _ClipSource(key, str(row["dataset"]), label, frames, settings, int(row["apex"]))


def _read_frames(source: _ClipSource, first: np.ndarray | None = None) -> list[np.ndarray]:
    """Every frame of the clip, all of the onset frame's size (UserError naming the odd file otherwise)."""
    images = []
    for index, (_, path) in enumerate(source.frames):
        image = first if index == 0 and first is not None else read_rgb(path, f"frame of clip {source.key}")
        if images and image.shape != images[0].shape:
            raise UserError(
                f"{path}: frame size {image.shape[1]}x{image.shape[0]} differs from the onset frame's "
                f"{images[0].shape[1]}x{images[0].shape[0]} in clip {source.key}; frames of one clip must "
                "share a size"
            )
        images.append(image)
    return images


def _cached_clip(source: _ClipSource, size: int, cache_dir: Path | None) -> PreparedClip | None:
    if cache_dir is None:
        return None
    cached = load_npz(source.crop_file(cache_dir, size), ("frames", "landmarks", "apex_index"))
    if cached is None:
        return None
    return PreparedClip(source.key, cached["frames"], cached["landmarks"], int(cached["apex_index"]))


def _make_clip(
    source: _ClipSource, size: int, backend: FaceBackend, cache_dir: Path | None, margin: float
) -> tuple[PreparedClip, str]:
    """(the clip, "hit" | "partial" | "miss"): from the cache, from the cached face fit, or from scratch."""
    clip = _cached_clip(source, size, cache_dir)
    if clip is not None:
        return clip, "hit"
    face = (
        load_npz(source.face_file(cache_dir), ("box", "crop", "fit_side", "points"))
        if cache_dir is not None
        else None
    )
    if face is not None and len(face["points"]) == len(source.frames):
        status = "partial"
        images = _read_frames(source)
        crop = SquareCrop(*(int(v) for v in face["crop"]))
        points, fit_side = face["points"], int(face["fit_side"])
    else:
        status = "miss"
        onset_path = source.frames[0][1]
        onset = read_rgb(onset_path, f"onset frame of clip {source.key}")
        box = _detect(backend, onset, onset_path, f"onset frame of clip {source.key}")
        crop = square_crop(box, margin)
        images = _read_frames(source, first=onset)
        fits = [fit_points(backend, image, box, crop) for image in images]
        points = np.stack([p for p, _ in fits])
        fit_side = fits[0][1]
        if cache_dir is not None:
            atomic_savez(
                source.face_file(cache_dir),
                box=np.asarray([box.left, box.top, box.right, box.bottom]),
                crop=np.asarray([crop.left, crop.top, crop.side]),
                fit_side=np.asarray(fit_side),
                points=points,
            )
    crops = np.stack([crop_and_resize(image, crop, size) for image in images])
    landmarks = np.stack([scale_points(p, fit_side, size) for p in points])
    clip = PreparedClip(source.key, crops, landmarks, _apex_index([n for n, _ in source.frames], source.apex))
    if cache_dir is not None:
        atomic_savez(
            source.crop_file(cache_dir, size),
            frames=clip.frames,
            landmarks=clip.landmarks,
            apex_index=np.asarray(clip.apex_index),
        )
    return clip, status


def prepare_clip(
    row: pd.Series | dict,
    root: str | Path,
    size: int,
    backend: FaceBackend | str,
    cache_dir: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
) -> PreparedClip:
    """Frames onset..offset cropped to the onset face box (square, grown by `margin`), resized to size², with
    per-frame landmarks in crop pixels.

    With `cache_dir`, a second call with unchanged inputs does no face work: the face box and landmark fits
    are cached independently of `size` (the key covers the row's clip columns, margin, backend and every
    frame file's size and mtime), so another stage at another crop size reuses them and only crops again.
    """
    backend = _backend(backend)
    source = _clip_source(row, root, backend.name, margin)
    cache = Path(cache_dir) if cache_dir is not None else None
    clip, status = _make_clip(source, size, backend, cache, margin)
    if cache is not None:
        _COUNTER.record(cache, "clip", status)
    return clip


def _flows_file(clip: PreparedClip, method: str, cache: Path) -> Path:
    dataset, _, rest = clip.key.partition("/")
    settings = {"frames": hashlib.sha256(clip.frames.tobytes()).hexdigest(), "method": method}
    return cache_file(cache, dataset, "flows-" + rest, settings, ".npy")


def _cached_flows(clip: PreparedClip, method: str, cache: Path) -> np.ndarray | None:
    try:
        flows = np.load(_flows_file(clip, method, cache), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return flows if flows.shape == clip.frames.shape[:3] + (2,) else None


def flows_to_onset(clip: PreparedClip, method: FlowMethod, cache_dir: str | Path | None = None) -> np.ndarray:
    """float32 (T, S, S, 2): the flow from every frame to the onset (driving → source; frame 0 is zero), the
    teacher signal of FP-FOMM training. Cached by the frames' bytes and the method (TV-L1 costs ~70 ms a
    frame at 64²: it is most of a training run's preparation)."""
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        flows = _cached_flows(clip, method, cache)
        if flows is not None:
            _COUNTER.record(cache, "flows", "hit")
            return flows
    onset = clip.frames[0]
    flows = np.stack(
        [np.zeros(onset.shape[:2] + (2,), np.float32)]
        + [optical_flow(frame, onset, method) for frame in clip.frames[1:]]
    )
    if cache is not None:
        atomic_save_npy(_flows_file(clip, method, cache), flows)
        _COUNTER.record(cache, "flows", "miss")
    return flows


# --- preparation over the machine's cores ---


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    """One thread per pool process: the pool is the parallelism, nested threads only contend."""
    cv2.setNumThreads(1)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork while this process runs a single thread (fast, no re-import, and scripts without a
    `__main__` guard work); spawn once other threads exist (a Dask client, a progress display), because
    forking a threaded process can copy a lock that some other thread holds."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _started_pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose processes all exist already (so none is forked later, under a progress thread).

    OpenCV's thread pool does not survive a fork (a child's first cv2 call that touches it can hang), so it
    is stopped for the moment of forking: the children inherit OpenCV at one thread, this process gets its
    threads back afterwards.
    """
    context = _pool_context()
    forked = context.get_start_method() == "fork"
    threads = cv2.getNumThreads()
    if forked:
        cv2.setNumThreads(1)
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=None if forked else _worker_init
    )
    try:
        # Each process sleeps long enough that the next task needs a new one; ~0.1 s per pool.
        wait([executor.submit(time.sleep, 0.05) for _ in range(workers)])
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if forked:
            cv2.setNumThreads(threads)
    return executor


def map_in_processes(
    function: Callable[[T], R],
    items: Sequence[T],
    workers: int | None = None,
    label: str = "working",
    unit: str = "items",
    progress: bool = True,
    completed: int = 0,
    total: int | None = None,
) -> list[R]:
    """[function(item) for item in items] in order, over a pool of `workers` processes (default: one per
    core), with progress on stderr (`completed` of `total` done before, e.g. found in a cache). The first
    failure cancels what has not started and is raised. With one worker or one item it runs here.
    `function` must be importable by name."""
    total = completed + len(items) if total is None else total
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, len(items))
    if workers <= 1:
        results = []
        with StageProgress(label, total, unit=unit, enabled=progress, completed=completed) as bar:
            for item in items:
                results.append(function(item))
                bar.advance()
        return results
    results_by_index: dict[int, R] = {}
    executor = _started_pool(workers)
    try:
        with StageProgress(label, total, unit=unit, enabled=progress, completed=completed) as bar:
            pending: dict[Future, int] = {executor.submit(function, item): i for i, item in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    index = pending.pop(future)
                    results_by_index[index] = future.result()  # raises the worker's exception here
                    bar.advance()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [results_by_index[i] for i in range(len(items))]


@dataclass(frozen=True)
class _ClipJob:
    """One clip for a pool process: everything by value or by name (backends are loaded per process)."""

    row: dict
    root: str
    size: int
    backend: FaceBackend | str
    cache_dir: str | None
    margin: float
    flows_method: str | None


def _run_clip_job(job: _ClipJob) -> tuple[PreparedClip, np.ndarray | None]:
    clip = prepare_clip(job.row, job.root, job.size, job.backend, job.cache_dir, job.margin)
    flows = flows_to_onset(clip, job.flows_method, job.cache_dir) if job.flows_method else None
    return clip, flows


def _rows(rows: pd.DataFrame | Iterable[pd.Series | dict]) -> list[dict]:
    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")
    return [dict(row) for row in rows]


def prepare_clips_with_flows(
    rows: pd.DataFrame | Iterable[pd.Series | dict],
    root: str | Path,
    size: int,
    backend: FaceBackend | str = "dlib",
    cache_dir: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
    flows_method: FlowMethod | None = None,
    workers: int | None = None,
    progress: bool = True,
    label: str = "preparing clips",
) -> list[tuple[PreparedClip, np.ndarray | None]]:
    """(clip, flows to onset or None) for every row, in order: clips found whole in the cache are read here,
    the rest are prepared in a process pool (one process per core by default) and written to the cache as
    each finishes, so a killed run resumes where it stopped. Progress goes to stderr (contract of
    augmenter.progress). A FaceBackend object instead of a name keeps the work in this process.
    """
    records = _rows(rows)
    cache = Path(cache_dir) if cache_dir is not None else None
    results: list[tuple[PreparedClip, np.ndarray | None] | None] = [None] * len(records)
    if cache is not None:
        backend_name = _backend(backend).name
        for index, row in enumerate(records):
            clip = _cached_clip(_clip_source(row, root, backend_name, margin), size, cache)
            if clip is None:
                continue
            flows = None
            if flows_method:
                flows = _cached_flows(clip, flows_method, cache)
                if flows is None:
                    continue
                _COUNTER.record(cache, "flows", "hit")
            _COUNTER.record(cache, "clip", "hit")
            results[index] = (clip, flows)
    todo = [i for i, result in enumerate(results) if result is None]
    cached = len(records) - len(todo)
    if cached and progress:
        print(f"{label}: {cached} of {len(records)} clips found in {cache}", file=sys.stderr, flush=True)
    if todo:
        jobs = [
            _ClipJob(
                records[i], str(root), int(size), backend, str(cache) if cache else None, margin, flows_method
            )
            for i in todo
        ]
        in_process = not isinstance(backend, str)  # a backend object stays in this process
        done = map_in_processes(
            _run_clip_job,
            jobs,
            1 if in_process else workers,
            label=label,
            unit="clips",
            progress=progress,
            completed=cached,
            total=len(records),
        )
        for index, result in zip(todo, done, strict=True):
            results[index] = result
    return [result for result in results if result is not None]


def prepare_clips(
    rows: pd.DataFrame | Iterable[pd.Series | dict],
    root: str | Path,
    size: int,
    backend: FaceBackend | str = "dlib",
    cache_dir: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
    workers: int | None = None,
    progress: bool = True,
    label: str = "preparing clips",
) -> list[PreparedClip]:
    """`prepare_clip` for every row, in order, over the machine's cores (see prepare_clips_with_flows)."""
    return [
        clip
        for clip, _ in prepare_clips_with_flows(
            rows, root, size, backend, cache_dir, margin, None, workers, progress, label
        )
    ]


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


def _manifest_target(
    row: pd.Series, root: str | Path, size: int, backend: FaceBackend, cache: Path | None, margin: float
) -> tuple[TargetFace, str]:
    """(the onset frame of a manifest clip as a target, "hit" | "partial" | "miss"); the clip's cached face
    fit is reused when a stage prepared the clip before."""
    key, subject = clip_key(row), row_fold_key(row)
    source = _clip_source(row, root, backend.name, margin)
    onset_path = source.frames[0][1]
    settings = {**source.face_settings, "target": True, "size": int(size)}
    path = (
        cache_file(cache, source.dataset, source.label + "-target", settings) if cache is not None else None
    )
    cached = load_npz(path, ("image", "landmarks")) if path is not None else None
    if cached is not None:
        return TargetFace(key, subject, cached["image"], cached["landmarks"]), "hit"
    face = load_npz(source.face_file(cache), ("crop", "fit_side", "points")) if cache is not None else None
    if face is not None and len(face["points"]) == len(source.frames):
        crop = SquareCrop(*(int(v) for v in face["crop"]))
        image = crop_and_resize(read_rgb(onset_path, f"target {key}"), crop, size)
        target = TargetFace(key, subject, image, scale_points(face["points"][0], int(face["fit_side"]), size))
        status = "partial"
    else:
        target = prepare_target(onset_path, size, backend, key=key, subject=subject, margin=margin)
        status = "miss"
    if path is not None:
        atomic_savez(path, image=target.image, landmarks=target.landmarks)
    return target, status


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
    cache = Path(cache_dir) if cache_dir is not None else None
    targets = []
    for _, row in frame.iterrows():
        target, status = _manifest_target(row, root, size, backend, cache, margin)
        if cache is not None:
            _COUNTER.record(cache, "target", status)
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


# Recent flow tracks by (method, digest of frames and points): generate animates one source clip onto many
# targets, and both flow-tracking generators would otherwise recompute the same flows for every pairing.
_TRACKS_CACHE: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
_TRACKS_CACHE_SIZE = 256
_TRACKS_LOCK = threading.Lock()
# Where this process also keeps flow tracks on disk (keep_flow_tracks_in): shared by all users of the cache.
_tracks_folder: Path | None = None
TRACKS_FOLDER = "tracks"


def keep_flow_tracks_in(cache_dir: str | Path | None) -> None:
    """Also keep this process's flow tracks in `cache_dir`/tracks (None: memory only).

    The files are named by the digest of the pixels, points and method, so they never go stale and every
    process sharing the cache (the workers of a cluster, a resumed run) tracks each source clip once."""
    global _tracks_folder
    _tracks_folder = Path(cache_dir) / TRACKS_FOLDER if cache_dir is not None else None


def _tracks_file(folder: Path, key: tuple[str, bytes]) -> Path:
    return folder / f"{_safe(key[0])}-{key[1].hex()}.npy"


def _disk_tracks(folder: Path, key: tuple[str, bytes], shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        tracks = np.load(_tracks_file(folder, key), allow_pickle=False)
    except (OSError, ValueError):
        tracks = None
    if tracks is None or tracks.shape != shape or tracks.dtype != np.float32:
        _COUNTER.record(folder.parent, "tracks", "miss")
        return None
    _COUNTER.record(folder.parent, "tracks", "hit")
    return tracks


def track_points_by_flow(frames: np.ndarray, points: np.ndarray, method: FlowMethod = "dis") -> np.ndarray:
    """float32 (T, N, 2): `points` of the onset frame carried through the clip by the flow onset → frame t.

    Re-fitting dlib per frame measures its shape model's response as much as the skin's motion (on the demo
    corpus its apex landmark error was 2–3× the true sub-pixel motion for some faces); the flow at a point
    measures the skin's own displacement. DIS costs ~2 ms per 128² frame. Frame 0 returns `points` unchanged.
    The last few hundred results are kept in memory (a copy is returned), keyed by the pixels and points, and
    on disk too where keep_flow_tracks_in named a cache.
    """
    points = np.asarray(points, dtype=np.float32)
    digest = hashlib.blake2b(np.ascontiguousarray(frames), digest_size=16)
    digest.update(str(np.shape(frames)).encode() + np.ascontiguousarray(points).tobytes())
    key = (str(method), digest.digest())
    with _TRACKS_LOCK:
        if key in _TRACKS_CACHE:
            _TRACKS_CACHE.move_to_end(key)
            return _TRACKS_CACHE[key].copy()
    folder = _tracks_folder
    tracks = _disk_tracks(folder, key, (len(frames), *points.shape)) if folder is not None else None
    if tracks is None:
        tracks = _flow_tracks(frames, points, method)
        if folder is not None:
            atomic_save_npy(_tracks_file(folder, key), tracks)
    with _TRACKS_LOCK:
        _TRACKS_CACHE[key] = tracks.copy()
        while len(_TRACKS_CACHE) > _TRACKS_CACHE_SIZE:
            _TRACKS_CACHE.popitem(last=False)
    return tracks


def _flow_tracks(frames: np.ndarray, points: np.ndarray, method: FlowMethod) -> np.ndarray:
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
