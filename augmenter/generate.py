"""Run a generation plan on Dask and fill the Zarr store: the driver plans and records, workers make clips.

Driver: read manifests → plan (augmenter.plan) → lock and open the store → append new pairings → submit the
not-done ones in batches → record each batch's small results (the `done` flags) → consolidate metadata.
Worker task (`run_batch`): load the generator once per worker process, prepare source and target (cached on
disk, shared by all workers), animate, write each clip as one whole chunk file, return only metadata. A pair
that fails is returned with its error and never stops the batch. Pairings are batched by target, so a target
is prepared (and, by a generator with `animate_many`, encoded) once per batch and kept warm on its worker.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import read_manifest
from augmenter.plan import format_summary, load_targets, make_plan
from augmenter.progress import StageProgress, format_eta

# Default batches: at most MAX_BATCH_CLIPS clips, about BATCHES_PER_WORKER per worker of what is left.
MAX_BATCH_CLIPS = 16
BATCHES_PER_WORKER = 4
RESULT_FLUSH_CLIPS = 256
RESULT_FLUSH_SECONDS = 2.0
STORE_VERSION_NOTE = "labels in arrays, one chunk per clip, done flag written by the driver after the clip"
# Prepared target faces a worker keeps in memory across batches (one image + landmarks each).
WORKER_TARGET_CACHE = 512


@dataclass
class GenerateJob:
    """Everything one `augmenter generate` run needs; every field can come from a TOML job file."""

    manifest: Path
    root: Path
    generator: str
    targets: Path
    out: Path
    targets_root: Path | None = None  # default: root
    workers: int | None = None
    gpus: str | None = None  # "0,1" | "none"; None = detect
    scheduler_address: str | None = None
    scheduler_file: Path | None = None
    strategy: str = "all"
    per_class: int | None = None
    max_per_source: int | None = None
    max_per_target: int | None = None
    exclude_subjects: list[str] = field(default_factory=list)
    limit: int | None = None
    size: int | None = None  # None: the checkpoint's own size (landmark-tps: 128)
    seed: int = 0
    max_frames: int | None = None  # store's T_max; default: the longest planned clip
    dry_run: bool = False
    overwrite: bool = False
    batch_size: int | None = None  # pairings per task; default: batch_sizes (shrinking toward the end)
    retries: int = 1
    face_backend: str = "dlib"
    identity_quality: bool = True  # embed generated apex vs target (dlib: ~0.3 s per clip on one core)
    pipeline: bool | None = None  # prepare/write beside the model in each worker; None = on GPU workers only
    cache_dir: Path | None = None  # default: $AUGMENTER_CACHE, else augmenter-cache/ beside the manifest
    target_persons: Path | None = None  # CSV target,person: who a folder target's image shows
    include_unlabelled: bool = False  # also pair sources without a 3-class label
    estimate_pairings: int = 3  # --dry-run times this many pairings for its time estimate (0: none)
    dashboard_address: str | None = "127.0.0.1:8787"
    progress: bool = True


@dataclass
class GenerateResult:
    """What a run did; `failures` lists (pair_id, error) of pairs that failed this run."""

    store: Path
    planned: int
    already_done: int
    written: int
    failures: list[tuple[str, str]]
    seconds: float
    plan_summary: str = ""
    estimated_seconds: float | None = None  # --dry-run: the whole plan's wall time on this job's workers
    estimated_store_bytes: int | None = None  # --dry-run: the store's size once every clip is written

    @property
    def clips_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.store}: {self.planned} planned, {self.already_done} already done, "
            f"{self.written} written, "
            f"{len(self.failures)} failed in {self.seconds:.1f} s ({self.clips_per_second:.2f} clips/s)"
        )
        for pair_id, error in self.failures[:5]:
            text += f"\n  failed {pair_id}: {error}"
        if len(self.failures) > 5:
            text += f"\n  … {len(self.failures) - 5} more (see the store's `error` array)"
        return text


@dataclass(frozen=True)
class BatchSettings:
    """What every task of one run shares (small and picklable)."""

    store: str
    root: str
    targets_root: str
    targets_folder: str  # non-empty when targets are a folder of images
    generator: str
    size: int
    face_backend: str
    cache_dir: str
    identity_quality: bool = True
    pipeline: bool | None = None  # overlap preparation and writes with the model; None = on a GPU only


# ---------------------------------------------------------------------------------------------- worker side

_WORKER_GENERATORS: dict[tuple[str, str, int], object] = {}
_WORKER_TARGET_EMBEDDINGS: dict[str, np.ndarray] = {}


def _worker_device(spec: str) -> str:
    """'cuda:0' when this worker sees a GPU (its Nanny pinned CUDA_VISIBLE_DEVICES), else 'cpu'.

    Training-free kinds are numpy-only: skip importing torch (seconds per worker) when it cannot matter.
    """
    from augmenter.generators import TORCH_FREE_KINDS, generator_kind_of

    if generator_kind_of(spec) in TORCH_FREE_KINDS:
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _limit_opencv_threads() -> None:
    """Give OpenCV the worker's thread budget. Its own thread pool ignores OMP_NUM_THREADS, so a worker that
    owns one core ran optical flow and resizing on as many threads as the machine has cores, beside the other
    workers. The budget is the OMP_NUM_THREADS the cluster gave the worker (unset: OpenCV keeps its own)."""
    import cv2

    budget = os.environ.get("OMP_NUM_THREADS", "")
    if budget.isdigit() and int(budget) > 0 and cv2.getNumThreads() != int(budget):
        cv2.setNumThreads(int(budget))


def _worker_generator(spec: str, size: int):  # noqa: ANN202 - ClipGenerator
    """Load the model once per worker process, keyed by its spec; later batches reuse it."""
    from augmenter.generators import load_generator

    device = _worker_device(spec)
    key = (spec, device, size)
    if key not in _WORKER_GENERATORS:
        _WORKER_GENERATORS[key] = load_generator(spec, device, size=size)
    return _WORKER_GENERATORS[key]


def fit_length(frames: np.ndarray, apex_index: int, max_frames: int) -> tuple[np.ndarray, int]:
    """Clips longer than the store's T_max are sampled evenly down to it, keeping onset, apex and offset."""
    if len(frames) <= max_frames:
        return frames, apex_index
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int))
    nearest = int(np.argmin(np.abs(picks - apex_index)))
    picks[nearest] = apex_index
    picks = np.unique(picks)
    return frames[picks], int(np.searchsorted(picks, apex_index))


