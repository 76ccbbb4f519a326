"""Landmark tracks: onset points carried through a clip by optical flow, kept in memory and on disk, smoothed.

Both flow-tracking generators (fp-fomm with flow-tracked keypoints, landmark-tps) animate one source clip onto
many targets; the tracks of a clip are computed once per process, and once per cache where
keep_flow_tracks_in names one.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from augmenter.cache import atomic_save_npy, record_lookup, safe_name
from augmenter.flow import FlowMethod, optical_flow

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
    return folder / f"{safe_name(key[0])}-{key[1].hex()}.npy"


def _disk_tracks(folder: Path, key: tuple[str, bytes], shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        tracks = np.load(_tracks_file(folder, key), allow_pickle=False)
    except (OSError, ValueError):
        tracks = None
    if tracks is None or tracks.shape != shape or tracks.dtype != np.float32:
        record_lookup(folder.parent, "tracks", "miss")
        return None
    record_lookup(folder.parent, "tracks", "hit")
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
