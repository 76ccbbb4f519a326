"""paper-256 on a GPU (not a test): training on the 256² demo corpus, self-reenactment on held-out persons,
and `generate` end to end against the model's own rate — one script for a lent GPU machine, one JSON line.

A lent GPU machine has no dlib and cannot download its models, so the script has two halves:

    python benchmarks/paper256_gpu.py prepare --bundle .gpu          # here: any machine with the project
    python benchmarks/paper256_gpu.py run --bundle .gpu --out OUT    # there: torch + CUDA, no dlib

`prepare` renders the 256² demo corpus (9 persons × 8 clips), builds its manifest with persons, and fits
dlib's face boxes and landmarks for every frame into the preparation cache (the size-independent face
files only; the crops are cheap to redo), recording each frame file's time stamp. `run` restores those time
stamps so the cache keys match, and sees faces only through those cached real dlib fits: its face backend
(named "dlib", so the keys match) refuses any new detection, and in the self-reenactment scores it returns
NaN for landmarks and identity embeddings of generated frames, so `akd` and `aed` are not measured there —
flow EPE and cosine, overall and in the AU regions, are.

`run` then (persons split as benchmarks/person_splits.py does: 3 test, 2 validation, the rest train):
1. trains paper-256 on the train persons (`--steps`, batch 9, bf16 autocast) and records the loss curve
   and steps/s;
2. scores it on the test persons beside landmark-tps, demo-oracle and copy-onset (one clip set), flow by
   TV-L1 at 256²;
3. times `augmenter generate` with it (`--random-weights`: paper-256 untrained, steps 1–2 skipped) on one
   warm GPU worker over every demo source (`--pairings` each), batches run sequentially and pipelined
   (preparation and writes beside the model), twice each, against the generator's own `animate` frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIZE = 256
STAMPS_FILE = "frame-stamps.json"
SITE_FILE = "sitecustomize.py"
# Installed in every Python process of `run` (Dask workers and preparation pools included) through a
# sitecustomize on PYTHONPATH: the "dlib" backend becomes the cached-fits-only stand-in below.
SITECUSTOMIZE = """\
import os
if os.environ.get("AUGMENTER_CACHED_FACES_ONLY"):
    import paper256_gpu
    paper256_gpu.install_cached_fits_backend()
"""


class CachedFitsOnly:
    """A face backend for a machine without dlib: every face comes from the preparation cache.

    Named "dlib" because the cached fits are dlib's. Any detection means a cache miss and raises; landmarks
    and embeddings (asked only by the scorer, of generated frames) are NaN, so those metrics read as
    unmeasured rather than wrong."""

    name = "dlib"
    identity_threshold = 0.6

    def detect(self, image: np.ndarray):  # noqa: ANN201
        raise RuntimeError(
            "no dlib on this machine and a frame missed the preparation cache: re-run `prepare` here and "
            "carry the bundle again"
        )

    detect_all = detect

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:  # noqa: ANN001
        return np.full((68, 2), np.nan, np.float32)

    def embedding(self, image: np.ndarray, box) -> np.ndarray:  # noqa: ANN001
        return np.full(128, np.nan, np.float32)


def install_cached_fits_backend() -> None:
    import augmenter.face

    backend = CachedFitsOnly()
    augmenter.face._load_backend = lambda name, model_root: backend


def _corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg") if p.is_file())


def prepare(bundle: Path) -> None:
    """Corpus, manifest and the dlib face fits of every frame, with the frames' time stamps."""
    from person_splits import demo_manifest

    from augmenter.prepare import prepare_clips

    manifest, root, frame = demo_manifest(bundle / "corpus", 9, 8, SIZE, (16, 32))
    cache = bundle / "cache"
    prepare_clips(frame, root, SIZE, "dlib", cache_dir=cache, workers=2)
    for crops in cache.rglob(f"*-{SIZE}px-*.npz"):  # the crops are redone there from the frames
        crops.unlink()
    stamps = {str(p.relative_to(bundle)): p.stat().st_mtime_ns for p in _corpus_files(root)}
    (bundle / STAMPS_FILE).write_text(json.dumps(stamps))
    (bundle / SITE_FILE).write_text(SITECUSTOMIZE)
    total = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"bundle {bundle}: {len(stamps)} frames, manifest {manifest}, {total / 2**20:.1f} MiB")


