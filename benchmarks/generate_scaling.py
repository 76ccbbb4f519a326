"""Generation cost on this machine (not a test): every ratio measured in ONE run, ending with one JSON line.

1. Zarr clip writes (`store.write_clip`, one chunk per clip) vs raw writes of the same bytes, at 64² × 40
   frames and 256² × 60 frames (target ≥ 0.8×);
2. clips/s with 1 vs 2 single-threaded CPU workers on a warm preparation cache, repeated, the spread of the
   ratio stated (target ≥ 1.8×), and the scheduler overhead as a share of worker time from Dask's own task
   stream (target < 2 %). Each fresh cluster first runs the pairings once (its cold pass, reported as
   `workers_2_vs_1_cold`), then the timed run repeats the same pairings into a new store: the rate every pass
   after a worker's first gets in a long job;
3. the machine's own ceiling for (2): the generator's `animate` in 2 bare processes at once vs 1 (no Dask,
   no driver, no store), the same repeats (`processes_2_vs_1`), and where (2) loses against it: CPU seconds
   per clip of the workers and of this process (driver, scheduler, nannies), and the ratio those allow
   (`cpu_allows_2_vs_1`: with 2 workers on 2 cores the driver's share is taken from the workers);
4. end to end vs the model: one warm worker's frames/s through `generate` against the same generator's own
   `animate` frames/s on the same prepared clips in one thread (target ≥ 70 %).

Uses the demo corpus at 64² and the shipped tiny-64 demo generator (landmark-tps with `--generator
landmark-tps`). Other processes on the machine skew every number: the load average is printed too.

    python benchmarks/generate_scaling.py [--quick] [--repeats 3] [--pairs 64] [--workdir DIR]

JSON keys: zarr_write_ratio_64, zarr_write_ratio_256, workers_2_vs_1 (median), workers_2_vs_1_spread
([min, max]), workers_2_vs_1_cold (+ spread), processes_2_vs_1 (+ spread), cpu_s_per_clip, cpu_allows_2_vs_1,
overhead_share, edge_idle_share_2 (2 workers: the share of their time idle while the other finished the last
batch), end_to_end_vs_model, and the raw rates behind them. Each run also pays a fixed cost whatever its size
(planning, store open and close: `run_fixed_s`), which a short timed run over-weights; `workers_2_vs_1_tasks`
and `end_to_end_tasks_vs_model` measure over the task span instead (first task's start to last task's end,
from the task stream), what a long job approaches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GENERATOR = str(REPO / "augmenter" / "demo_weights" / "generator-a.pt")


def _warm(spec: str, size: int) -> bool:
    """Runs on each worker: load the generator and the face backend before timing starts."""
    from augmenter.face import get_face_backend
    from augmenter.generate import _worker_generator

    _worker_generator(spec, size)
    get_face_backend("dlib")
    return True


def _forget_targets() -> bool:
    """Runs on each worker between passes: a long job meets each target in one batch, so the timed pass loads
    its targets from the preparation cache, not from the worker's memory of the pass before."""
    from augmenter.generate import _WORKER_TARGETS

    _WORKER_TARGETS.clear()
    return True


def build_inputs(workdir: Path) -> tuple[Path, Path]:
    """Demo corpus (6 subjects × 4 clips, 64², 16–24 frames) and a manifest of the clips dlib can read."""
    from augmenter.crops import read_rgb
    from augmenter.datasets import build_manifest
    from augmenter.demo.corpus import make_demo_corpus
    from augmenter.face import get_face_backend
    from augmenter.manifest import clip_frames, write_manifest

    corpus = make_demo_corpus(
        workdir / "corpus", subjects=6, clips_per_subject=4, size=64, seed=0, frames=(16, 24)
    )
    frame = build_manifest("casme2", corpus.annotations, corpus.root, check_frames=True).frame
    backend = get_face_backend("dlib")
    usable = [
        backend.detect(read_rgb(clip_frames(row, corpus.root)[0][1])) is not None
        for _, row in frame.iterrows()
    ]
    return write_manifest(frame[usable], workdir / "manifest.csv"), corpus.root


