"""Clip preprocessing on real frame files of a real face with real dlib landmarks."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data

from augmenter.cache import CACHE_ENV, CacheStats, cache_stats, resolve_cache_dir
from augmenter.crops import crop_and_resize, square_crop
from augmenter.errors import UserError
from augmenter.face.base import FaceBox
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.pool import _pool_context
from augmenter.prepare import (
    prepare_clip,
    prepare_clips,
    prepare_clips_with_flows,
    prepare_target,
    prepare_targets_from_folder,
    prepare_targets_from_manifest,
)
from augmenter.tracks import smooth_tracks, track_points_by_flow

SIZE = 64
SHIFT_PER_FRAME = 2  # pixels in the 512² original


class CountingDlib(DlibFaceBackend):
    """The real dlib backend, counting its face work so a test can prove the cache skips it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def detect(self, image: np.ndarray) -> FaceBox | None:
        self.calls += 1
        return super().detect(image)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        self.calls += 1
        return super().landmarks(image, box)


@pytest.fixture(scope="module")
def backend() -> CountingDlib:
    return CountingDlib()


def _write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CASME II-like clip: frames img8..img13 whose face slides right by SHIFT_PER_FRAME px per frame.

    Frame numbers cross a digit boundary (9 → 10) so a lexicographic sort would put img10 first.
    """
    root = tmp_path_factory.mktemp("frames")
    face = data.astronaut()
    for number in range(8, 14):
        shifted = np.roll(face, SHIFT_PER_FRAME * (number - 8), axis=1)
        _write_rgb(root / "sub01" / "EP01_01" / f"img{number}.png", shifted)
    return root


def _row(**changes: object) -> dict:
    row = {
        "dataset": "casme2",
        "subject": "1",
        "clip_id": "EP01_01",
        "frames_dir": "sub01/EP01_01",
        "frame_pattern": "img*.png",
        "onset": 8,
        "apex": 11,
        "offset": 13,
        "apex_estimated": False,
        "fps": 200.0,
        "n_frames": 6,
        "au": "12",
        "emotion": "happiness",
        "label3": "positive",
    }
    row.update(changes)
    return row


def test_prepare_clip_crops_orders_and_tracks(clip_root: Path, backend: CountingDlib) -> None:
    clip = prepare_clip(_row(), clip_root, SIZE, backend)
    assert clip.key == "casme2/1/EP01_01"
    assert clip.frames.shape == (6, SIZE, SIZE, 3) and clip.frames.dtype == np.uint8
    assert clip.landmarks.shape == (6, 68, 2) and clip.landmarks.dtype == np.float32
    assert clip.apex_index == 3  # img11 is the 4th frame by number
    # The face fills the crop: landmarks inside it, the hull covering a good part of it.
    assert clip.landmarks.min() > 0 and clip.landmarks.max() < SIZE - 1
    # The box is fixed at onset: the face slides right by SHIFT·size/side px per frame, in order.
    nose_x = clip.landmarks[:, 30, 0]
    steps = np.diff(nose_x)
    assert np.all(steps > 0), f"frames out of order or landmarks not per frame: {nose_x}"
    box = backend.detect(data.astronaut())
    scale = SIZE / square_crop(box).side
    assert abs(float(np.mean(steps)) - SHIFT_PER_FRAME * scale) < 0.15
    # Content check: frame 5 equals frame 0 shifted right by 5 steps (compare an inner band).
    shift_px = SHIFT_PER_FRAME * 5 * scale
    moved = np.roll(clip.frames[0].astype(float), int(round(shift_px)), axis=1)
    assert np.abs(moved[16:48, 16:48] - clip.frames[5][16:48, 16:48]).mean() < 12


def test_cache_skips_face_work_and_notices_changed_files(
    clip_root: Path, backend: CountingDlib, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    backend.calls = 0
    first = prepare_clip(_row(), clip_root, SIZE, backend, cache_dir=cache)
    assert backend.calls == 1 + 6  # one detection at onset, landmarks for 6 frames
    # One cache per dataset: the face fit (any size) and the crops at this size.
    assert len(list((cache / "casme2").glob("*.npz"))) == 2 and not list(cache.rglob("*.tmp"))
    assert cache_stats(cache).misses == 1
    backend.calls = 0
    second = prepare_clip(_row(), clip_root, SIZE, backend, cache_dir=cache)
    assert backend.calls == 0 and cache_stats(cache).hits == 1
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.landmarks, second.landmarks)
    assert second.apex_index == first.apex_index
    prepare_clip(_row(au="4", emotion="disgust", plan_column="x"), clip_root, SIZE, backend, cache_dir=cache)
    assert backend.calls == 0  # labels and extra columns do not decide the crop
    # Another crop size reuses the face fit: no face work, and exactly what an uncached run makes.
    resized = prepare_clip(_row(), clip_root, 48, backend, cache_dir=cache)
    assert backend.calls == 0 and cache_stats(cache).partial == 1
    fresh = prepare_clip(_row(), clip_root, 48, backend)
    np.testing.assert_array_equal(resized.frames, fresh.frames)
    np.testing.assert_array_equal(resized.landmarks, fresh.landmarks)
    # Another margin or a touched frame file is another cache entry.
    backend.calls = 0
    prepare_clip(_row(), clip_root, SIZE, backend, cache_dir=cache, margin=0.3)
    assert backend.calls == 7
    frame = clip_root / "sub01" / "EP01_01" / "img9.png"
    stat = frame.stat()
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    backend.calls = 0
    prepare_clip(_row(), clip_root, SIZE, backend, cache_dir=cache)
    assert backend.calls == 7
    # A damaged cache file is recomputed, not trusted.
    for path in cache.rglob("*.npz"):
        path.write_bytes(b"not an npz")
    backend.calls = 0
    again = prepare_clip(_row(), clip_root, SIZE, backend, cache_dir=cache)
    assert backend.calls == 7
    np.testing.assert_array_equal(again.frames, first.frames)


def test_manifest_targets_reuse_the_clips_face_fit(
    clip_root: Path, backend: CountingDlib, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    manifest = pd.DataFrame([_row()])
    fresh = prepare_targets_from_manifest(manifest, clip_root, SIZE, backend)[0]
    prepare_clip(_row(), clip_root, 96, backend, cache_dir=cache)
    backend.calls = 0
    target = prepare_targets_from_manifest(manifest, clip_root, SIZE, backend, cache_dir=cache)[0]
    assert backend.calls == 0 and cache_stats(cache).by_kind["target"]["partial"] == 1
    np.testing.assert_array_equal(target.image, fresh.image)
    np.testing.assert_array_equal(target.landmarks, fresh.landmarks)
    assert (target.key, target.subject) == ("casme2/1/EP01_01", "casme2/1")
    prepare_targets_from_manifest(manifest, clip_root, SIZE, backend, cache_dir=cache)
    assert backend.calls == 0 and cache_stats(cache).by_kind["target"]["hit"] == 1


@pytest.fixture(scope="module")
def three_clips(clip_root: Path) -> tuple[Path, list[dict]]:
    """Three clips of the sliding face (frames linked from clip_root) and a fourth, faceless one."""
    for name in ("EP01_02", "EP01_03"):
        folder = clip_root / "sub01" / name
        folder.mkdir(exist_ok=True)
        for source in (clip_root / "sub01" / "EP01_01").glob("img*.png"):
            if not (folder / source.name).exists():
                os.link(source, folder / source.name)
    blank = np.full((96, 96, 3), 128, np.uint8)
    for number in (8, 9, 10):
        _write_rgb(clip_root / "sub02" / "EP05" / f"img{number}.png", blank)
    rows = [_row(clip_id=c, frames_dir=f"sub01/{c}") for c in ("EP01_01", "EP01_02", "EP01_03")]
    return clip_root, rows


def test_pool_preparation_matches_serial_resumes_and_counts(
    three_clips: tuple[Path, list[dict]], backend: CountingDlib, tmp_path: Path
) -> None:
    root, rows = three_clips
    cache = tmp_path / "cache"
    serial = [prepare_clip(row, root, SIZE, backend) for row in rows]
    faceless = _row(subject="2", clip_id="EP05", frames_dir="sub02/EP05", onset=8, apex=9, offset=10)
    # The faceless clip fails in its pool process; the error names it, and what finished stays cached.
    # A second thread (as a Dask client or a progress display would run) makes the pool spawn, not fork.
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert _pool_context().get_start_method() == "spawn"
        with pytest.raises(UserError, match=r"no face found .*casme2/2/EP05"):
            prepare_clips([*rows, faceless], root, SIZE, "dlib", cache, workers=2, progress=False)
    finally:
        stop.set()
        helper.join()
    # Back to fork once this process is single-threaded again (earlier tests of a session may leave threads).
    single = threading.active_count() == 1
    assert _pool_context().get_start_method() == ("fork" if single else "spawn")
    finished = cache_stats(cache).misses
    assert finished >= 1  # counted inside the pool's processes, read back from the cache
    pooled = prepare_clips_with_flows(rows, root, SIZE, "dlib", cache, flows_method="dis", workers=2)
    for one, other in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(one.frames, other[0].frames)
        np.testing.assert_array_equal(one.landmarks, other[0].landmarks)
        assert other[1] is not None and other[1].shape == (6, SIZE, SIZE, 2) and not other[1][0].any()
    stats = cache_stats(cache)
    assert stats.by_kind["clip"]["miss"] == 3 and stats.by_kind["clip"]["hit"] == finished
    assert stats.by_kind["flows"]["miss"] == 3
    again = prepare_clips_with_flows(rows, root, SIZE, "dlib", cache, flows_method="dis", workers=2)
    assert cache_stats(cache) - stats == CacheStats(
        hits=6,
        by_kind={"clip": {"hit": 3, "partial": 0, "miss": 0}, "flows": {"hit": 3, "partial": 0, "miss": 0}},
    )
    np.testing.assert_array_equal(again[2][1], pooled[2][1])


def test_cache_location_flag_then_environment_then_beside_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "manifests" / "casme2.csv"
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert resolve_cache_dir(None, manifest) == manifest.parent.resolve() / "augmenter-cache"
    assert resolve_cache_dir(None, pd.DataFrame(), fallback=tmp_path / "run") == tmp_path / "run"
    assert resolve_cache_dir(None, pd.DataFrame()) is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    assert resolve_cache_dir(None, manifest) == tmp_path / "shared"
    assert resolve_cache_dir(tmp_path / "mine", manifest) == tmp_path / "mine"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create the preparation cache.*AUGMENTER_CACHE"):
        resolve_cache_dir(blocker / "cache", manifest)


def test_missing_face_and_unreadable_frame_name_the_file(tmp_path: Path, backend: CountingDlib) -> None:
    blank = np.full((120, 160, 3), 128, np.uint8)
    for number in (1, 2, 3):
        _write_rgb(tmp_path / "sub02" / "EP09" / f"img{number}.png", blank)
    row = _row(subject="2", clip_id="EP09", frames_dir="sub02/EP09", onset=1, apex=2, offset=3)
    with pytest.raises(UserError, match=r"img1\.png: no face found .*casme2/2/EP09"):
        prepare_clip(row, tmp_path, SIZE, backend)

    face = data.astronaut()
    _write_rgb(tmp_path / "sub03" / "EP01" / "img1.png", face)
    (tmp_path / "sub03" / "EP01" / "img2.png").write_bytes(b"truncated")
    row = _row(subject="3", clip_id="EP01", frames_dir="sub03/EP01", onset=1, apex=2, offset=2)
    with pytest.raises(UserError, match=r"img2\.png: unreadable image .*casme2/3/EP01"):
        prepare_clip(row, tmp_path, SIZE, backend)
    with pytest.raises(UserError, match="no frames 5..9"):
        prepare_clip(_row(onset=5, offset=9, frames_dir="sub03/EP01"), tmp_path, SIZE, backend)


def test_prepare_target_from_array_path_and_folder(tmp_path: Path, backend: CountingDlib) -> None:
    face = data.astronaut()
    from_array = prepare_target(face, SIZE, backend, key="astro", subject="images/astro")
    assert from_array.image.shape == (SIZE, SIZE, 3) and from_array.landmarks.shape == (68, 2)
    assert from_array.subject == "images/astro"
    _write_rgb(tmp_path / "targets" / "astro.png", face)
    from_path = prepare_target(
        tmp_path / "targets" / "astro.png", SIZE, backend, key="astro", subject="x/astro"
    )
    np.testing.assert_allclose(from_path.landmarks, from_array.landmarks, atol=0.6)
    folder = prepare_targets_from_folder(tmp_path / "targets", SIZE, backend)
    assert [t.key for t in folder] == ["images/astro"]
    with pytest.raises(UserError, match="no images"):
        prepare_targets_from_folder(tmp_path, SIZE, backend)


def test_crop_past_the_border_is_edge_padded() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, :10] = 200
    crop = square_crop(FaceBox(-6, 2, 10, 18), margin=0.0)  # half outside on the left
    out = crop_and_resize(image, crop, 16)
    assert out.shape == (16, 16, 3)
    assert (out[:, :8] == 200).all()  # the padding repeats the edge column, no black band


def test_flow_tracking_follows_a_translated_face(clip_root: Path, backend: CountingDlib) -> None:
    clip = prepare_clip(_row(), clip_root, SIZE, backend)
    inner = clip.landmarks[0, 17:48]  # brows, nose, eyes: well inside the crop
    tracks = track_points_by_flow(clip.frames, inner)
    assert tracks.shape == (6, 31, 2)
    np.testing.assert_array_equal(tracks[0], inner)
    step = SHIFT_PER_FRAME * SIZE / square_crop(backend.detect(data.astronaut())).side
    moved = tracks[5] - tracks[0]
    np.testing.assert_allclose(np.median(moved, axis=0), [5 * step, 0.0], atol=0.25)


def test_flow_tracks_of_a_clip_seen_again_come_from_memory(
    clip_root: Path, backend: CountingDlib, monkeypatch: pytest.MonkeyPatch
) -> None:
    """generate animates one source onto many targets: the second tracking of the same pixels and points
    computes no flow, returns the same tracks, and a caller editing them does not change the kept copy."""
    from augmenter import tracks

    clip = prepare_clip(_row(), clip_root, SIZE, backend)
    points = clip.landmarks[0]
    first = track_points_by_flow(clip.frames, points, "farneback")
    with monkeypatch.context() as patch:
        patch.setattr(tracks, "optical_flow", None)  # any flow computed now would fail
        again = track_points_by_flow(clip.frames, points, "farneback")
    np.testing.assert_array_equal(again, first)
    again += 1.0
    np.testing.assert_array_equal(track_points_by_flow(clip.frames, points, "farneback"), first)
    moved = clip.frames.copy()
    moved[-1] = np.roll(moved[-1], 1, axis=1)  # other pixels: tracked afresh
    assert not np.array_equal(track_points_by_flow(moved, points, "farneback")[-1], first[-1])


def test_flow_tracks_kept_in_a_cache_serve_another_process(
    clip_root: Path, backend: CountingDlib, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With keep_flow_tracks_in, tracks land in the cache's tracks/ folder: a process that has never tracked
    the clip (memory emptied here) reads them back without computing a flow; a damaged file is made again."""
    from augmenter import tracks

    clip = prepare_clip(_row(), clip_root, SIZE, backend)
    points = clip.landmarks[0]
    cache = tmp_path / "cache"
    monkeypatch.setattr(tracks, "_TRACKS_CACHE", type(tracks._TRACKS_CACHE)())
    tracks.keep_flow_tracks_in(cache)
    try:
        first = track_points_by_flow(clip.frames, points, "farneback")
        files = list((cache / tracks.TRACKS_FOLDER).glob("*.npy"))
        assert len(files) == 1 and files[0].name.startswith("farneback-")
        tracks._TRACKS_CACHE.clear()
        with monkeypatch.context() as patch:
            patch.setattr(tracks, "optical_flow", None)  # any flow computed now would fail
            np.testing.assert_array_equal(track_points_by_flow(clip.frames, points, "farneback"), first)
        assert cache_stats(cache).by_kind["tracks"] == {"hit": 1, "partial": 0, "miss": 1}
        files[0].write_bytes(b"not an array")
        tracks._TRACKS_CACHE.clear()
        np.testing.assert_array_equal(track_points_by_flow(clip.frames, points, "farneback"), first)
        assert np.load(files[0]).shape == first.shape  # made again and rewritten whole
    finally:
        tracks.keep_flow_tracks_in(None)