def _face_core_box(size: int):  # noqa: ANN202 - FaceBox
    """The face inside a prepared crop (prepare adds 25 % margin per side): a fixed box, no detection, so the
    identity score never fails on a small or odd-looking generated frame."""
    from augmenter.face.base import FaceBox

    inset = int(round(size / 6))
    return FaceBox(inset, inset, size - inset, size - inset)


def _identity_distance(backend, generated_apex: np.ndarray, target, size: int) -> float:  # noqa: ANN001
    from augmenter.face import identity_distance

    box = _face_core_box(size)
    if target.key not in _WORKER_TARGET_EMBEDDINGS:
        _WORKER_TARGET_EMBEDDINGS[target.key] = np.asarray(backend.embedding(target.image, box))
    return identity_distance(backend.embedding(generated_apex, box), _WORKER_TARGET_EMBEDDINGS[target.key])


_WORKER_TARGETS: dict[tuple, object] = {}  # insertion-ordered: the oldest is dropped first


def _prepare_target(item: dict, settings: BatchSettings, backend):  # noqa: ANN001, ANN202 - TargetFace
    """The item's target face, from this worker's memory when an earlier batch prepared it."""
    from augmenter.prepare import prepare_target, prepare_targets_from_manifest

    key = (
        settings.targets_folder,
        settings.targets_root,
        settings.size,
        settings.cache_dir,
        item["target_id"],
    )
    if key in _WORKER_TARGETS:
        return _WORKER_TARGETS[key]
    if settings.targets_folder:
        path = Path(settings.targets_folder) / item["target_path"]
        target = prepare_target(
            path, settings.size, backend, key=item["target_id"], subject=item["target_subject"]
        )
    else:
        frame = pd.DataFrame([item["target_row"]])
        cache = settings.cache_dir or None
        target = prepare_targets_from_manifest(
            frame, settings.targets_root, settings.size, backend, cache_dir=cache
        )[0]
    while len(_WORKER_TARGETS) >= WORKER_TARGET_CACHE:
        del _WORKER_TARGETS[next(iter(_WORKER_TARGETS))]
    _WORKER_TARGETS[key] = target
    return target