def face_clips(size: int, frames: int, n: int) -> list[np.ndarray]:
    """`n` clips of a real face (skimage's astronaut) moving by a sub-pixel-ish drift: realistic bytes."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[0:256, 140:396], (size, size), interpolation=cv2.INTER_AREA)
    clips = []
    for index in range(n):
        shift = [np.float32([[1, 0, 0.1 * t + index % 3], [0, 1, 0.05 * t]]) for t in range(frames)]
        clips.append(
            np.stack([cv2.warpAffine(face, m, (size, size), borderMode=cv2.BORDER_REFLECT) for m in shift])
        )
    return clips


def write_ratio(workdir: Path, size: int, frames: int, n: int, repeats: int = 3) -> dict:
    """Raw write time / zarr write time (≥ 1 would mean zarr is faster) for `n` clips of `frames` × size².

    Every write makes a new file on both sides, as in a run (each clip is written once): the store has room
    for `repeats` × n clips, the raw side writes new names. Interleaved, best of `repeats`."""
    from augmenter.store import StoreWriter, write_clip

    clips = face_clips(size, frames, n)
    target = workdir / f"write-{size}.zarr"
    shutil.rmtree(target, ignore_errors=True)
    attrs = {"generator_kind": "x", "generator_checksum": "x", "size": size, "seed": 0}
    writer = StoreWriter(target, size=size, max_frames=frames, attrs=attrs)
    writer.group["clips"].resize((repeats * n + 1, frames, size, size, 3))
    write_clip(target, repeats * n, clips[0])  # the worker's writer is opened once; a run reuses it
    raw = workdir / f"raw-{size}"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    zarr_s, raw_s = [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        for index, clip in enumerate(clips):
            write_clip(target, repeat * n + index, clip)
        zarr_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        for index, clip in enumerate(clips):
            np.save(raw / f"{repeat}-{index}.npy", clip)
        raw_s.append(time.perf_counter() - started)
    return {
        "ratio": min(raw_s) / min(zarr_s),
        "zarr_ms": 1000 * min(zarr_s) / n,
        "raw_ms": 1000 * min(raw_s) / n,
    }


def _cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) so far of this process and each of its descendants (the workers)."""
    import psutil

    me = psutil.Process()
    seconds = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


@dataclass
class TimedRun:
    """One generate() call: wall seconds, scheduler overhead share, clips written, task span seconds, the
    idle share at the ends of the task span, CPU seconds of this process (driver, scheduler) and of its
    children (nannies and workers)."""

    wall: float
    overhead_share: float
    written: int
    span: float
    edge_idle_share: float
    driver_cpu: float
    worker_cpu: float


def timed_run(job, client) -> TimedRun:  # noqa: ANN001
    """Time one generate() call.

    The overhead share comes from Dask's task stream: on each worker, the time between its first task's start
    and its last task's end not spent computing (waiting for the scheduler, transfers, deserialisation),
    summed over workers, over the summed spans. The task span (first task's start to last task's end on any
    worker) leaves out what a run pays once whatever its size (planning, creating and closing the store). The
    edge idle share is the part of workers × task span a worker spent before its first or after its last
    task (one worker still busy with the last batch while the other has nothing left)."""
    from distributed import get_task_stream

    from augmenter.generate import generate

    before = _cpu_seconds()
    with get_task_stream(client=client) as stream:
        started = time.perf_counter()
        result = generate(job, client=client)
        wall = time.perf_counter() - started
    after = _cpu_seconds()
    driver_pid = os.getpid()
    driver_cpu = after[driver_pid] - before.get(driver_pid, 0.0)
    worker_cpu = sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid != driver_pid)
    if result.failures:
        raise SystemExit(f"benchmark run had failures: {result.failures[:3]}")
    spans: dict[str, list[float]] = {}
    compute = 0.0
    for task in stream.data:
        for part in task.get("startstops", ()):
            window = spans.setdefault(task["worker"], [part["start"], part["stop"]])
            window[0], window[1] = min(window[0], part["start"]), max(window[1], part["stop"])
            if part.get("action") == "compute":
                compute += part["stop"] - part["start"]
    span = sum(stop - start for start, stop in spans.values())
    overall = max(w[1] for w in spans.values()) - min(w[0] for w in spans.values()) if spans else float("nan")
    share = (1 - compute / span) if span > 0 else float("nan")
    edge_idle = 1 - span / (len(spans) * overall) if spans and overall > 0 else float("nan")
    return TimedRun(wall, share, result.written, overall, edge_idle, driver_cpu, worker_cpu)


def _prepared_inputs(spec: str, manifest: Path, root: Path, cache: Path, n: int, device: str, size: int):  # noqa: ANN202
    """(generator, the first `n` prepared source clips, the last clip's face as target), warmed up."""
    from augmenter.face import get_face_backend
    from augmenter.generators import load_generator
    from augmenter.manifest import read_manifest
    from augmenter.prepare import prepare_clip, prepare_targets_from_manifest

    generator = load_generator(spec, device, size=size)
    backend = get_face_backend("dlib")
    rows = read_manifest(manifest)
    sources = [prepare_clip(row, root, size, backend, cache_dir=cache) for _, row in rows.head(n).iterrows()]
    target = prepare_targets_from_manifest(rows.tail(1), root, size, backend, cache_dir=cache)[0]
    for source in sources:  # warm-up: each source's flow tracks made once, as a warm worker has them
        generator.animate(source, target)
    return generator, sources, target


