"""Run a generation plan on Dask and fill the Zarr store: the driver plans and records, workers make clips.

Driver: read manifests → plan (augmenter.plan) → lock and open the store → append new pairings → submit the
not-done ones in batches → record each batch's small results (the `done` flags) → consolidate metadata.
Worker task (`run_batch`): load the generator once per worker process, prepare source and target (cached on
disk, shared by all workers), animate, write each clip as one whole shard, return only metadata. A pair that
fails is returned with its error and never stops the batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import read_manifest
from augmenter.plan import format_summary, load_targets, make_plan

RESULT_FLUSH_CLIPS = 256
RESULT_FLUSH_SECONDS = 2.0
STORE_VERSION_NOTE = "labels in arrays, one shard per clip, done flag written by the driver after the clip"


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
    batch_size: int | None = None  # pairings per task; default keeps ~4 tasks per worker in flight
    retries: int = 1
    face_backend: str = "dlib"
    identity_quality: bool = True  # embed generated apex vs target (dlib: ~0.3 s per clip on one core)
    cache_dir: Path | None = None  # default: <out>.cache beside the store
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


def _prepare_target(item: dict, settings: BatchSettings, backend):  # noqa: ANN001, ANN202 - TargetFace
    from augmenter.prepare import prepare_target, prepare_targets_from_manifest

    if settings.targets_folder:
        path = Path(settings.targets_folder) / item["target_path"]
        return prepare_target(
            path, settings.size, backend, key=item["target_id"], subject=item["target_subject"]
        )
    frame = pd.DataFrame([item["target_row"]])
    cache = settings.cache_dir or None
    return prepare_targets_from_manifest(
        frame, settings.targets_root, settings.size, backend, cache_dir=cache
    )[0]


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


def run_batch(settings: BatchSettings, items: Sequence[dict]) -> list[dict]:
    """Worker task: make and store the clips of `items`; returns one small result dict per item."""
    from augmenter.face import get_face_backend
    from augmenter.prepare import prepare_clip
    from augmenter.store import write_clip

    generator = _worker_generator(settings.generator, settings.size)
    backend = get_face_backend(settings.face_backend)
    results = []
    sources: dict[str, object] = {}
    for item in items:
        result = _failed(item, "")
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
            source = sources[source_key]
            target = _prepare_target(item, settings, backend)
            frames = np.asarray(generator.animate(source, target))
            frames, apex = fit_length(frames, source.apex_index, item["max_frames"])
            kept = write_clip(settings.store, item["index"], frames)
            result["n_frames"], result["apex_index"] = kept, apex
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
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------- driver side


def describe_generator(spec: str, size: int | None) -> dict:
    """kind, checksum, training subjects and size of a generator (loaded on CPU once in the driver)."""
    from augmenter.generators import load_generator

    generator = load_generator(spec, "cpu", size=size)
    return {
        "generator_kind": str(generator.kind),
        "generator_checksum": str(generator.checksum),
        "generator_training_subjects": ";".join(sorted(generator.training_subjects)),
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
) -> list[dict]:
    """One picklable work item per plan row (manifest rows as plain dicts)."""
    by_source = {f"{r['dataset']}/{r['subject']}/{r['clip_id']}": r for r in sources.to_dict("records")}
    by_target = targets.set_index("target_id").to_dict("index")
    target_rows = (
        {f"{r['dataset']}/{r['subject']}/{r['clip_id']}": r for r in target_manifest.to_dict("records")}
        if target_manifest is not None
        else {}
    )
    items = []
    for index, row in zip(indices, plan.to_dict("records"), strict=True):
        source_key = f"{row['source_subject']}/{row['source_clip']}"
        target = by_target[row["target_id"]]
        items.append(
            {
                "index": int(index),
                "pair_id": row["pair_id"],
                "source_key": source_key,
                "source_row": by_source[source_key],
                "target_id": row["target_id"],
                "target_subject": row["target_subject"],
                "target_path": target["target_path"],
                "target_row": target_rows.get(row["target_id"], {}),
                "max_frames": max_frames,
            }
        )
    return items


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
    )


def plan_job(job: GenerateJob) -> tuple[pd.DataFrame, dict]:
    """The job's plan and its generator description, without touching the store (what --dry-run shows)."""
    info = describe_generator(job.generator, job.size)
    return _make_plan(job, read_manifest(job.manifest), load_targets(job.targets)[0], info), info


def generate(job: GenerateJob, client=None) -> GenerateResult:  # noqa: ANN001 - distributed.Client
    """Plan, then make every planned clip not yet done; safe to re-run (resume) and to grow (append).

    `client`: a distributed.Client to run on (else one from the job's cluster options, closed at the end).
    """
    from augmenter.store import StoreLock, StoreWriter

    started = time.perf_counter()
    sources = read_manifest(job.manifest)
    targets, target_manifest = load_targets(job.targets)
    info = describe_generator(job.generator, job.size)
    plan = _make_plan(job, sources, targets, info)
    summary = format_summary(plan)
    out = Path(job.out)
    if job.dry_run:
        return GenerateResult(out, len(plan), 0, 0, [], time.perf_counter() - started, summary)
    if plan.empty:
        raise UserError(
            f"{job.manifest}: the plan is empty; check --targets, --exclude-subjects and the caps"
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
        settings = BatchSettings(
            store=_abs(out),
            root=_abs(job.root),
            targets_root=_abs(job.targets_root or job.root),
            targets_folder=_abs(job.targets) if target_manifest is None else "",
            generator=_generator_spec(job.generator),
            size=int(info["size"]),
            face_backend=job.face_backend,
            cache_dir=_abs(job.cache_dir or out.with_name(out.name + ".cache")),
            identity_quality=bool(job.identity_quality),
        )
        failures = _run_items(job, client, settings, items, writer) if items else []
        writer.update_attrs(
            {"last_run": {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "planned": len(plan)}}
        )
        writer.finish()
    finally:
        lock.release()
    return GenerateResult(
        store=out,
        planned=len(plan),
        already_done=len(plan) - len(items),
        written=len(items) - len(failures),
        failures=failures,
        seconds=time.perf_counter() - started,
        plan_summary=summary,
    )


def _batches(items: list[dict], batch_size: int) -> list[list[dict]]:
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def _run_items(job: GenerateJob, client, settings: BatchSettings, items: list[dict], writer) -> list:  # noqa: ANN001
    """Submit batches, record results as they complete (driver is the only writer of the small arrays)."""
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
        batch_size = job.batch_size or max(1, min(16, math.ceil(len(items) / (4 * n_workers))))
        resources = {"GPU": 1} if cluster_has_gpus(client) else None
        futures = {
            client.submit(
                run_batch, settings, batch, retries=job.retries, resources=resources, pure=False
            ): batch
            for batch in _batches(items, batch_size)
        }
        pending: list[dict] = []
        last_flush = time.monotonic()
        with _progress(job.progress, len(items)) as advance, _flush_at_exit(writer, pending):
            for future in as_completed(futures):
                batch = futures.pop(future)
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
                advance(len(results))
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


class _progress:
    """Rich progress on stderr (clips/s and ETA); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):  # noqa: ANN204
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        task = self.bar.add_task("generate", total=self.total, rate="")
        start = time.perf_counter()

        def advance(n: int) -> None:
            self.bar.advance(task, n)
            done = self.bar.tasks[0].completed
            rate = done / max(1e-9, time.perf_counter() - start)
            self.bar.update(task, rate=f"{rate:.2f} clips/s")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
