"""The main job on the bundled demo corpus: every stage once, leakage-free, resumable.

Leakage-free augmentation needs, for every LOSO test subject s, synthetic clips from a generator that never
saw s. The demo therefore trains two generators, each on one half of the subjects, and keeps one store per
generator: the strict evaluation guard gives fold s the clips of the generator trained on the other half
(minus every clip whose source or target is s). Each stage writes its outputs atomically and is skipped when
they exist, so a re-run (or a run after a kill) continues where the last one stopped.

Training both generators on 2 CPU cores takes longer than the rest of the demo (teacher flows dominate), so
the package ships the two tiny-64 checkpoints trained on the default demo corpus (`augmenter/demo_weights/`,
made by `make demo-weights` = `augmenter demo --train` + `export_demo_weights`). They are used only when the
corpus is byte-for-byte the one they were trained on (sha256 of its truth file) and their recorded training
subjects exclude the half they are for; otherwise, or with `--train`, the demo trains them itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from augmenter.demo.corpus import TRUTH_FILE
from augmenter.manifest import fold_key, read_manifest
from augmenter.model.checkpoint import load_checkpoint, save_checkpoint, sidecar_path

HALVES = ("a", "b")
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "demo_weights"
SHIPPED_INFO = "weights.json"
# Only the inference networks travel: the discriminator and optimiser states would triple the size.
SHIPPED_KEYS = ("format", "step", "config", "training_subjects", "losses", "kp_detector", "generator")


@dataclass
class DemoJob:
    """Settings of `augmenter demo`; the defaults are what the README promises (< 10 min on 2 cores)."""

    out: Path = Path("demo-output")
    workers: int = 2
    subjects: int = 12
    clips_per_subject: int = 6
    corpus_size: int = 128
    frames: tuple[int, int] = (16, 32)
    model_size: int = 64
    config: str = "tiny-64"
    train: bool = False  # True: train both generators here even when the shipped ones fit
    train_steps: int | None = None  # None = the config's schedule (what the shipped weights had)
    max_per_source: int = 1
    recognizer: str = "resnet"
    seed: int = 0
    console: Console = field(default_factory=lambda: Console(stderr=True))


@dataclass
class DemoResult:
    """Paths and headline numbers of one demo run."""

    report: dict
    scores: dict[str, dict]
    report_dir: Path
    preview: Path
    seconds: float
    stage_seconds: dict[str, float]


def subject_halves(subjects: list[str]) -> dict[str, list[str]]:
    """Split fold keys into two interleaved halves (stable: sorted order, every other subject)."""
    ordered = sorted(subjects, key=_natural_key)
    return {"a": ordered[0::2], "b": ordered[1::2]}


def truth_digest(corpus_root: Path) -> str:
    """sha256 of the corpus' truth file: the same corpus settings and seed give the same bytes."""
    return hashlib.sha256((Path(corpus_root) / TRUTH_FILE).read_bytes()).hexdigest()