def model_rate(
    spec: str, manifest: Path, root: Path, cache: Path, n: int, device: str = "cpu", size: int = 64
) -> tuple[float, float]:
    """(frames/s, mean frames per clip) of the generator's own `animate` on prepared clips, in this process
    (one thread on a CPU)."""
    generator, sources, target = _prepared_inputs(spec, manifest, root, cache, n, device, size)
    started = time.perf_counter()
    frames = sum(len(generator.animate(source, target)) for source in sources)
    return frames / (time.perf_counter() - started), frames / len(sources)


def _one_thread() -> None:
    """This process computes in one thread (torch, OpenCV, OpenMP), as each single-threaded worker does."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _animate_window(
    spec: str, manifest: Path, root: Path, cache: Path, n: int, start_at: float, seconds: float
) -> float:
    """Runs in its own process: frames/s of the generator's `animate` (one thread) over a window that opens at
    wall-clock `start_at` and lasts `seconds`, so processes started together measure the same moments."""
    _one_thread()
    generator, sources, target = _prepared_inputs(spec, manifest, root, cache, n, "cpu", 64)
    time.sleep(max(0.0, start_at - time.time()))
    started, frames, index = time.perf_counter(), 0, 0
    while time.perf_counter() - started < seconds:
        frames += len(generator.animate(sources[index % len(sources)], target))
        index += 1
    return frames / (time.perf_counter() - started)


def process_ceiling(spec: str, manifest: Path, root: Path, cache: Path, repeats: int, seconds: float) -> list:
    """What two single-threaded processes get over one on this machine for the model's own work, without
    Dask, the driver or the store: the ceiling `workers_2_vs_1` can reach here (shared memory bandwidth,
    caches, a VM's vCPUs)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ratios = []
    context = multiprocessing.get_context("spawn")
    for _ in range(repeats):
        rates = {}
        for processes in (1, 2):
            with ProcessPoolExecutor(processes, mp_context=context) as pool:
                start_at = time.time() + 15.0  # after every process has loaded the model and its clips
                futures = [
                    pool.submit(_animate_window, spec, manifest, root, cache, 8, start_at, seconds)
                    for _ in range(processes)
                ]
                rates[processes] = sum(f.result() for f in futures)
        ratios.append(rates[2] / rates[1])
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer pairings and repeats (a few minutes)")
    parser.add_argument(
        "--pairs", type=int, default=None, help="pairings per timed run (default 64, quick 16)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per worker count (default 3)")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, help="a checkpoint or a training-free kind")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    pairs = args.pairs or (16 if args.quick else 64)
    repeats = args.repeats or (2 if args.quick else 3)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="augmenter-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _one_thread()  # the model-rate baseline runs in one thread, as each worker does

    from distributed import Client

    from augmenter.cluster import local_cluster
    from augmenter.generate import GenerateJob

    load_before = os.getloadavg()[0]
    writes = {64: write_ratio(workdir, 64, 40, 10 if args.quick else 40)}
    writes[256] = write_ratio(workdir, 256, 60, 4 if args.quick else 10)
    manifest, root = build_inputs(workdir)
    cache = workdir / "cache"

    def job(name: str) -> GenerateJob:
        out = workdir / f"{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        return GenerateJob(
            manifest=manifest, root=root, generator=args.generator, targets=manifest, out=out, limit=pairs,
            progress=False, dashboard_address=None, identity_quality=False, cache_dir=cache,
        )  # fmt: skip

    rates: dict[int, list[float]] = {1: [], 2: []}
    cold_rates: dict[int, list[float]] = {1: [], 2: []}  # fresh workers' first pass
    task_rates: dict[int, list[float]] = {1: [], 2: []}  # clips per second of task span
    overhead: list[float] = []
    edge_idle: dict[int, list[float]] = {1: [], 2: []}
    cpu_per_clip: dict[int, dict[str, list[float]]] = {n: {"driver": [], "workers": []} for n in (1, 2)}
    for run in range(repeats + 1):  # run 0 fills the preparation cache and is not timed
        for workers in (1, 2):
            # Single-threaded workers in both cases (a lone worker would otherwise get every core's threads).
            cluster = local_cluster(workers, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            client = Client(cluster)
            try:
                client.wait_for_workers(workers, timeout=120)
                client.run(_warm, args.generator, 64)
                # the workers' first pass over the pairings (cold), then the same pairings into a new store
                # (warm: what every pass after a worker's first costs in a long job)
                cold = timed_run(job(f"w{workers}-{run}-cold"), client)
                client.run(_forget_targets)
                timed = timed_run(job(f"w{workers}-{run}"), client) if run > 0 else cold
            finally:
                client.close()
                cluster.close()
            if run == 0:
                continue
            cold_rates[workers].append(cold.written / cold.wall)
            rates[workers].append(timed.written / timed.wall)
            task_rates[workers].append(timed.written / timed.span)
            overhead.append(timed.overhead_share)
            edge_idle[workers].append(timed.edge_idle_share)
            cpu_per_clip[workers]["driver"].append(timed.driver_cpu / timed.written)
            cpu_per_clip[workers]["workers"].append(timed.worker_cpu / timed.written)
    from augmenter.store import store_table

    ceiling = process_ceiling(args.generator, manifest, root, cache, repeats, 10.0 if args.quick else 20.0)
    frames_made = int(store_table(workdir / "w1-1.zarr")["n_frames"].sum())
    model_fps, _ = model_rate(args.generator, manifest, root, cache, min(pairs, 8))
    e2e_fps = statistics.median(r * frames_made / pairs for r in rates[1])
    steady_fps = statistics.median(r * frames_made / pairs for r in task_rates[1])
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    task_ratios = [two / one for one, two in zip(task_rates[1], task_rates[2], strict=True)]
    cold_ratios = [two / one for one, two in zip(cold_rates[1], cold_rates[2], strict=True)]
    cpu = {n: {k: statistics.median(v) for k, v in parts.items()} for n, parts in cpu_per_clip.items()}
    # What the CPU costs allow: one worker is bound by its own CPU per clip (the driver has the other core);
    # two share the machine's cores with the driver, so 2 w1 / (w2 + d2) when they use every core.
    cores = os.cpu_count() or 1
    allowed = (min(2, cores) / (cpu[2]["workers"] + cpu[2]["driver"])) / (1 / cpu[1]["workers"])
    result = {
        "zarr_write_ratio_64": round(writes[64]["ratio"], 3),
        "zarr_write_ratio_256": round(writes[256]["ratio"], 3),
        "workers_2_vs_1": round(statistics.median(ratios), 3),
        "workers_2_vs_1_spread": [round(min(ratios), 3), round(max(ratios), 3)],
        # the same over the task span: without what each run pays once (planning, store open and close)
        "workers_2_vs_1_tasks": round(statistics.median(task_ratios), 3),
        "workers_2_vs_1_tasks_spread": [round(min(task_ratios), 3), round(max(task_ratios), 3)],
        # the same for fresh workers' first pass (each pays its one-time costs: first calls, heap growth)
        "workers_2_vs_1_cold": round(statistics.median(cold_ratios), 3),
        "workers_2_vs_1_cold_spread": [round(min(cold_ratios), 3), round(max(cold_ratios), 3)],
        # two bare processes animating vs one (no Dask): this machine's own ceiling for the ratio above
        "processes_2_vs_1": round(statistics.median(ceiling), 3),
        "processes_2_vs_1_spread": [round(min(ceiling), 3), round(max(ceiling), 3)],
        # CPU seconds per clip of the worker processes and of this process (driver, scheduler, nannies)
        "cpu_s_per_clip": {n: {k: round(v, 3) for k, v in parts.items()} for n, parts in cpu.items()},
        "cpu_allows_2_vs_1": round(allowed, 3),
        "overhead_share": round(statistics.median(overhead), 4),
        # workers × task span spent idle before a worker's first or after its last task (2 workers)
        "edge_idle_share_2": round(statistics.median(edge_idle[2]), 4),
        "end_to_end_vs_model": round(e2e_fps / model_fps, 3),
        "end_to_end_tasks_vs_model": round(steady_fps / model_fps, 3),
        "run_fixed_s": round(
            statistics.median(pairs / r - pairs / t for r, t in zip(rates[1], task_rates[1], strict=True)), 2
        ),
        "clips_per_s_1": [round(r, 3) for r in rates[1]],
        "clips_per_s_2": [round(r, 3) for r in rates[2]],
        "cold_clips_per_s_1": [round(r, 3) for r in cold_rates[1]],
        "cold_clips_per_s_2": [round(r, 3) for r in cold_rates[2]],
        "end_to_end_frames_per_s": round(e2e_fps, 1),
        "model_frames_per_s": round(model_fps, 1),
        "zarr_ms_per_clip": {k: round(v["zarr_ms"], 2) for k, v in writes.items()},
        "raw_ms_per_clip": {k: round(v["raw_ms"], 2) for k, v in writes.items()},
        "generator": Path(args.generator).name,
        "pairs": pairs,
        "repeats": repeats,
        "cores": os.cpu_count(),
        "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(f"workdir: {workdir}")
    print(json.dumps(result))


if __name__ == "__main__":  # workers are spawned: keep the benchmark off import
    main()