def _restore_stamps(bundle: Path) -> None:
    for relative, stamp in json.loads((bundle / STAMPS_FILE).read_text()).items():
        os.utime(bundle / relative, ns=(stamp, stamp))


def _loss_curve(run_dir: Path) -> list[dict]:
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    keep = np.unique(np.linspace(0, len(records) - 1, 8).round().astype(int))
    return [{"step": records[i]["step"], "total": records[i]["total"]} for i in keep]


def random_checkpoint(path: Path, device: str) -> Path:
    """paper-256 with its initial random weights: what `generate` costs does not depend on training."""
    import torch

    from augmenter.model.checkpoint import save_checkpoint
    from augmenter.model.config import load_config
    from augmenter.train import Trainer

    trainer = Trainer(load_config("paper-256"), torch.device(device))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, trainer.payload(0, ("bench/random",), {}, ("bench-random",)))
    return path


def train_and_score(bundle: Path, out: Path, steps: int, device: str, limit: int | None) -> tuple[dict, Path]:
    """paper-256 trained on the train persons, then scored on the test persons beside landmark-tps, the
    oracle and copy-onset. Returns (results, checkpoint)."""
    import torch
    from person_splits import split_persons

    from augmenter.manifest import read_manifest
    from augmenter.score import score_generators
    from augmenter.train import train

    manifest, root, cache = _paths(bundle)
    split = split_persons(read_manifest(manifest), n_validation=2, n_test=3, seed=0)
    result: dict = {"split": split.as_dict()}
    started = time.perf_counter()
    run_dir = out / "paper-256"
    trained = train(
        manifest, root, "paper-256", run_dir, steps=steps, device=device, cache_dir=cache,
        exclude_persons=split.validation + split.test, progress=False, workers=os.cpu_count(), resume=True,
    )  # fmt: skip
    result["train"] = {
        "steps": trained.steps,
        "seconds": round(trained.seconds, 1),
        "wall_s_with_preparation": round(time.perf_counter() - started, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "loss_curve": _loss_curve(run_dir),
    }
    print(json.dumps({"train": result["train"]}), flush=True)
    started = time.perf_counter()
    rows = [
        ("paper-256", (str(trained.checkpoint),)),
        ("landmark-tps", ("landmark-tps",)),
        ("oracle", (f"demo-oracle:{root.resolve()}",)),
    ]
    table = score_generators(
        rows, manifest, root, persons=split.test[:limit], size=SIZE, backend=CachedFitsOnly(), device=device,
        out=out / "scores.json", cache_dir=cache, progress=False,
    )  # fmt: skip
    keys = ("flow_epe", "ci_flow_epe", "flow_cos", "flow_epe_au", "flow_cos_au", "l1", "n_clips")
    result["scores"] = {
        name: {k: row.get(k) for k in keys}
        for name, row in {**table["rows"], "copy-onset": table["copy_onset"]}.items()
    }
    result["scores_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"scores": result["scores"]}), flush=True)
    return result, trained.checkpoint


def generate_rates(
    bundle: Path, out: Path, checkpoint: Path, pairings: int, device: str, limit: int | None
) -> dict:
    """`generate` on one warm worker (one per GPU), sequential vs pipelined batches, against the model's own
    `animate` rate. A first run fills the preparation cache and is not compared."""
    from generate_scaling import _warm, model_rate

    from augmenter.cluster import close_client, get_client
    from augmenter.generate import GenerateJob, generate
    from augmenter.store import store_table

    manifest, root, cache = _paths(bundle)
    spec = str(checkpoint)
    client = get_client(gpus=None if device == "cuda" else "none", workers=1, dashboard_address=None)
    try:
        client.wait_for_workers(1, timeout=120)
        client.run(_warm, spec, SIZE)

        def timed(name: str, pipeline: bool | None) -> dict:
            store = out / f"{name}.zarr"
            job = GenerateJob(
                manifest=manifest, root=root, generator=spec, targets=manifest, out=store,
                max_per_source=pairings, size=SIZE, seed=0, cache_dir=cache, dashboard_address=None,
                identity_quality=False, progress=False, limit=limit, pipeline=pipeline,
            )  # fmt: skip
            generated = generate(job, client=client)
            frames_made = int(store_table(store)["n_frames"].sum())
            return {
                "clips": generated.written,
                "failures": len(generated.failures),
                "frames": frames_made,
                "run_s": round(generated.seconds, 2),
                "clips_per_s": round(generated.written / generated.seconds, 2),
                "frames_per_s": round(frames_made / generated.seconds, 1),
            }

        runs = {"cache-filling": timed("generated-0", None)}
        for repeat in (1, 2):
            runs[f"sequential-{repeat}"] = timed(f"sequential-{repeat}", False)
            runs[f"pipelined-{repeat}"] = timed(f"pipelined-{repeat}", True)
    finally:
        close_client(client)
    model_fps, _ = model_rate(spec, manifest, root, cache, limit or 8, device=device, size=SIZE)
    best = {
        mode: max(runs[f"{mode}-{r}"]["frames_per_s"] for r in (1, 2)) for mode in ("sequential", "pipelined")
    }
    return {
        "runs": runs,
        "model_frames_per_s": round(model_fps, 1),
        "end_to_end_vs_model": {mode: round(fps / model_fps, 3) for mode, fps in best.items()},
    }


def _paths(bundle: Path) -> tuple[Path, Path, Path]:
    """(manifest, corpus root, preparation cache) of a bundle."""
    return bundle / "corpus" / "manifest.csv", bundle / "corpus" / "corpus", bundle / "cache"


def run(
    bundle: Path, out: Path, steps: int, pairings: int, device: str, limit: int | None, random_weights: bool
) -> dict:
    """Train and score (unless `random_weights`), then time `generate` (module docstring). `device` cpu and
    `limit` (test persons scored, pairings generated) make a small smoke run on a CPU machine."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("run needs a CUDA GPU (or --device cpu for a smoke run)")
    install_cached_fits_backend()
    _restore_stamps(bundle)
    result: dict = {
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none",
        "torch": torch.__version__,
    }
    if random_weights:
        checkpoint = random_checkpoint(out / "random" / "checkpoint.pt", device)
    else:
        scored, checkpoint = train_and_score(bundle, out, steps, device, limit)
        result.update(scored)
    result["weights"] = "random" if random_weights else "trained"
    result["generate"] = generate_rates(bundle, out, checkpoint, pairings, device, limit)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("prepare", help="corpus + cached dlib fits (a machine with dlib)")
    made.add_argument("--bundle", type=Path, required=True)
    ran = sub.add_parser("run", help="train, score and generate on the GPU")
    ran.add_argument("--bundle", type=Path, required=True)
    ran.add_argument("--out", type=Path, required=True)
    ran.add_argument("--steps", type=int, default=1500)
    ran.add_argument("--pairings", type=int, default=4, help="pairings per source for the generate timing")
    ran.add_argument("--device", default="cuda", help="cpu: a smoke run of the plumbing")
    ran.add_argument("--limit", type=int, default=None, help="test persons scored and pairings generated")
    ran.add_argument("--random-weights", action="store_true", help="skip training and scoring: time generate")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.bundle)
        return
    result = run(
        args.bundle, args.out, args.steps, args.pairings, args.device, args.limit, args.random_weights
    )
    print(json.dumps(result))


if __name__ == "__main__":  # Dask workers and preparation pools are spawned: keep the run off import
    main()