def shipped_checkpoint(
    half: str, corpus_root: Path, held_out: list[str], folder: Path = SHIPPED_WEIGHTS
) -> Path | None:
    """The shipped checkpoint for `half`, or None when it was not trained on this corpus or saw a held-out
    subject (then the demo trains its own)."""
    info_path, path = folder / SHIPPED_INFO, folder / f"generator-{half}.pt"
    if not (info_path.is_file() and path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    if info.get("truth_sha256") != truth_digest(corpus_root):
        return None
    payload, _ = load_checkpoint(path)
    if set(payload.get("training_subjects", ())) & set(held_out):
        return None
    return path


def export_demo_weights(demo_out: Path, folder: Path = SHIPPED_WEIGHTS) -> list[Path]:
    """Copy the two generators of a finished `augmenter demo --train` run into the package (inference
    weights only) with the digest of the corpus they were trained on."""
    demo_out = Path(demo_out)
    written = []
    for half in HALVES:
        payload, _ = load_checkpoint(demo_out / f"generator-{half}" / "checkpoint.pt")
        path = folder / f"generator-{half}.pt"
        save_checkpoint(path, {k: payload[k] for k in SHIPPED_KEYS})
        written.append(path)
    truth = json.loads((demo_out / "corpus" / TRUTH_FILE).read_text())
    info = {
        "truth_sha256": truth_digest(demo_out / "corpus"),
        "corpus_settings": truth.get("settings"),
        "made_by": "make demo-weights",
    }
    _write_json(folder / SHIPPED_INFO, info)
    return written


def _install_shipped(shipped: Path, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped, run_dir / "checkpoint.pt")
    shutil.copyfile(sidecar_path(shipped), sidecar_path(run_dir / "checkpoint.pt"))
    (run_dir / "complete").write_text(f"shipped weights: {shipped}\n")


def _natural_key(text: str) -> tuple:
    head, _, tail = text.rpartition("/")
    return (head, int(tail)) if tail.isdigit() else (head, tail)


class _Stages:
    """Runs named stages, says what each does, times it, and says when it reuses earlier work."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seconds: dict[str, float] = {}

    def run(self, name: str, what: str, done: Callable[[], bool], action: Callable[[], object]) -> object:
        if done():
            self.console.print(f"[dim]✓ {name}: reusing {what}[/dim]")
            self.seconds[name] = 0.0
            return None
        self.console.print(f"[bold]▶ {name}[/bold]: {what}")
        started = time.perf_counter()
        result = action()
        self.seconds[name] = time.perf_counter() - started
        self.console.print(f"  {name} took {self.seconds[name]:.0f} s")
        return result


def _write_json(path: Path, document: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.replace(path)


def run_demo(job: DemoJob) -> DemoResult:
    """Demo corpus → manifest → 2 generators (one per half of the subjects) → generate → score → evaluate."""
    from augmenter.datasets import build_manifest_file
    from augmenter.demo.corpus import make_demo_corpus
    from augmenter.generate import GenerateJob, generate
    from augmenter.preview import preview
    from augmenter.score import score_generator
    from augmenter.train import train
    from recognition_eval.evaluate import EvaluateJob, evaluate

    started = time.perf_counter()
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(job.console)
    corpus_root = out / "corpus"
    annotations = corpus_root / "CASME2-coding-demo.xlsx"
    manifest = out / "manifest.csv"
    cache = out / "cache"

    stages.run(
        "demo corpus",
        f"{job.subjects} subjects × {job.clips_per_subject} clips at {job.corpus_size}² → {corpus_root}",
        lambda: annotations.is_file() and (corpus_root / "demo-truth.json").is_file(),
        lambda: make_demo_corpus(
            corpus_root, job.subjects, job.clips_per_subject, job.corpus_size, job.seed, job.frames
        ),
    )
    stages.run(
        "manifest",
        f"CASME II reader on the demo sheet → {manifest}",
        manifest.is_file,
        lambda: build_manifest_file(
            "casme2", annotations, corpus_root, manifest, check_frames=True, strict=True
        ),
    )
    rows = read_manifest(manifest)
    halves = subject_halves(
        sorted({fold_key(d, s) for d, s in zip(rows["dataset"], rows["subject"], strict=True)})
    )

    checkpoints: dict[str, Path] = {}
    for half in HALVES:
        run_dir = out / f"generator-{half}"
        checkpoint = run_dir / "checkpoint.pt"
        checkpoints[half] = checkpoint
        held_out = ", ".join(halves[half])
        shipped = None if job.train else shipped_checkpoint(half, corpus_root, halves[half])
        if shipped is not None:
            what = f"shipped {job.config} weights trained on this corpus without subjects {held_out}"
            action: Callable[[], object] = partial(_install_shipped, shipped, run_dir)
        else:
            what = f"{job.config} FP-FOMM without subjects {held_out}"
            action = partial(
                _train_and_mark,
                train,
                manifest=manifest,
                root=corpus_root,
                config=job.config,
                out_dir=run_dir,
                steps=job.train_steps,
                resume=(run_dir / "checkpoint.pt").is_file(),
                exclude_subjects=halves[half],
                cache_dir=cache,
            )
        stages.run(
            f"train generator {half}",
            f"{what} → {run_dir}",
            (run_dir / "complete").is_file,
            action,
        )

    stores: list[Path] = []
    for half in HALVES:
        store = out / f"synthetic-{half}.zarr"
        stores.append(store)
        stages.run(
            f"generate {half}",
            f"generator {half} over demo pairings with {job.workers} Dask workers → {store}",
            lambda: False,  # generate itself skips the clips that are done
            lambda half=half, store=store: generate(
                GenerateJob(
                    manifest=manifest,
                    root=corpus_root,
                    generator=str(checkpoints[half]),
                    targets=manifest,
                    out=store,
                    workers=job.workers,
                    gpus="none",
                    max_per_source=job.max_per_source,
                    size=job.model_size,
                    seed=job.seed,
                    cache_dir=cache,
                    dashboard_address=None,
                    identity_quality=False,
                )
            ),
        )

    scores: dict[str, dict] = {}
    for half in HALVES:
        path = out / f"scores-fpfomm-{half}.json"
        stages.run(
            f"score generator {half}",
            f"self-reenactment on its held-out subjects {', '.join(halves[half])} → {path}",
            path.is_file,
            lambda half=half, path=path: score_generator(
                str(checkpoints[half]),
                manifest,
                corpus_root,
                subjects=halves[half],
                size=job.model_size,
                out=path,
                cache_dir=cache,
            ),
        )
        scores[f"fp-fomm-{half}"] = json.loads(path.read_text())
    tps_path = out / "scores-landmark-tps.json"
    stages.run(
        "score landmark-tps",
        f"the training-free baseline on every subject → {tps_path}",
        tps_path.is_file,
        lambda: score_generator(
            "landmark-tps", manifest, corpus_root, size=job.model_size, out=tps_path, cache_dir=cache
        ),
    )
    scores["landmark-tps"] = json.loads(tps_path.read_text())

    report_dir = out / "report"
    report_json = report_dir / "report.json"
    stages.run(
        "evaluate",
        f"LOSO {job.recognizer}: baseline vs augmented with both stores → {report_dir}",
        report_json.is_file,
        lambda: evaluate(
            EvaluateJob(
                manifest=manifest,
                root=corpus_root,
                out=report_dir,
                recognizer=job.recognizer,
                synthetic=tuple(stores),
                cache_dir=cache / "features",
            )
        ),
    )
    report = json.loads(report_json.read_text())
    preview_path = out / "preview.gif"
    stages.run(
        "preview",
        f"source | target | generated → {preview_path}",
        preview_path.is_file,
        lambda: preview(stores[0], preview_path, n=4, manifest=manifest, root=corpus_root),
    )
    result = DemoResult(
        report=report,
        scores=scores,
        report_dir=report_dir,
        preview=preview_path,
        seconds=time.perf_counter() - started,
        stage_seconds=stages.seconds,
    )
    _write_json(out / "demo-summary.json", summary_document(result))
    print_summary(result, job.console)
    return result


def _train_and_mark(train: Callable[..., object], **kwargs: object) -> object:
    """Train, then leave a `complete` marker so a re-run knows the schedule finished."""
    result = train(**kwargs)
    (Path(str(kwargs["out_dir"])) / "complete").write_text("done\n")
    return result


def summary_document(result: DemoResult) -> dict:
    """The numbers a reader of the demo wants, in one JSON."""
    report = result.report
    return {
        "baseline": report.get("baseline"),
        "augmented": report.get("augmented"),
        "gain_uf1": report.get("gain_uf1"),
        "gain_uar": report.get("gain_uar"),
        "ci_uf1": report.get("ci_uf1"),
        "ci_uar": report.get("ci_uar"),
        "n_synthetic_used": report.get("n_synthetic_used"),
        "scores": result.scores,
        "seconds": round(result.seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in result.stage_seconds.items()},
    }


def print_summary(result: DemoResult, console: Console) -> None:
    """The final Rich summary: generator fidelity, then the recognition gain with its CI."""
    fidelity = Table(title="Generators: self-reenactment on held-out subjects (lower flow_epe is better)")
    for column in ("generator", "clips", "flow_epe", "flow_cos", "L1", "copy-onset flow_epe"):
        fidelity.add_column(column)
    for name, document in result.scores.items():
        generated, copy = document["generator"], document["copy_onset"]
        fidelity.add_row(
            name,
            str(generated["n_clips"]),
            f"{generated['flow_epe']:.3f}",
            f"{generated['flow_cos']:.3f}",
            f"{generated['l1']:.4f}",
            f"{copy['flow_epe']:.3f}",
        )
    console.print(fidelity)

    report = result.report
    gain = Table(title=f"LOSO recognition ({report.get('n_folds')} folds), pooled UF1 / UAR")
    for column in ("", "UF1", "UAR"):
        gain.add_column(column)
    for name in ("baseline", "augmented"):
        scores = report.get(name) or {}
        if scores:
            gain.add_row(name, f"{scores['uf1']:.3f}", f"{scores['uar']:.3f}")
    if report.get("gain_uf1") is not None:
        ci_uf1, ci_uar = report["ci_uf1"], report["ci_uar"]
        gain.add_row(
            "gain [95% CI]",
            f"{report['gain_uf1']:+.3f} [{ci_uf1[0]:+.3f}, {ci_uf1[1]:+.3f}]",
            f"{report['gain_uar']:+.3f} [{ci_uar[0]:+.3f}, {ci_uar[1]:+.3f}]",
        )
    console.print(gain)
    console.print(
        f"synthetic training samples, summed over folds: {report.get('n_synthetic_used')} "
        f"(≈ {(report.get('n_synthetic_used') or 0) / max(1, report.get('n_folds') or 1):.0f} per fold); "
        f"report: {result.report_dir}; "
        f"preview: {result.preview}; wall time {result.seconds / 60:.1f} min"
    )
