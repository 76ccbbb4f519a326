"""Generation at CASME II scale by simulation (not a test): does every cost stay flat per clip?

A demo corpus of ~400 clips gives a plan of ~100,000 pairings (255 sources × ~400 targets, persons never
paired with themselves). The pixels are made cheap, not the bookkeeping: `copy-onset` clips prepared at 8² (a
3 KB chunk each), so what is measured is planning, the store, the scheduler and the driver. Reported:
planning time of the whole plan; store creation (all rows appended); the resume scan and `store_table` on the
full store; a run of N and of 10·N pairings on 2 workers (warm preparation cache) with peak RSS of the driver
and of the workers; a kill -9 of a 10·N job at about half way, then the re-run's resume time (plan + store
scan, until work continues) and its final count, which must equal the plan exactly.

Targets: 10× pairings → < 1.2× peak memory and < 11× time; resume in seconds.

    python benchmarks/generate_scale.py [--quick] [--workdir DIR]

`--quick`: a ~10,000-pairing plan, runs of 1,000 and 10,000 (under 5 minutes on 2 cores). Ends with one JSON
line: {"pairings", "plan_s", "rss_ratio_10x", "time_ratio_10x", "resume_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

SIZE = 8  # prepared frame side: copy-onset clips of 8² keep the pixels negligible


class PeakRSS:
    """Peak RSS of this process (the driver) and, separately, of the sum of its children (the workers)."""

    def __init__(self) -> None:
        self.driver = self.workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            children = 0
            for process in me.children(recursive=True):
                try:
                    children += process.memory_info().rss
                except psutil.Error:
                    pass
            self.driver = max(self.driver, me.memory_info().rss)
            self.workers = max(self.workers, children)
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_inputs(workdir: Path, subjects: int, clips: int, sources: int) -> tuple[Path, Path, Path]:
    """(source manifest, target manifest, root): `sources` clips move the faces of all `subjects × clips`."""
    from augmenter.datasets import build_manifest
    from augmenter.demo.corpus import make_demo_corpus
    from augmenter.manifest import write_manifest

    corpus = make_demo_corpus(
        workdir / "corpus", subjects=subjects, clips_per_subject=clips, size=64, seed=0, frames=(16, 16)
    )
    frame = build_manifest("casme2", corpus.annotations, corpus.root, check_frames=False).frame
    targets = write_manifest(frame, workdir / "targets.csv")
    chosen = frame.iloc[:: max(1, len(frame) // sources)].head(sources)
    return write_manifest(chosen, workdir / "sources.csv"), targets, corpus.root


def _prepare(row: dict, root: str, cache: str) -> bool:
    """Worker task: fill the shared preparation cache with one clip and its onset target (warm runs)."""
    import pandas as pd

    from augmenter.face import get_face_backend
    from augmenter.prepare import prepare_clip, prepare_targets_from_manifest

    backend = get_face_backend("dlib")
    try:
        prepare_clip(row, root, SIZE, backend, cache_dir=cache)
        prepare_targets_from_manifest(pd.DataFrame([row]), root, SIZE, backend, cache_dir=cache)
    except Exception:  # noqa: BLE001 - a face dlib misses fails its pairings in the runs, as in real use
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k-pairing plan, runs of 1k and 10k")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="augmenter-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    subjects, clips, n_sources = (11, 10, 100) if args.quick else (21, 20, 255)  # 10,000 and 102,000 pairings
    small = 1000 if args.quick else 10000

    from augmenter.cluster import close_client, get_client
    from augmenter.generate import GenerateJob, describe_generator, generate
    from augmenter.manifest import read_manifest
    from augmenter.plan import load_targets, make_plan
    from augmenter.store import StoreWriter, store_table

    sources_csv, targets_csv, root = build_inputs(workdir, subjects, clips, n_sources)
    cache = workdir / "cache"
    info = describe_generator("copy-onset", SIZE)

    started = time.perf_counter()
    plan = make_plan(read_manifest(sources_csv), load_targets(targets_csv)[0],
                     generator_checksum=info["generator_checksum"])  # fmt: skip
    plan_s = time.perf_counter() - started
    pairings = len(plan)

    attrs = info | {"seed": 0}
    scratch = workdir / "full.zarr"
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.perf_counter()
    writer = StoreWriter(scratch, size=SIZE, max_frames=16, attrs=attrs)
    writer.append(plan, info)
    create_s = time.perf_counter() - started
    started = time.perf_counter()
    reopened = StoreWriter(scratch, size=SIZE, max_frames=16, attrs=attrs)
    reopened.append(plan, info)
    reopened.done()
    scan_s = time.perf_counter() - started
    started = time.perf_counter()
    store_table(scratch, include_pending=True)
    table_s = time.perf_counter() - started

    def job(name: str, limit: int) -> GenerateJob:
        return GenerateJob(
            manifest=sources_csv, root=root, generator="copy-onset", targets=targets_csv, out=workdir / name,
            size=SIZE, limit=limit, identity_quality=False, progress=False, dashboard_address=None,
            cache_dir=cache,
        )  # fmt: skip

    runs = {}
    client = get_client(workers=args.workers, gpus="none", dashboard_address=None)
    try:
        client.wait_for_workers(args.workers, timeout=120)
        rows = read_manifest(targets_csv).to_dict("records")
        prepared = client.gather(client.map(_prepare, rows, root=str(root), cache=str(cache), pure=False))
        for limit in (small, 10 * small):
            name = f"run-{limit}.zarr"
            shutil.rmtree(workdir / name, ignore_errors=True)
            with PeakRSS() as rss:
                began = time.perf_counter()
                result = generate(job(name, limit), client=client)
                seconds = time.perf_counter() - began
            runs[limit] = {"s": seconds, "driver_mb": rss.driver / 2**20, "workers_mb": rss.workers / 2**20,
                           "written": result.written, "failed": len(result.failures)}  # fmt: skip
    finally:
        close_client(client)

    # kill -9 of a whole job (driver, scheduler, workers) about half way, then the same command again
    killed = workdir / "killed.zarr"
    shutil.rmtree(killed, ignore_errors=True)
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "generate",
               f"--manifest={sources_csv}", f"--root={root}", "--generator=copy-onset",
               f"--targets={targets_csv}", f"--out={killed}", f"--size={SIZE}", f"--limit={10 * small}",
               f"--cache-dir={cache}",
               f"--workers={args.workers}", "--no-identity-quality"]  # fmt: skip
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def written() -> int:  # chunk files, one per finished clip (clips/c.<i>.0.0.0.0)
        folder = killed / "clips"
        return sum(1 for entry in os.scandir(folder) if entry.name.startswith("c.")) if folder.exists() else 0

    while process.poll() is None and written() < 5 * small:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = int(store_table(killed)["done"].sum()) if (killed / "zarr.json").exists() else 0
    started = time.perf_counter()
    resumed_plan = make_plan(read_manifest(sources_csv), load_targets(targets_csv)[0],
                             generator_checksum=info["generator_checksum"], limit=10 * small)  # fmt: skip
    scan = StoreWriter(killed, size=SIZE, max_frames=16, attrs=attrs)
    todo = int((~scan.done()[scan.append(resumed_plan, info)]).sum())
    resume_s = time.perf_counter() - started  # what the re-run does before work continues
    Path(f"{killed}.lock").unlink(
        missing_ok=True
    )  # the killed job's lock (its pid is dead: taken over anyway)
    rerun = subprocess.run(command, capture_output=True, text=True)
    # Exact: the resumed store holds the very clips the uninterrupted run of the same plan made (pairings
    # whose clip has no findable face fail in both, with the same one-line error; generate then exits 1).
    final = store_table(killed)
    clean = store_table(workdir / f"run-{10 * small}.zarr")
    exact = rerun.returncode in (0, 1) and set(final["pair_id"]) == set(clean["pair_id"])

    one, ten = runs[small], runs[10 * small]
    result = {
        "pairings": pairings,
        "plan_s": round(plan_s, 2),
        "rss_ratio_10x": round(
            (ten["driver_mb"] + ten["workers_mb"]) / (one["driver_mb"] + one["workers_mb"]), 3
        ),
        "time_ratio_10x": round(ten["s"] / one["s"], 2),
        "resume_s": round(resume_s, 2),
        "store_create_s": round(create_s, 2),
        "resume_scan_full_s": round(scan_s, 2),
        "store_table_full_s": round(table_s, 2),
        "runs": {
            str(k): {key: round(v, 1) if isinstance(v, float) else v for key, v in r.items()}
            for k, r in runs.items()
        },  # fmt: skip
        "killed_at_done": before,
        "resumed_todo": todo,
        "resume_exact": bool(exact),
        "prepared_ok": int(sum(prepared)),
        "cores": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),
    }
    print(f"workdir: {workdir}")
    print(json.dumps(result))


if __name__ == "__main__":  # workers are spawned: keep the benchmark off import
    main()