def _failed(item: dict, error: str) -> dict:
    """The result of a pair that produced no clip (done stays False; the error is stored)."""
    return {"index": item["index"], "pair_id": item["pair_id"], "n_frames": 0, "apex_index": 0} | {
        "quality_l1": math.nan,
        "quality_identity": math.nan,
        "error": error,
    }


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:500]


def _animate_group(generator, sources: list, target) -> list:  # noqa: ANN001
    """Clips of several sources on one target: one call when the generator can encode the target once
    (`animate_many`), else one `animate` per source. A failing group is retried clip by clip so one bad
    source fails only its own pairing."""
    many = getattr(generator, "animate_many", None)
    if many is not None and len(sources) > 1:
        try:
            return [np.asarray(frames) for frames in many(sources, target)]
        except Exception:  # noqa: BLE001 - fall back to one call per clip to find the bad one
            pass
    clips: list = []
    for source in sources:
        try:
            clips.append(np.asarray(generator.animate(source, target)))
        except Exception as exc:  # noqa: BLE001 - recorded against its own pairing
            clips.append(exc)
    return clips


@dataclass
class _PreparedGroup:
    """One target's pairings, ready for the model: the target face and (item, prepared source) pairs."""

    target: object | None
    ready: list[tuple[dict, object]]


def _prepare_group(group: list[dict], settings: BatchSettings, backend, sources: dict, results: dict):  # noqa: ANN001, ANN202
    """Target and sources of one group (sources shared across the batch's groups); failures go to results."""
    from augmenter.prepare import prepare_clip

    try:
        target = _prepare_target(group[0], settings, backend)
    except Exception as exc:  # noqa: BLE001 - a bad target fails its own pairings only
        for item in group:
            results[item["index"]]["error"] = _one_line(exc)
        return _PreparedGroup(None, [])
    ready: list[tuple[dict, object]] = []
    for item in group:
        try:
            source_key = item["source_key"]
            if source_key not in sources:
                sources[source_key] = prepare_clip(
                    item["source_row"],
                    settings.root,
                    settings.size,
                    backend,
                    cache_dir=settings.cache_dir or None,
                )
            ready.append((item, sources[source_key]))
        except Exception as exc:  # noqa: BLE001 - one bad pair is recorded, the batch goes on
            results[item["index"]]["error"] = _one_line(exc)
    return _PreparedGroup(target, ready)


def _store_group(
    prepared: _PreparedGroup, clips: list, settings: BatchSettings, backend, results: dict
) -> None:  # noqa: ANN001
    """Write one group's clips (each its own chunk) and fill their results."""
    from augmenter.store import write_clip

    target = prepared.target
    for (item, source), frames in zip(prepared.ready, clips, strict=True):
        result = results[item["index"]]
        try:
            if isinstance(frames, BaseException):
                raise frames
            frames, apex = fit_length(frames, source.apex_index, item["max_frames"])
            result["n_frames"], result["apex_index"] = write_clip(settings.store, item["index"], frames), apex
            diff = np.abs(frames[0].astype(np.float32) - target.image.astype(np.float32))
            result["quality_l1"] = float(diff.mean() / 255.0)
            if settings.identity_quality:
                try:
                    result["quality_identity"] = _identity_distance(
                        backend, frames[apex], target, settings.size
                    )
                except Exception:  # noqa: BLE001 - a missing/odd face model must not fail the clip
                    result["quality_identity"] = math.nan
        except Exception as exc:  # noqa: BLE001 - one bad pair is recorded, the batch goes on
            result["error"] = _one_line(exc)


def _pipelined(settings: BatchSettings, spec_device: str) -> bool:
    return settings.pipeline if settings.pipeline is not None else spec_device.startswith("cuda")


