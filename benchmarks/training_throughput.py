"""Training speed of FP-FOMM: steps/s and frame pairs/s of one `Trainer.step` (AMP on CUDA), peak memory,
and whether the loss falls, on one real clip (skimage's astronaut drifting by sub-pixel shifts, real dlib
landmarks — or a clip saved by `generator_throughput.py --save-clip`, for a machine without dlib).

With `--portability`, the trained weights also go through a checkpoint file and are animated on the CPU and
on the device (and under bfloat16 autocast on CUDA): the max/mean pixel differences say whether a GPU-trained
checkpoint generates the same clips everywhere.

With `--prepare MANIFEST ROOT`, it times what `train` does before its first step instead: a manifest's clips
prepared with their teacher flows in one process (cold cache), in the process pool (cold cache), then in the
pool again (warm cache).

    python benchmarks/training_throughput.py --config tiny-64 [--device cuda] [--steps 30] [--clip clip.npz]
    python benchmarks/training_throughput.py --prepare casme2.csv /data/CASME2 [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generator_throughput import load_clip, real_clip  # noqa: E402

from augmenter.cache import cache_stats  # noqa: E402
from augmenter.generators.fpfomm import load_fpfomm  # noqa: E402
from augmenter.model.checkpoint import save_checkpoint  # noqa: E402
from augmenter.model.config import load_config  # noqa: E402
from augmenter.pool import default_workers  # noqa: E402
from augmenter.prepare import prepare_clips_with_flows  # noqa: E402
from augmenter.train import Trainer, _step_generator, clip_tensors, draw_batch  # noqa: E402


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _report(what: str, reference: np.ndarray, other: np.ndarray) -> None:
    error = np.abs(reference - other)
    print(f"{what}: max pixel difference {error.max()}, mean {error.mean():.3f}")


def preparation(config: dict, manifest: Path, root: Path, workers: int | None) -> None:
    """Seconds to prepare a manifest's clips and teacher flows: one process cold, the pool cold and warm."""
    from augmenter.manifest import read_manifest

    frame = read_manifest(manifest)
    size, method = int(config["model"]["size"]), config["train"]["teacher_method"]
    workers = workers or default_workers()
    with tempfile.TemporaryDirectory() as serial_cache, tempfile.TemporaryDirectory() as cache:
        runs = (("1 process, cold", serial_cache, 1), (f"{workers} processes, cold", cache, workers))
        runs += ((f"{workers} processes, warm", cache, workers),)
        for label, folder, count in runs:
            started, cpu_before = time.perf_counter(), _cpu_seconds()
            prepare_clips_with_flows(frame, root, size, "dlib", folder, flows_method=method, workers=count)
            seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
            stats = cache_stats(folder)
            print(
                f"{label}: {seconds:.1f} s for {len(frame)} clips ({len(frame) / seconds:.2f} clips/s), "
                f"{cpu:.1f} CPU s in all processes; cache so far {stats.hits} hits, {stats.misses} misses"
            )


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (the pool's processes, once shut)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny-64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--clip", type=Path, default=None, help="a clip saved by generator_throughput.py")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "augmenter-bench-cache")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--portability", action="store_true")
    parser.add_argument("--prepare", nargs=2, type=Path, metavar=("MANIFEST", "ROOT"), default=None)
    parser.add_argument(
        "--workers", type=int, default=None, help="--prepare: pool processes (default: cores)"
    )
    args = parser.parse_args()
    if args.prepare is not None:
        preparation(load_config(args.config), args.prepare[0], args.prepare[1], args.workers)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = load_config(args.config)
    if args.batch:
        config["train"]["batch_size"] = args.batch
    size = int(config["model"]["size"])
    clip, target = (
        load_clip(args.clip, size, args.frames) if args.clip is not None else real_clip(size, args.frames)
    )
    started = time.perf_counter()
    tensors = clip_tensors(clip, config, args.cache)
    print(f"teacher flows: {time.perf_counter() - started:.1f} s (cached after the first run)")
    torch.manual_seed(0)
    trainer = Trainer(config, device)
    batch_size, pairs = int(config["train"]["batch_size"]), config["train"]["pairs"]

    def step(index: int) -> dict[str, float]:
        generator = _step_generator(0, index)
        return trainer.step(draw_batch([tensors], batch_size, pairs, generator), generator)

    for index in range(3):
        step(index)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    started = time.perf_counter()
    totals = [step(3 + index)["total"] for index in range(args.steps)]
    _synchronize(device)
    seconds = time.perf_counter() - started
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    memory = (
        f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
        if device.type == "cuda"
        else f"process RSS {psutil.Process().memory_info().rss / 2**30:.2f} GiB"
    )
    window = max(1, min(5, args.steps // 3))
    print(
        f"{args.config} on {device} ({name}), amp {trainer.amp} {trainer.amp_dtype if trainer.amp else ''}, "
        f"threads {torch.get_num_threads()}, batch {batch_size}, size {size}"
    )
    print(
        f"{args.steps / seconds:.2f} steps/s, {args.steps * batch_size / seconds:.1f} frame pairs/s; "
        f"{memory}; loss first {window} steps {np.mean(totals[:window]):.4f} "
        f"→ last {window} {np.mean(totals[-window:]):.4f}"
    )
    if args.portability:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "checkpoint.pt"
            save_checkpoint(path, trainer.payload(args.steps + 3, ("bench/1",), {"total": totals[-1]}))
            on_cpu = load_fpfomm(path, "cpu").animate(clip, target).astype(int)
            on_device = load_fpfomm(path, device).animate(clip, target).astype(int)
            _report(f"checkpoint animated on cpu vs {device}", on_cpu, on_device)
            if device.type == "cuda":
                amp = load_fpfomm(path, device, amp=True).animate(clip, target).astype(int)
                _report(f"cpu float32 vs {device} bfloat16", on_cpu, amp)


if __name__ == "__main__":
    main()
