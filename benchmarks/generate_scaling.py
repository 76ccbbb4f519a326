"""Generation scaling on this machine (not a test): prints the ratios measured in ONE run.

1. clips/s with 1 vs 2 CPU workers (target ≥ 1.8×), workers warmed first so start-up is not timed;
2. peak RSS (driver + all worker processes) for N vs 10·N clips (target < 1.2×: memory must not grow);
3. Zarr clip writes (`store.write_clip`, one shard per clip) vs raw writes of the same bytes (target ≥ 0.8×).

Uses the demo corpus at 64² and landmark-tps. Other processes on the machine skew every number: the load
average is printed with the results.

    python benchmarks/generate_scaling.py [--pairs 12] [--scale 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil


def _warm(spec: str, size: int) -> bool:
    """Runs on each worker: load the generator and the face backend before timing starts."""
    from augmenter.face import get_face_backend
    from augmenter.generate import _worker_generator

    _worker_generator(spec, size)
    get_face_backend("dlib")
    return True


class PeakRSS:
    """Samples the summed RSS of this process and all its children (the workers) every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_inputs(workdir: Path) -> tuple[Path, Path]:
    """Demo corpus (6 subjects × 3 clips, 64², 16–24 frames) and a manifest of the clips dlib can read."""
    from augmenter.datasets import build_manifest
    from augmenter.demo.corpus import make_demo_corpus
    from augmenter.face import get_face_backend
    from augmenter.manifest import clip_frames, write_manifest
    from augmenter.prepare import read_rgb

    corpus = make_demo_corpus(
        workdir / "corpus", subjects=6, clips_per_subject=3, size=64, seed=0, frames=(16, 24)
    )
    frame = build_manifest("casme2", corpus.annotations, corpus.root, check_frames=True).frame
    backend = get_face_backend("dlib")
    usable = [
        backend.detect(read_rgb(clip_frames(row, corpus.root)[0][1])) is not None
        for _, row in frame.iterrows()
    ]
    return write_manifest(frame[usable], workdir / "manifest.csv"), corpus.root


def run(job, client) -> tuple[float, int, int]:  # noqa: ANN001
    """(seconds, clips written, peak RSS bytes) of one generate() call on a warm client."""
    from augmenter.generate import generate

    with PeakRSS() as rss:
        started = time.perf_counter()
        result = generate(job, client=client)
        seconds = time.perf_counter() - started
    if result.failures:
        raise SystemExit(f"benchmark run had failures: {result.failures[:3]}")
    return seconds, result.written, rss.peak


def write_speed(store: Path, workdir: Path) -> tuple[float, float, int]:
    """(zarr s, raw s, clips): write every clip of `store` again, as zarr shards and as raw files."""
    from augmenter.store import create_store, read_clip, store_table, write_clip

    table = store_table(store)
    clips = [read_clip(store, int(i)) for i in table["index"]]
    max_frames = max(len(c) for c in clips)
    size = clips[0].shape[1]
    padded = [np.pad(c, ((0, max_frames - len(c)), (0, 0), (0, 0), (0, 0))) for c in clips]
    target = workdir / "write-speed.zarr"
    shutil.rmtree(target, ignore_errors=True)
    group = create_store(target, size=size, max_frames=max_frames, attrs={
        "generator_kind": "x", "generator_checksum": "x", "size": size, "seed": 0})  # fmt: skip
    group["clips"].resize((len(clips), max_frames, size, size, 3))
    started = time.perf_counter()
    for index, clip in enumerate(clips):
        write_clip(target, index, clip)
    zarr_seconds = time.perf_counter() - started
    raw = workdir / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    started = time.perf_counter()
    for index, clip in enumerate(padded):  # the same bytes write_clip hands to zarr
        with open(raw / f"{index}.bin", "wb") as stream:
            stream.write(clip.tobytes())
    raw_seconds = time.perf_counter() - started
    return zarr_seconds, raw_seconds, len(clips)


def main() -> None:
    from augmenter.cluster import close_client, get_client
    from augmenter.generate import GenerateJob

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=12, help="N: pairings of the small runs")
    parser.add_argument("--scale", type=int, default=10, help="the large run makes scale × N pairings")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="augmenter-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    manifest, root = build_inputs(workdir)

    def job(name: str, limit: int) -> GenerateJob:
        out = workdir / f"{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(out.name + ".cache"), ignore_errors=True)
        return GenerateJob(
            manifest=manifest, root=root, generator="landmark-tps", targets=manifest, out=out, limit=limit,
            size=64, progress=False, dashboard_address=None, batch_size=2,
        )  # fmt: skip

    rates, peaks = {}, {}
    for workers in (1, 2):
        client = get_client(workers=workers, gpus="none", dashboard_address=None)
        try:
            client.wait_for_workers(workers, timeout=120)
            client.run(_warm, "landmark-tps", 64)
            seconds, written, _ = run(job(f"w{workers}", 2 * args.pairs), client)
            rates[workers] = written / seconds
            if workers == 2:
                for n in (args.pairs, args.scale * args.pairs):
                    _, _, peaks[n] = run(job(f"rss{n}", n), client)
        finally:
            close_client(client)
    zarr_s, raw_s, n_clips = write_speed(workdir / f"rss{args.scale * args.pairs}.zarr", workdir)
    small, large = args.pairs, args.scale * args.pairs

    load_after = os.getloadavg()[0]
    speed_up = rates[2] / rates[1]
    rss_ratio = peaks[large] / peaks[small]
    zarr_ms, raw_ms = 1000 * zarr_s / n_clips, 1000 * raw_s / n_clips
    write_share = 100 * zarr_ms / (1000 / rates[2])
    lines = [
        f"load average before/after: {load_before[0]:.1f} / {load_after:.1f} on {os.cpu_count()} cores",
        f"clips/s  1 worker {rates[1]:.2f}   2 workers {rates[2]:.2f}"
        f"   speed-up {speed_up:.2f}x (target >= 1.8x)",
        f"peak RSS {small} clips {peaks[small] / 2**20:.0f} MiB"
        f"   {large} clips {peaks[large] / 2**20:.0f} MiB   ratio {rss_ratio:.2f}x (target < 1.2x)",
        f"writes   zarr {zarr_ms:.1f} ms/clip   raw {raw_ms:.2f} ms/clip"
        f"   zarr/raw speed {raw_s / zarr_s:.2f}x (target >= 0.8x)",
        f"         a zarr write is {write_share:.1f}% of a clip's generation time at 2 workers",
    ]
    print("\n".join(lines))
    print(f"workdir: {workdir}")


if __name__ == "__main__":  # workers are spawned: keep the benchmark off import
    main()