class _SerializedBackend:
    """A face backend whose calls take turns: the reading and writing threads may both need it, and dlib's
    models are not documented as safe to call from two threads at once."""

    def __init__(self, backend) -> None:  # noqa: ANN001
        import threading

        self._backend, self._lock = backend, threading.Lock()
        self.name, self.identity_threshold = backend.name, backend.identity_threshold

    def __getattr__(self, name: str):  # noqa: ANN204
        method = getattr(self._backend, name)

        def locked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with self._lock:
                return method(*args, **kwargs)

        return locked


def run_batch(settings: BatchSettings, items: Sequence[dict]) -> list[dict]:
    """Worker task: make and store the clips of `items`; returns one small result dict per item.

    Items sharing a target are animated together (the driver batches by target); sources are prepared once
    per batch, targets once per worker. On a GPU (or with `settings.pipeline`) the CPU work runs beside the
    model: one thread prepares the next group while the model animates this one, another writes the last
    group's clips, so the GPU does not wait for file reads, crops and writes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from augmenter.face import get_face_backend
    from augmenter.tracks import keep_flow_tracks_in

    _limit_opencv_threads()
    keep_flow_tracks_in(settings.cache_dir or None)  # a source's flow tracks are made once per cluster
    generator = _worker_generator(settings.generator, settings.size)
    backend = get_face_backend(settings.face_backend)
    results = {item["index"]: _failed(item, "") for item in items}
    sources: dict[str, object] = {}
    groups: dict[str, list[dict]] = {}
    for item in items:
        groups.setdefault(item["target_id"], []).append(item)

    def prepare(group: list[dict]) -> _PreparedGroup:
        return _prepare_group(group, settings, backend, sources, results)

    def animate(prepared: _PreparedGroup) -> list:
        if prepared.target is None:
            return []
        return _animate_group(generator, [source for _, source in prepared.ready], prepared.target)

    def store(prepared: _PreparedGroup, clips: list) -> None:
        _store_group(prepared, clips, settings, backend, results)

    if not _pipelined(settings, _worker_device(settings.generator)):
        for group in groups.values():
            prepared = prepare(group)
            store(prepared, animate(prepared))
        return [results[item["index"]] for item in items]
    backend = _SerializedBackend(backend)
    ordered = list(groups.values())
    # One thread each, so preparation runs in group order and clip writes never overlap each other.
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        upcoming = reader.submit(prepare, ordered[0])
        writes = []
        for position in range(len(ordered)):
            prepared = upcoming.result()
            if position + 1 < len(ordered):
                upcoming = reader.submit(prepare, ordered[position + 1])
            writes.append(writer.submit(store, prepared, animate(prepared)))
        for write in writes:
            write.result()
    return [results[item["index"]] for item in items]


# ---------------------------------------------------------------------------------------------- driver side


def describe_generator(spec: str, size: int | None) -> dict:
    """kind, checksum, training subjects and size of a generator (loaded on CPU once in the driver)."""
    from augmenter.generators import load_generator
    from augmenter.generators.base import TRAINING_FREE

    generator = load_generator(spec, "cpu", size=size)
    training_free = bool(getattr(generator, "training_free", False))
    subjects = sorted(getattr(generator, "training_subjects", ()))
    persons = sorted(getattr(generator, "training_persons", ()))
    return {
        "generator_kind": str(generator.kind),
        "generator_checksum": str(generator.checksum),
        # training-free: the sentinel (saw nobody); learned: the list, empty = unknown (refused when strict)
        "generator_training_subjects": TRAINING_FREE if training_free else ";".join(subjects),
        "generator_training_persons": TRAINING_FREE if training_free else ";".join(persons),
        "size": int(generator.size),
    }


def _abs(path: Path | str | None) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


def _generator_spec(spec: str) -> str:
    """A checkpoint path made absolute (workers may run elsewhere); "landmark-tps" stays as it is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_file() else str(spec)


