"""Ablation of FP-FOMM's motion fixes on the demo corpus: which switches make the model learn micro-motion.

Subjects 1..8 train, 9..10 validate (the config is chosen there), 11..12 are the reported test subjects. Each
run trains for a fixed number of steps on the training subjects only, then `augmenter.score.score_generator`
scores self-reenactment (flow EPE onset → apex inside the face, L1) beside copy-onset.

    python benchmarks/fpfomm_ablation.py --out /tmp/ablation --steps 80
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from augmenter.datasets import build_manifest
from augmenter.demo.corpus import make_demo_corpus
from augmenter.manifest import write_manifest
from augmenter.model.config import load_config
from augmenter.score import score_generator
from augmenter.train import train

VALIDATION = ("9", "10")
TEST = ("11", "12")


def variants() -> dict[str, dict]:
    """Named configs: the seed, tiny-64 and tiny-64 with one fix removed at a time."""
    tiny = load_config("tiny-64")
    out = {"seed-64": load_config("seed-64"), "tiny-64": tiny}
    for name, (section, key, value) in {
        "tiny-no-teacher": ("train", "teacher_flow", 0.0),
        "tiny-decoder-output": ("generator", "output", "decoder"),
        "tiny-untracked": ("train", "tracked_keypoints", False),
        "tiny-no-background": ("dense_motion", "background", False),
    }.items():
        config = copy.deepcopy(tiny)
        (config["train"] if section == "train" else config["model"][section])[key] = value
        config["name"] = name
        out[name] = config
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus_dir = args.out / "corpus"
    manifest = args.out / "manifest.csv"
    if not manifest.is_file():
        corpus = make_demo_corpus(
            corpus_dir, subjects=12, clips_per_subject=3, size=64, seed=0, frames=(16, 24)
        )
        build = build_manifest("casme2", corpus.annotations, corpus.root, check_frames=True)
        write_manifest(build.frame, manifest)
        (args.out / "root.txt").write_text(str(corpus.root))
    root = Path((args.out / "root.txt").read_text())
    cache = args.out / "cache"
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, config in variants().items():
        if args.only and name not in args.only or name in results:
            continue
        started = time.monotonic()
        result = train(
            manifest,
            root,
            config,
            args.out / "runs" / name,
            steps=args.steps,
            exclude_subjects=VALIDATION + TEST,
            cache_dir=cache,
            progress=False,
            device="cpu",
        )
        minutes = (time.monotonic() - started) / 60
        row = {"steps": result.steps, "train_minutes": round(minutes, 2)}
        for split, subjects in (("validation", VALIDATION), ("test", TEST)):
            scores = score_generator(result.checkpoint, manifest, root, subjects=subjects, cache_dir=cache)
            row[split] = {k: scores["generator"][k] for k in ("flow_epe", "l1", "flow_cos")}
            row[split + "_copy_onset"] = {k: scores["copy_onset"][k] for k in ("flow_epe", "l1")}
        results[name] = row
        results_path.write_text(json.dumps(results, indent=1))
        print(name, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
