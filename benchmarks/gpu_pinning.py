"""GPU pinning on a real GPU box: the local Dask cluster gets one worker per card, pinned by its
CUDA_VISIBLE_DEVICES, and a GPU-resource task runs an FP-FOMM clip on that card.

    PYTHONPATH=benchmarks python benchmarks/gpu_pinning.py CLIP.npz  # saved by generator_throughput.py
"""

import sys
import time
from pathlib import Path

from augmenter.cluster import close_client, cluster_has_gpus, detect_gpus, get_client


def probe() -> dict:
    import os

    import torch

    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "device_count": torch.cuda.device_count(),
        "name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def animate_on_worker(clip_path: str) -> dict:
    import time
    from pathlib import Path

    import torch
    from generator_throughput import load_clip

    from augmenter.generators.fpfomm import FPFOMMGenerator, resolve_device
    from augmenter.model.config import load_config
    from augmenter.model.networks import Networks

    config = load_config("tiny-64")
    torch.manual_seed(0)
    model = FPFOMMGenerator(Networks(config), config, "random", (), resolve_device("auto"))
    clip, target = load_clip(Path(clip_path), 64, 48)
    model.animate(clip, target)
    started = time.perf_counter()
    for _ in range(5):
        model.animate(clip, target)
    return {"device": str(model.device), "frames_per_s": 5 * 48 / (time.perf_counter() - started)}


if __name__ == "__main__":
    print("detect_gpus:", detect_gpus())
    started = time.perf_counter()
    client = get_client()
    client.wait_for_workers(1)
    print(f"cluster up in {time.perf_counter() - started:.1f} s; has GPU workers: {cluster_has_gpus(client)}")
    print("workers:", client.run(probe))
    if not cluster_has_gpus(client):
        close_client(client)
        raise SystemExit("no GPU worker: this check needs a CUDA machine")
    clip = str(Path(sys.argv[1]).resolve())
    result = client.submit(animate_on_worker, clip, resources={"GPU": 1}, pure=False).result()
    print("GPU task:", result)
    close_client(client)
