"""The preparation stage: manifest rows → prepared clips (cropped frames, landmarks) and target faces, cached.

The face work is augmenter.crops, the cache augmenter.cache, teacher flows augmenter.teacher_flows and the
process pool augmenter.pool; this module ties them to manifest rows and decides what a cached clip is keyed
by.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.cache import atomic_savez, cache_file, load_npz, record_lookup
from augmenter.crops import (
    DEFAULT_MARGIN,
    SquareCrop,
    crop_and_resize,
    fit_landmarks,
    fit_points,
    read_rgb,
    require_face,
    scale_points,
    square_crop,
)
from augmenter.errors import UserError
from augmenter.face.base import FaceBackend
from augmenter.flow import FlowMethod
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.manifest import clip_frames, clip_key, read_manifest, row_fold_key
from augmenter.pool import map_in_processes
from augmenter.teacher_flows import cached_flows, flows_to_onset

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


def _backend(backend: FaceBackend | str) -> FaceBackend:
    if isinstance(backend, str):
        from augmenter.face import get_face_backend

        return get_face_backend(backend)
    return backend


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
        box = require_face(backend, onset, onset_path, f"onset frame of clip {source.key}")
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
        record_lookup(cache, "clip", status)
    return clip


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
    keep_going: bool = False


def _run_clip_job(job: _ClipJob) -> tuple[PreparedClip, np.ndarray | None] | str:
    """The prepared clip and its flows; with keep_going, a clip that cannot be prepared (no face found, a
    frame missing) returns its one-line reason instead of stopping the whole run."""
    try:
        clip = prepare_clip(job.row, job.root, job.size, job.backend, job.cache_dir, job.margin)
    except UserError as exc:
        if not job.keep_going:
            raise
        return str(exc)
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
    keep_going: bool = False,
) -> list[tuple[PreparedClip, np.ndarray | None]]:
    """(clip, flows to onset or None) for every row, in order: clips found whole in the cache are read here,
    the rest are prepared in a process pool (one process per core by default) and written to the cache as
    each finishes, so a killed run resumes where it stopped. Progress goes to stderr (contract of
    augmenter.progress). A FaceBackend object instead of a name keeps the work in this process.
    `keep_going`: a clip that cannot be prepared is left out and named on stderr instead of stopping the run.
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
                flows = cached_flows(clip, flows_method, cache)
                if flows is None:
                    continue
                record_lookup(cache, "flows", "hit")
            record_lookup(cache, "clip", "hit")
            results[index] = (clip, flows)
    todo = [i for i, result in enumerate(results) if result is None]
    cached = len(records) - len(todo)
    if cached and progress:
        print(f"{label}: {cached} of {len(records)} clips found in {cache}", file=sys.stderr, flush=True)
    if todo:
        jobs = [
            _ClipJob(
                records[i],
                str(root),
                int(size),
                backend,
                str(cache) if cache else None,
                margin,
                flows_method,
                keep_going,
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
            if isinstance(result, str):
                print(f"warning: clip left out: {result}", file=sys.stderr, flush=True)
                continue
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
    box = require_face(backend, image, where, f"target {key}")
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
            record_lookup(cache, "target", status)
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