def _items(
    plan: pd.DataFrame,
    indices: np.ndarray,
    sources: pd.DataFrame,
    targets: pd.DataFrame,
    target_manifest: pd.DataFrame | None,
    max_frames: int,
) -> Iterator[dict]:
    """One picklable work item per plan row (manifest rows as plain dicts), made as they are submitted so a
    100k-pairing job never holds them all; ordered by target so a batch shares its target."""
    by_source = {f"{r['dataset']}/{r['subject']}/{r['clip_id']}": r for r in sources.to_dict("records")}
    by_target = targets.set_index("target_id").to_dict("index")
    target_rows = (
        {f"{r['dataset']}/{r['subject']}/{r['clip_id']}": r for r in target_manifest.to_dict("records")}
        if target_manifest is not None
        else {}
    )
    order = np.lexsort((plan["source_clip"].to_numpy(), plan["source_subject"].to_numpy(),
                        plan["target_id"].to_numpy()))  # fmt: skip
    columns = ("pair_id", "source_subject", "source_clip", "target_id", "target_subject")
    values = {name: plan[name].to_numpy() for name in columns}
    for position in order:
        source_key = f"{values['source_subject'][position]}/{values['source_clip'][position]}"
        target_id = values["target_id"][position]
        yield {
            "index": int(indices[position]),
            "pair_id": values["pair_id"][position],
            "source_key": source_key,
            "source_row": by_source[source_key],
            "target_id": target_id,
            "target_subject": values["target_subject"][position],
            "target_path": by_target[target_id]["target_path"],
            "target_row": target_rows.get(target_id, {}),
            "max_frames": max_frames,
        }


def _planned_max_frames(sources: pd.DataFrame, plan: pd.DataFrame) -> int:
    keys = set(plan["source_subject"] + "/" + plan["source_clip"])
    lengths = [
        int(r["offset"]) - int(r["onset"]) + 1
        for r in sources.to_dict("records")
        if f"{r['dataset']}/{r['subject']}/{r['clip_id']}" in keys
    ]
    return max(lengths) if lengths else 1


def _make_plan(job: GenerateJob, sources: pd.DataFrame, targets: pd.DataFrame, info: dict) -> pd.DataFrame:
    return make_plan(
        sources,
        targets,
        generator_checksum=info["generator_checksum"],
        seed=job.seed,
        strategy=job.strategy,
        per_class=job.per_class,
        max_per_source=job.max_per_source,
        max_per_target=job.max_per_target,
        exclude_subjects=job.exclude_subjects,
        limit=job.limit,
        include_unlabelled=job.include_unlabelled,
    )


def _load_targets(job: GenerateJob) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    return load_targets(job.targets, job.target_persons)


def plan_job(job: GenerateJob) -> tuple[pd.DataFrame, dict]:
    """The job's plan and its generator description, without touching the store (what --dry-run shows)."""
    info = describe_generator(job.generator, job.size)
    return _make_plan(job, read_manifest(job.manifest), _load_targets(job)[0], info), info


def default_cache_dir(job: GenerateJob) -> Path:
    """--cache-dir, else $AUGMENTER_CACHE, else the dataset's shared cache folder beside the manifest."""
    from augmenter.cache import resolve_cache_dir

    return resolve_cache_dir(job.cache_dir, job.manifest)


@dataclass
class CostEstimate:
    """What a plan will cost, from a few pairings timed on this machine (what `--dry-run` prints)."""

    seconds: float | None  # wall time of the whole plan on `workers` workers; None when nothing was timed
    store_bytes: int  # exact: clips are stored uncompressed, their padding to T_max as file holes
    workers: int
    device: str
    timed: int  # pairings timed
    seconds_per_frame: float = math.nan  # animation
    seconds_per_clip: float = 0.0  # identity score and write, per clip
    prepare_seconds: float = 0.0  # every distinct source and target prepared once (as timed: cold or cached)

    def text(self) -> str:
        size = self.store_bytes / 1e9
        lines = [f"store: {size:.2f} GB on disk when every clip is written (uncompressed)"]
        if self.seconds is None:
            return "\n".join(lines)
        lines.insert(
            0,
            f"estimate: {format_eta(self.seconds)} on {self.workers} {self.device} worker(s) "
            f"({1000 * self.seconds_per_frame:.1f} ms per frame animated, "
            f"{1000 * self.seconds_per_clip:.0f} ms per clip besides, "
            f"{format_eta(self.prepare_seconds)} of preparation in all; "
            f"from {self.timed} pairings timed here)",
        )
        return "\n".join(lines)