def test_smooth_tracks_removes_jitter_keeps_motion() -> None:
    rng = np.random.default_rng(0)
    frames, points = 30, 68
    truth = np.zeros((frames, points, 2))
    ramp = np.clip((np.arange(frames) - 5) / 10.0, 0, 1)  # moves 0 → 2 px over frames 5..15, then holds
    truth[:, :10, 1] = -2.0 * ramp[:, None]  # 10 moving points, the rest static
    base = rng.uniform(10, 50, (1, points, 2))
    noisy = base + truth + rng.normal(0, 0.25, truth.shape)
    smoothed = smooth_tracks(noisy, sigma_frames=2.0, dead_band_px=0.5)
    assert smoothed.shape == noisy.shape and smoothed.dtype == np.float32
    np.testing.assert_allclose(smoothed[0], noisy[0], atol=1e-5)  # onset unchanged
    moves = smoothed - smoothed[:1]
    raw_error = np.abs((noisy - noisy[:1]) - truth)[:, 10:].mean()
    assert np.abs(moves[:, 10:]).mean() < 0.2 * raw_error  # static points nearly still
    np.testing.assert_allclose(moves[20:, :10, 1].mean(), -2.0, atol=0.35)  # the real move survives
    assert np.array_equal(smooth_tracks(noisy, 0.0, 0.0), noisy.astype(np.float32))
