"""Calibrate the demo's instrument without any generator in view (not a test).

The demo's defaults that decide what the instrument can see — clips per person, the recognizer's epochs, the
resolution the recognizer works at — are chosen here on a CALIBRATION draw of the corpus (another corpus seed
than the demo's, so other clips of the same people) with the baseline and the `fresh` control only (new
recordings from the corpus's own planner: "more real data"). No generator arm is trained, generated or looked
at, so the defaults cannot be tuned toward a generator's result.

For each setting it prints one JSON line: {"clips", "epochs", "crop", "persons", "baseline_uf1",
"fresh_gain_uf1", "fresh_ci_uf1", "fresh_p_uf1", "steps", "evaluate_s", "generate_s"}; the domain question
(evaluate every clip at the generators' 64² or at the corpus's 128²) is answered by the `--crops` runs, each
with the fresh store generated at that size so real and synthetic clips share one crop path.

    python benchmarks/demo_calibration.py --work /tmp/calibration --clips 4,6,8 --epochs 30,60 --crops 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.person_splits import CORPUS_SEED  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def calibrate(
    work: Path,
    clips: int,
    epochs: int,
    crop: int,
    subjects: int,
    seeds: tuple[int, ...],
    workers: int,
    per_source: int = 1,
    batch: int | None = None,
    person_folds: int | None = None,
    share: float = 0.5,
) -> dict:
    """One setting: the calibration corpus, its manifest, a fresh store at `crop`, baseline vs fresh."""
    from augmenter.datasets import build_manifest_file
    from augmenter.demo.corpus import ANNOTATION_FILE, PERSONS_FILE, make_demo_corpus
    from augmenter.demo.job import DemoJob
    from augmenter.generate import GenerateJob, generate
    from recognition_eval.evaluate import Arm, EvaluateJob, evaluate

    defaults = DemoJob()
    base = work / f"corpus-{subjects}x{clips}"
    corpus = base / "corpus"
    if not (corpus / ANNOTATION_FILE).is_file():
        make_demo_corpus(corpus, subjects, clips, defaults.corpus_size, CORPUS_SEED, defaults.frames)
    manifest = base / "manifest.csv"
    if not manifest.is_file():
        build_manifest_file(
            "casme2", corpus / ANNOTATION_FILE, corpus, manifest, check_frames=True, strict=True,
            persons=corpus / PERSONS_FILE,
        )  # fmt: skip
    name = f"fresh-{crop}-x{per_source}"
    store = base / f"{name}.zarr"
    started = time.perf_counter()
    if not (base / f"{name}.complete").is_file():
        generate(
            GenerateJob(
                manifest=manifest, root=corpus, generator=f"demo-fresh:{corpus.resolve()}", targets=manifest,
                out=store, workers=workers, gpus="none", max_per_source=per_source, size=crop,
                seed=CORPUS_SEED, cache_dir=base / "cache", dashboard_address=None, identity_quality=False,
                progress=False,
            )
        )  # fmt: skip
        (base / f"{name}.complete").write_text("done\n")
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    report = evaluate(
        EvaluateJob(
            manifest=manifest, root=corpus,
            out=base / f"report-{epochs}ep-{crop}-x{per_source}-b{batch}-k{person_folds}-s{share}",
            recognizer=defaults.recognizer, arms=(Arm("fresh", (store,)),), seeds=seeds, epochs=epochs,
            crop_size=crop, batch=batch, person_folds=person_folds, synthetic_share=share,
            cache_dir=base / "cache" / "features", prepare_cache_dir=base / "cache", workers=workers,
            show_progress=False, print_table=False, progress=lambda message: None,
        )
    )  # fmt: skip
    fresh = report["arms"]["fresh"]
    return {
        "clips": clips,
        "epochs": epochs,
        "batch": report["spec"]["batch"],
        "per_source": per_source,
        "person_folds": person_folds,
        "synthetic_share": share,
        "crop": crop,
        "persons": report["n_persons"],
        "folds": report["n_folds"],
        "baseline_uf1": round(report["arms"]["baseline"]["uf1"], 3),
        "fresh_gain_uf1": round(fresh["gain_uf1"], 3),
        "fresh_ci_uf1": [round(v, 3) for v in fresh["ci_uf1"]],
        "fresh_p_uf1": round(fresh["p_uf1"], 4),
        "steps": fresh["steps"],
        "evaluate_s": round(time.perf_counter() - started, 1),
        "generate_s": round(generate_s, 1),
    }


def main() -> None:
    from augmenter.demo.faces import available_persons

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--clips", default="8", help="clips per person, comma-separated")
    parser.add_argument("--epochs", default="60", help="STSTNet epochs, comma-separated")
    parser.add_argument("--crops", default="64", help="evaluation crop sizes (fresh generated alike)")
    parser.add_argument("--subjects", type=int, default=None, help="default: every distinct person")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-source", default="1", help="fresh clips per source clip, comma-separated")
    parser.add_argument("--batch", type=int, default=None, help="real clips per batch (default: configured)")
    parser.add_argument(
        "--person-folds", type=int, default=None, help="folds of whole persons (default: LOPO)"
    )
    parser.add_argument("--share", type=float, default=0.5, help="synthetic clips per batch / real batch")
    args = parser.parse_args()
    subjects = args.subjects or available_persons()
    for clips in _ints(args.clips):
        for crop in _ints(args.crops):
            for per_source in _ints(args.per_source):
                for epochs in _ints(args.epochs):
                    line = calibrate(
                        args.work, clips, epochs, crop, subjects, tuple(_ints(args.seeds)), args.workers,
                        per_source, args.batch, args.person_folds, args.share,
                    )  # fmt: skip
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