def _estimate_workers(job: GenerateJob) -> tuple[int, str]:
    """(workers, device kind) the job would run on: an existing scheduler's worker count, else local ones."""
    from augmenter.cluster import close_client, detect_gpus, get_client, parse_gpus

    if job.scheduler_address or job.scheduler_file or os.environ.get("DASK_SCHEDULER_ADDRESS"):
        client = get_client(scheduler_address=job.scheduler_address, scheduler_file=job.scheduler_file)
        try:
            workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
            gpus = sum(1 for w in workers if w.get("resources", {}).get("GPU", 0) >= 1)
            return (gpus, "cuda") if gpus else (max(1, len(workers)), "cpu")
        finally:
            close_client(client)
    gpu_ids = parse_gpus(job.gpus)
    gpu_ids = detect_gpus() if gpu_ids is None else gpu_ids
    if gpu_ids:
        return len(gpu_ids), "cuda"
    return int(job.workers or os.cpu_count() or 1), "cpu"


def estimate_job(
    job: GenerateJob,
    plan: pd.DataFrame,
    info: dict,
    sources: pd.DataFrame,
    targets: pd.DataFrame,
    target_manifest: pd.DataFrame | None,
) -> CostEstimate:
    """Time `job.estimate_pairings` pairings of the plan on the job's device kind (here, in this process, with
    a worker's share of the cores) and scale to the whole plan: frames animated, clips scored and written,
    distinct sources and targets prepared, divided over the workers. The store size is exact."""
    from augmenter.face import get_face_backend
    from augmenter.generators import TORCH_FREE_KINDS, generator_kind_of, load_generator
    from augmenter.prepare import prepare_clip
    from augmenter.store import STORE_FORMAT

    max_frames = int(job.max_frames or _planned_max_frames(sources, plan))
    size = int(info["size"])
    lengths = {
        f"{r['dataset']}/{r['subject']}/{r['clip_id']}": min(
            max_frames, int(r["offset"]) - int(r["onset"]) + 1
        )
        for r in sources.to_dict("records")
    }
    plan_frames = sum(
        lengths[f"{s}/{c}"] for s, c in zip(plan["source_subject"], plan["source_clip"], strict=True)
    )
    store_bytes = plan_frames * size * size * 3  # the padding to T_max is a file hole: no disk
    workers, device_kind = _estimate_workers(job)
    n = min(int(job.estimate_pairings), len(plan))
    if n < 1:
        return CostEstimate(None, store_bytes, workers, device_kind, 0)
    torch_free = generator_kind_of(job.generator) in TORCH_FREE_KINDS
    device = "cuda:0" if device_kind == "cuda" and not torch_free else "cpu"
    threads = None
    if not torch_free:
        import torch

        threads = torch.get_num_threads()
        if device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        generator = load_generator(_generator_spec(job.generator), device, size=size)
        backend = get_face_backend(job.face_backend)
        settings = BatchSettings(
            store=STORE_FORMAT,  # never written: the estimate only times
            root=_abs(job.root),
            targets_root=_abs(job.targets_root or job.root),
            targets_folder=_abs(job.targets) if target_manifest is None else "",
            generator=job.generator,
            size=size,
            face_backend=job.face_backend,
            cache_dir=_abs(default_cache_dir(job)),
            identity_quality=bool(job.identity_quality),
        )
        sample = plan.iloc[np.unique(np.linspace(0, len(plan) - 1, n).round().astype(int))]
        items = list(_items(sample, np.arange(len(sample)), sources, targets, target_manifest, max_frames))
        prepare_source = prepare_target = animate = extra = 0.0
        frames_animated = 0
        for number, item in enumerate(items):
            clock = time.perf_counter()
            source = prepare_clip(
                item["source_row"], settings.root, size, backend, cache_dir=settings.cache_dir
            )
            prepare_source += time.perf_counter() - clock
            clock = time.perf_counter()
            target = _prepare_target(item, settings, backend)
            prepare_target += time.perf_counter() - clock
            if number == 0:
                generator.animate(source, target)  # warm-up (lazy init, kernels): not timed
            clock = time.perf_counter()
            frames = np.asarray(generator.animate(source, target))
            animate += time.perf_counter() - clock
            frames_animated += len(frames)
            clock = time.perf_counter()
            frames, apex = fit_length(frames, source.apex_index, max_frames)
            padded = np.zeros((max_frames, size, size, 3), np.uint8)
            padded[: len(frames)] = frames
            padded.tobytes()  # the copy a clip write makes
            if settings.identity_quality:
                with contextlib.suppress(Exception):
                    _identity_distance(backend, frames[apex], target, size)
            extra += time.perf_counter() - clock
    finally:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
    per_frame = animate / max(1, frames_animated)
    per_clip = extra / len(items)
    distinct = plan[["source_subject", "source_clip"]].drop_duplicates().shape[0]
    preparation = (
        prepare_source / len(items) * distinct + prepare_target / len(items) * plan["target_id"].nunique()
    )
    seconds = (plan_frames * per_frame + len(plan) * per_clip + preparation) / workers
    return CostEstimate(
        seconds, store_bytes, workers, device_kind, len(items), per_frame, per_clip, preparation
    )


