"""Ablation of FP-FOMM's motion fixes on the demo corpus, with three disjoint person sets.

Which switches make the model learn micro-motion? Every variant trains for the same number of steps on the
TRAIN persons only; its self-reenactment flow EPE on the VALIDATION persons chooses the recipe; the TEST
persons (never seen, never used to choose) give the reported table, one clip set for every row: each
variant, landmark-tps (defaults chosen by benchmarks/landmark_tps_selection.py on non-test persons),
copy-onset (the floor) and demo-oracle (the ceiling). Persons, not subjects: a demo subject that is a
variant of another person sits in that person's set (benchmarks/person_splits.py). The corpus is the
`augmenter demo` corpus with another seed; a --out shared with the landmark-tps selection reuses corpus,
manifest and prepared clips.

    python benchmarks/fpfomm_ablation.py --out /tmp/selection --steps 150
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from person_splits import demo_manifest, split_persons

from augmenter.model.config import load_config
from augmenter.score import format_table, score_generators
from augmenter.train import train

# Reported per split: the flow metrics (face, AU regions) and L1.
KEYS = ("flow_epe", "flow_epe_au", "flow_cos", "l1")


def variants() -> dict[str, dict]:
    """Named configs: the seed, tiny-64, tiny-64 with one of its changes removed at a time, tiny-64 with its
    earlier output ("tiny-blend-bilinear"), and the recipe it had before flow-tracked keypoints, the landmark
    TPS choice and the pixel-warp output ("tiny-previous")."""
    tiny = load_config("tiny-64")
    out = {"seed-64": load_config("seed-64"), "tiny-64": tiny}
    dlib_tracks = [("train", "track_method", "landmarks"), ("train", "track_sigma_frames", 2.0)]
    no_tps = [("dense_motion", "landmark_tps", False)]
    # tiny-64's output before the pixel-warp one: decoder where occluded, bilinear pixel sampling
    blend = [("generator", "output", "blend"), ("generator", "pixel_interpolation", "bilinear")]
    changes: dict[str, list[tuple[str, str, object]]] = {
        "tiny-no-teacher": [("train", "teacher_flow", 0.0)],
        "tiny-decoder-output": [("generator", "output", "decoder")],
        "tiny-untracked": [("train", "tracked_keypoints", False)],
        "tiny-no-background": [("dense_motion", "background", False)],
        "tiny-landmark-tracks": dlib_tracks,
        "tiny-no-landmark-tps": no_tps,
        "tiny-bilinear": [("generator", "pixel_interpolation", "bilinear")],
        "tiny-blend-output": [("generator", "output", "blend")],
        "tiny-blend-bilinear": blend,
        "tiny-previous": dlib_tracks + no_tps + blend,
    }
    for name, settings in changes.items():
        config = copy.deepcopy(tiny)
        for section, key, value in settings:
            (config["train"] if section == "train" else config["model"][section])[key] = value
        config["name"] = name
        out[name] = config
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=9)
    parser.add_argument("--clips-per-subject", type=int, default=8)
    parser.add_argument("--corpus-size", type=int, default=128)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest, root, frame = demo_manifest(
        args.out, args.subjects, args.clips_per_subject, args.corpus_size, (16, 32)
    )
    split = split_persons(frame, n_validation=2, n_test=3, seed=args.split_seed)
    held_out = split.subjects_of(split.validation + split.test)
    cache = args.out / "cache"
    results_path = args.out / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if results.get("split") not in (None, split.as_dict()) or results.get("steps") not in (None, args.steps):
        raise SystemExit(f"{results_path}: made with another split or step count; use another --out")
    results.update({"split": split.as_dict(), "steps": args.steps})
    runs = results.setdefault("variants", {})
    checkpoints: dict[str, Path] = {}
    for name, config in variants().items():
        if args.only and name not in args.only:
            continue
        run_dir = args.out / "runs" / f"{name}-{args.steps}"
        checkpoints[name] = run_dir / "checkpoint.pt"
        if name in runs:
            continue
        started = time.monotonic()
        result = train(
            manifest,
            root,
            config,
            run_dir,
            steps=args.steps,
            resume=checkpoints[name].is_file(),
            exclude_subjects=held_out,
            cache_dir=cache,
            progress=False,
            device="cpu",
        )
        minutes = (time.monotonic() - started) / 60
        validation = score_generators(
            [(name, [str(result.checkpoint)])],
            manifest,
            root,
            persons=split.validation,
            out=args.out / "validation" / f"{name}-{args.steps}.json",
            cache_dir=cache,
        )
        runs[name] = {
            "train_minutes": round(minutes, 2),
            "losses": result.losses,
            "validation": {k: validation["rows"][name][k] for k in KEYS},
            "validation_copy_onset": {k: validation["copy_onset"][k] for k in KEYS},
        }
        results_path.write_text(json.dumps(results, indent=1))
        print(name, json.dumps(runs[name]), flush=True)
    chosen = min(runs, key=lambda name: runs[name]["validation"]["flow_epe"])
    results["chosen_on_validation"] = chosen
    rows = [(name, [str(checkpoints[name])]) for name in runs if name in checkpoints]
    rows += [("landmark-tps", ["landmark-tps"]), ("demo-oracle", [f"demo-oracle:{root.resolve()}"])]
    test = score_generators(
        rows, manifest, root, persons=split.test, out=args.out / "test-ablation.json", cache_dir=cache
    )
    results["test"] = {
        name: {k: summary[k] for k in (*KEYS, "ci_flow_epe", "ci_flow_epe_au", "n_clips")}
        for name, summary in test["rows"].items()
    }
    results_path.write_text(json.dumps(results, indent=1))
    print(f"persons: {json.dumps(split.as_dict())}; chosen on validation: {chosen}")
    print(format_table(test))


if __name__ == "__main__":
    main()