def generate(job: GenerateJob, client=None) -> GenerateResult:  # noqa: ANN001 - distributed.Client
    """Plan, then make every planned clip not yet done; safe to re-run (resume) and to grow (append).

    `client`: a distributed.Client to run on (else one from the job's cluster options, closed at the end).
    """
    from augmenter.store import StoreLock, StoreWriter

    started = time.perf_counter()
    sources = read_manifest(job.manifest)
    targets, target_manifest = _load_targets(job)
    info = describe_generator(job.generator, job.size)
    plan = _make_plan(job, sources, targets, info)
    summary = format_summary(plan)
    out = Path(job.out)
    if job.dry_run:
        result = GenerateResult(out, len(plan), 0, 0, [], 0.0, summary)
        if not plan.empty:
            estimate = estimate_job(job, plan, info, sources, targets, target_manifest)
            result.estimated_seconds, result.estimated_store_bytes = estimate.seconds, estimate.store_bytes
            result.plan_summary = summary + "\n" + estimate.text()
        result.seconds = time.perf_counter() - started
        return result
    if plan.empty:
        raise UserError(
            f"{job.manifest}: the plan is empty; check --targets, --exclude-subjects, the caps and the "
            "labels (sources without a 3-class label need --include-unlabelled)"
        )
    lock = StoreLock(out).acquire()
    try:
        attrs = info | {
            "seed": int(job.seed),
            "generator_spec": _generator_spec(job.generator),
            "manifest": _abs(job.manifest),
            "root": _abs(job.root),
            "targets": _abs(job.targets),
            "targets_root": _abs(job.targets_root or job.root),
            "face_backend": job.face_backend,
            "note": STORE_VERSION_NOTE,
        }
        max_frames = int(job.max_frames or _planned_max_frames(sources, plan))
        writer = StoreWriter(
            out, size=info["size"], max_frames=max_frames, attrs=attrs, overwrite=job.overwrite
        )
        writer.update_attrs({k: attrs[k] for k in ("manifest", "root", "targets", "targets_root")})
        indices = writer.append(plan, info)
        done = writer.done()
        todo = np.flatnonzero(~done[indices])
        items = _items(plan.iloc[todo], indices[todo], sources, targets, target_manifest, writer.max_frames)
        n_todo, n_done = len(todo), len(plan) - len(todo)
        settings = BatchSettings(
            store=_abs(out),
            root=_abs(job.root),
            targets_root=_abs(job.targets_root or job.root),
            targets_folder=_abs(job.targets) if target_manifest is None else "",
            generator=_generator_spec(job.generator),
            size=int(info["size"]),
            face_backend=job.face_backend,
            cache_dir=_abs(default_cache_dir(job)),
            identity_quality=bool(job.identity_quality),
            pipeline=job.pipeline,
        )
        failures = _run_items(job, client, settings, items, n_todo, n_done, writer) if n_todo else []
        writer.update_attrs(
            {"last_run": {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "planned": len(plan)}}
        )
        writer.finish()
    finally:
        lock.release()
    return GenerateResult(
        store=out,
        planned=len(plan),
        already_done=n_done,
        written=n_todo - len(failures),
        failures=failures,
        seconds=time.perf_counter() - started,
        plan_summary=summary,
    )


def batch_sizes(n_todo: int, n_workers: int, fixed: int | None = None) -> Iterator[int]:
    """Clips per batch, in submission order: `fixed` when the job sets one; else each batch takes a
    1/(BATCHES_PER_WORKER · workers) share of what is left (1 to MAX_BATCH_CLIPS clips), so batches shrink
    toward the end of a run and the workers finish together instead of one idling while another works
    through a last large batch (guided self-scheduling)."""
    remaining = n_todo
    while remaining > 0:
        share = math.ceil(remaining / (BATCHES_PER_WORKER * max(1, n_workers)))
        size = max(1, min(fixed or min(share, MAX_BATCH_CLIPS), remaining))
        yield size
        remaining -= size


def _batches(items: Iterable[dict], sizes: Iterable[int]) -> Iterator[list[dict]]:
    iterator = iter(items)
    for size in sizes:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield batch


def _run_items(
    job: GenerateJob,
    client,  # noqa: ANN001 - distributed.Client or None
    settings: BatchSettings,
    items: Iterable[dict],
    n_todo: int,
    n_done: int,
    writer,  # noqa: ANN001 - StoreWriter
) -> list[tuple[str, str]]:
    """Submit batches, a few per worker in flight, and record results as they complete (the driver is the only
    writer of the small arrays). Returns (pair_id, error) of the pairs that failed."""
    from distributed import as_completed

    from augmenter.cluster import close_client, cluster_has_gpus, get_client

    own_client = client is None
    if own_client:
        client = get_client(
            scheduler_address=job.scheduler_address,
            scheduler_file=job.scheduler_file,
            workers=job.workers,
            gpus=job.gpus,
            dashboard_address=job.dashboard_address,
        )
    failures: list[tuple[str, str]] = []
    try:
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        resources = {"GPU": 1} if cluster_has_gpus(client) else None
        in_flight = 4 * n_workers  # enough queued work that no worker waits on the driver
        batches = _batches(items, batch_sizes(n_todo, n_workers, job.batch_size))
        futures: dict = {}

        def submit_next() -> object | None:
            batch = next(batches, None)
            if batch is None:
                return None
            future = client.submit(
                run_batch, settings, batch, retries=job.retries, resources=resources, pure=False
            )
            futures[future] = batch
            return future

        started = [f for f in (submit_next() for _ in range(in_flight)) if f is not None]
        completed = as_completed(started)
        pending: list[dict] = []
        last_flush = time.monotonic()
        progress = StageProgress(
            "generate", n_todo + n_done, unit="clips", enabled=job.progress, completed=n_done
        )
        with progress, _flush_at_exit(writer, pending):
            for future in completed:
                batch = futures.pop(future)
                following = submit_next()
                if following is not None:
                    completed.add(following)
                try:
                    results = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost batch (e.g. KilledWorker) fails its pairs only
                    results = [_failed(item, _one_line(exc)) for item in batch]
                pending.extend(results)
                # Flush every few seconds, not per batch: each flush rewrites a chunk of every result array.
                # Results lost with a killed driver only mean those clips are made again.
                if len(pending) >= RESULT_FLUSH_CLIPS or time.monotonic() - last_flush > RESULT_FLUSH_SECONDS:
                    writer.record(pending)
                    pending.clear()
                    last_flush = time.monotonic()
                failures.extend((r["pair_id"], r["error"]) for r in results if r["error"])
                progress.advance(len(results))
    finally:
        if own_client:
            close_client(client)
    return failures


@contextlib.contextmanager
def _flush_at_exit(writer, pending: list[dict]) -> Iterator[None]:  # noqa: ANN001 - StoreWriter
    """Record finished clips still buffered even when the run stops early (Ctrl-C, a driver error)."""
    try:
        yield
    finally:
        writer.record(pending)
        pending.clear()
