"""`augmenter demo`: every stage once on the demo corpus, leakage-free by PERSON, bracketed by controls.

Why this shape. One gain number means little without its brackets, so the demo generates one store per kind:
the ceiling (`demo-oracle`: each source clip's true recorded motion on the target face), the two FP-FOMM
generators, `landmark-tps`, and the floor (`copy-onset`: the target face, motionless). The evaluation
(recognition_eval, person folds, equal step budgets, ≥ 3 seeds, a persons × seeds bootstrap) trains the
baseline and one arm per kind, plus `shuffled` (the FP-FOMM clips with their labels permuted: does the gain
come from the motion-label pairing?), and the demo prints ONE table of them.

Leakage-free augmentation needs, for every test person p, synthetic clips from a generator that never saw p.
The demo therefore trains two generators, each without one half of the PERSONS (sorted, every other person),
and keeps one store per generator: the strict guard gives fold p the clips of the generator that never saw p
(minus every clip whose source or target is p). Training-free kinds (oracle, landmark-tps, copy-onset) saw
nobody. Each stage writes atomically and is skipped when its output exists, so a re-run continues where the
last one stopped.

Training both generators on 2 CPU cores takes longer than the rest of the demo, so the package ships the two
tiny-64 checkpoints trained on the default corpus (`augmenter/demo_weights/`, made by `make demo-weights` =
`augmenter demo --train` + `export_demo_weights`). They are used only when the corpus is byte-for-byte the one
they were trained on (sha256 of its truth file) and their recorded training persons (or, for older weights,
subjects) exclude the half they serve; otherwise, or with `--train`, the demo trains them itself.
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

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from augmenter.demo.corpus import ANNOTATION_FILE, PERSONS_FILE, TRUTH_FILE
from augmenter.manifest import read_manifest, row_fold_key, row_person
from augmenter.model.checkpoint import load_checkpoint, save_checkpoint, sidecar_path

HALVES = ("a", "b")
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "demo_weights"
SHIPPED_INFO = "weights.json"
# Only the inference networks travel: the discriminator and optimiser states would triple the size.
SHIPPED_KEYS = ("format", "step", "config", "training_subjects", "losses", "kp_detector", "generator")
OPTIONAL_SHIPPED_KEYS = ("training_persons",)
# Arms of the evaluation besides the baseline, in table order; the FP-FOMM stores are the main arm.
FRESH, ORACLE, FPFOMM, LANDMARK_TPS, COPY_ONSET, SHUFFLED = (
    "fresh",
    "oracle",
    "fp-fomm",
    "landmark-tps",
    "copy-onset",
    "shuffled",
)
ARM_ORDER = ("baseline", FRESH, ORACLE, FPFOMM, LANDMARK_TPS, COPY_ONSET, SHUFFLED)
# What each control means in the report (report.json "arm_roles", the html report's forest plot).
ARM_ROLES = {
    FRESH: "ceiling",  # more real data: new clips from the corpus's own planner and renderer
    ORACLE: "transfer-ceiling",  # perfect motion transfer of the source clip
    COPY_ONSET: "floor",  # a generator that learned nothing: the target face, motionless
    SHUFFLED: "control",  # the FP-FOMM clips with permuted labels
}
SHORT_ROLES = {"transfer-ceiling": "transfer"}  # the 80-column table's word for a role
MAIN_ARM = "augmented"  # the report's name for the classic `synthetic=` arm (here: the FP-FOMM stores)


@dataclass
class DemoJob:
    """Settings of `augmenter demo`; the defaults are what the README promises (< 10 min on 2 cores)."""

    out: Path = Path("demo-output")
    workers: int = 2
    subjects: int | None = None  # None: one per distinct real person (augmenter/demo/faces.py)
    clips_per_subject: int = 4
    corpus_size: int = 128
    frames: tuple[int, int] = (16, 32)
    model_size: int = 64
    config: str = "tiny-64"
    train: bool = False  # True: train both generators here even when the shipped ones fit
    train_steps: int | None = None  # None = the config's schedule (what the shipped weights had)
    train_only: bool = False  # stop after the generators (what `make demo-weights` needs)
    max_per_source: int = 3  # pairings per source clip in every store (fresh: 3 new clips per source)
    # The instrument's defaults (clips per person, pairings per source, epochs, folds, seeds, the crop) were
    # chosen on a calibration draw (corpus seed 1) with the baseline and `fresh` only, no generator arm seen
    # (benchmarks/demo_calibration.py; the runs are in docs/results.md): 30 epochs = 300 steps (60 gave the
    # same baseline), 10 folds of whole persons (210 models of 7 arms × 3 seeds instead of 903), 3 pairings
    # per source and 5 seeds (fresh +0.042 [+0.009, +0.076], p 0.002; one pairing and 5 seeds: +0.021).
    recognizer: str = "ststnet"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int | None = 30  # recognizer schedule; None = the evaluation's configured one
    person_folds: int | None = 10  # folds of whole persons (None: one per person)
    synthetic_mode: str = "add"  # synthetic clips on top of the baseline's real batches
    seed: int = 0  # corpus and pairing seed
    score: bool = False  # the self-reenactment table (one clip set, every generator): ~3 min more
    console: Console = field(default_factory=lambda: Console(stderr=True))

    def subject_count(self) -> int:
        """Subjects of the corpus: as set, else one per distinct person of the installed + fetched photos."""
        from augmenter.demo.faces import available_persons

        return int(self.subjects) if self.subjects else available_persons()


@dataclass
class DemoResult:
    """Paths and headline numbers of one demo run."""

    report: dict
    scores: dict
    report_dir: Path
    preview: Path
    seconds: float
    stage_seconds: dict[str, float]
    transfer: dict = field(default_factory=dict)


def _natural_key(text: str) -> tuple:
    head, _, tail = text.rpartition("/")
    return (head, int(tail)) if tail.isdigit() else (head, tail)


def interleaved_halves(keys: list[str]) -> dict[str, list[str]]:
    """Split keys into two interleaved halves (stable: natural sorted order, every other key)."""
    ordered = sorted(set(keys), key=_natural_key)
    return {"a": ordered[0::2], "b": ordered[1::2]}


# The halves of the subjects (old name) and of the persons are the same split rule.
subject_halves = interleaved_halves


def person_halves(rows: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    """Per half: its persons and all their subjects' fold keys (a person's variants stay in one half)."""
    persons_of = {row_fold_key(row): row_person(row) for _, row in rows.iterrows()}
    halves = interleaved_halves(list(persons_of.values()))
    return {
        half: {
            "persons": members,
            "subjects": sorted((k for k, p in persons_of.items() if p in members), key=_natural_key),
        }
        for half, members in halves.items()
    }


def truth_digest(corpus_root: Path) -> str:
    """sha256 of the corpus' truth file: the same corpus settings and seed give the same bytes."""
    return hashlib.sha256((Path(corpus_root) / TRUTH_FILE).read_bytes()).hexdigest()


def shipped_checkpoint(
    half: str,
    corpus_root: Path,
    held_out_subjects: list[str],
    folder: Path = SHIPPED_WEIGHTS,
    held_out_persons: list[str] = (),
) -> Path | None:
    """The shipped checkpoint for `half`, or None when it was not trained on this corpus, saw a held-out
    person or subject, or does not say whom it saw (then the demo trains its own)."""
    info_path, path = folder / SHIPPED_INFO, folder / f"generator-{half}.pt"
    if not (info_path.is_file() and path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    if info.get("truth_sha256") != truth_digest(corpus_root):
        return None
    payload, _ = load_checkpoint(path)
    subjects, persons = payload.get("training_subjects") or (), payload.get("training_persons") or ()
    if not subjects and not persons:
        return None  # unknown training set: never serve it
    if set(subjects) & set(held_out_subjects) or set(persons) & set(held_out_persons):
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
        kept = {k: payload[k] for k in SHIPPED_KEYS}
        kept.update({k: payload[k] for k in OPTIONAL_SHIPPED_KEYS if k in payload})
        save_checkpoint(path, kept)
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


def _train_and_mark(train: Callable[..., object], **kwargs: object) -> object:
    """Train, then leave a `complete` marker so a re-run knows the schedule finished."""
    result = train(**kwargs)
    (Path(str(kwargs["out_dir"])) / "complete").write_text("done\n")
    return result


def _generate_and_mark(generate: Callable[..., object], job: object, store: Path) -> object:
    """Generate, then mark the store complete only when every planned clip is done (exit 1 otherwise)."""
    result = generate(job)
    if not getattr(result, "failures", None):
        (store.parent / f"{store.name}.complete").write_text("done\n")
    return result


def store_paths(out: Path) -> dict[str, Path]:
    """Where each kind's store lives: stores/<name>.zarr (the name is what the report calls the store)."""
    names = (FRESH, ORACLE, f"{FPFOMM}-a", f"{FPFOMM}-b", LANDMARK_TPS, COPY_ONSET)
    return {name: Path(out) / "stores" / f"{name}.zarr" for name in names}


def run_demo(job: DemoJob) -> DemoResult:
    """Corpus → manifest (persons) → 2 generators (one per half of the persons) → 6 stores → score →
    evaluate."""
    from augmenter.datasets import build_manifest_file
    from augmenter.demo.corpus import make_demo_corpus
    from augmenter.train import train

    started = time.perf_counter()
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(job.console)
    subjects = job.subject_count()
    from augmenter.demo.faces import persons_note

    job.console.print(persons_note(), highlight=False)
    corpus_root = out / "corpus"
    annotations = corpus_root / ANNOTATION_FILE
    manifest = out / "manifest.csv"
    cache = out / "cache"

    stages.run(
        "demo corpus",
        f"{subjects} subjects × {job.clips_per_subject} clips at {job.corpus_size}² → {corpus_root}",
        lambda: annotations.is_file() and (corpus_root / TRUTH_FILE).is_file(),
        lambda: make_demo_corpus(
            corpus_root, subjects, job.clips_per_subject, job.corpus_size, job.seed, job.frames
        ),
    )
    stages.run(
        "manifest",
        f"CASME II reader on the demo sheet, persons from {PERSONS_FILE} → {manifest}",
        manifest.is_file,
        lambda: build_manifest_file(
            "casme2",
            annotations,
            corpus_root,
            manifest,
            check_frames=True,
            strict=True,
            persons=corpus_root / PERSONS_FILE,
        ),
    )
    rows = read_manifest(manifest)
    halves = person_halves(rows)

    checkpoints: dict[str, Path] = {}
    for half in HALVES:
        run_dir = out / f"generator-{half}"
        checkpoints[half] = run_dir / "checkpoint.pt"
        held_out = ", ".join(halves[half]["persons"])
        shipped = (
            None
            if job.train
            else shipped_checkpoint(
                half, corpus_root, halves[half]["subjects"], held_out_persons=halves[half]["persons"]
            )
        )
        if shipped is not None:
            what = f"shipped {job.config} weights trained on this corpus without persons {held_out}"
            action: Callable[[], object] = partial(_install_shipped, shipped, run_dir)
        else:
            what = f"{job.config} FP-FOMM without persons {held_out}"
            action = partial(
                _train_and_mark,
                train,
                manifest=manifest,
                root=corpus_root,
                config=job.config,
                out_dir=run_dir,
                steps=job.train_steps,
                resume=(run_dir / "checkpoint.pt").is_file(),
                exclude_persons=halves[half]["persons"],  # and with them every subject of theirs
                cache_dir=cache,
            )
        stages.run(f"train generator {half}", f"{what} → {run_dir}", (run_dir / "complete").is_file, action)
    if job.train_only:
        return DemoResult(
            {}, {}, out / "report", out / "preview.gif", time.perf_counter() - started, stages.seconds
        )

    shared = _SharedCluster(job.workers)
    try:
        n_persons = sum(len(half["persons"]) for half in halves.values())
        return _generate_and_evaluate(
            job, out, stages, corpus_root, manifest, cache, checkpoints, shared, started, n_persons
        )
    finally:
        shared.close()


class _SharedCluster:
    """One local Dask cluster for every generate and evaluate stage of the demo, started when a stage first
    needs it (a re-run whose stages are all done starts none): ~5 s of worker start-up per stage saved."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.client = None

    def address(self) -> str:
        if self.client is None:
            from augmenter.cluster import get_client

            self.client = get_client(workers=self.workers, gpus="none", dashboard_address=None)
        return self.client.scheduler.address

    def close(self) -> None:
        if self.client is not None:
            from augmenter.cluster import close_client

            close_client(self.client)
            self.client = None


def _generate_and_evaluate(
    job: DemoJob,
    out: Path,
    stages: _Stages,
    corpus_root: Path,
    manifest: Path,
    cache: Path,
    checkpoints: dict[str, Path],
    shared: _SharedCluster,
    started: float,
    n_persons: int,
) -> DemoResult:
    """Stores → (score, transfer) → evaluate → preview → summary, on one shared cluster."""
    from dataclasses import replace

    from augmenter.generate import GenerateJob, generate
    from augmenter.preview import preview
    from recognition_eval.evaluate import Arm, EvaluateJob, evaluate

    stores = store_paths(out)
    specs = {
        FRESH: f"demo-fresh:{corpus_root.resolve()}",
        ORACLE: f"demo-oracle:{corpus_root.resolve()}",
        f"{FPFOMM}-a": str(checkpoints["a"]),
        f"{FPFOMM}-b": str(checkpoints["b"]),
        LANDMARK_TPS: LANDMARK_TPS,
        COPY_ONSET: COPY_ONSET,
    }
    for name, store in stores.items():
        generate_job = GenerateJob(
            manifest=manifest,
            root=corpus_root,
            generator=specs[name],
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
        stages.run(
            f"generate {name}",
            f"{specs[name]} over demo pairings with {job.workers} Dask workers → {store}",
            (store.parent / f"{store.name}.complete").is_file,
            lambda job_=generate_job, store_=store: _generate_and_mark(
                generate, replace(job_, scheduler_address=shared.address()), store_
            ),
        )

    scores_path = out / "scores.json"
    if job.score:
        stages.run(
            "score",
            f"self-reenactment of every generator on the same clips (FP-FOMM: the half that never saw the "
            f"person) → {scores_path}",
            scores_path.is_file,
            partial(_score_all, checkpoints, corpus_root, manifest, scores_path, cache, job.model_size),
        )
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    transfer_path = out / "transfer.json"
    if job.score:
        stages.run(
            "transfer",
            f"transfer fidelity: each generator's clip of another person against demo-oracle's clip of "
            f"the same pairing, beside copy-onset → {transfer_path}",
            transfer_path.is_file,
            partial(_score_transfer, checkpoints, corpus_root, manifest, transfer_path, cache, job),
        )
    transfer = json.loads(transfer_path.read_text()) if transfer_path.is_file() else {}

    report_dir = out / "report"
    report_json = report_dir / "report.json"
    folds = job.person_folds if (job.person_folds or 0) < n_persons else None  # a small demo: one per person
    fpfomm_stores = (stores[f"{FPFOMM}-a"], stores[f"{FPFOMM}-b"])
    arms = (
        Arm(FRESH, (stores[FRESH],), role=ARM_ROLES[FRESH]),
        Arm(ORACLE, (stores[ORACLE],), role=ARM_ROLES[ORACLE]),
        Arm(LANDMARK_TPS, (stores[LANDMARK_TPS],)),
        Arm(COPY_ONSET, (stores[COPY_ONSET],), role=ARM_ROLES[COPY_ONSET]),
        Arm(SHUFFLED, fpfomm_stores, shuffle_labels=True, role=ARM_ROLES[SHUFFLED]),
    )
    stages.run(
        "evaluate",
        f"by person ({job.person_folds or 'one per person'} folds), {job.recognizer}, seeds "
        f"{list(job.seeds)}: baseline, fp-fomm (a|b) and "
        f"{', '.join(arm.name for arm in arms)} → {report_dir}",
        report_json.is_file,
        lambda: evaluate(
            EvaluateJob(
                manifest=manifest,
                root=corpus_root,
                out=report_dir,
                recognizer=job.recognizer,
                synthetic=fpfomm_stores,
                arms=arms,
                seeds=tuple(job.seeds),
                epochs=job.epochs,
                person_folds=folds,
                synthetic_mode=job.synthetic_mode,
                crop_size=job.model_size,  # one domain: real clips cropped at the stores' size
                cache_dir=cache / "features",
                prepare_cache_dir=cache,
                scheduler_address=shared.address(),
                print_table=False,
            )
        ),
    )
    report = json.loads(report_json.read_text())
    preview_path = out / "preview.gif"
    stages.run(
        "preview",
        f"source | target | generated → {preview_path}",
        preview_path.is_file,
        lambda: preview(stores[f"{FPFOMM}-a"], preview_path, n=4, manifest=manifest, root=corpus_root),
    )
    from recognition_eval.html_report import rewrite_html_report

    rewrite_html_report(report_dir, preview_path)  # the page with the preview; cheap, so on every run
    result = DemoResult(
        report=report,
        scores=scores,
        transfer=transfer,
        report_dir=report_dir,
        preview=preview_path,
        seconds=time.perf_counter() - started,
        stage_seconds=stages.seconds,
    )
    _write_json(out / "demo-summary.json", summary_document(result, stores))
    print_summary(result, job.console)
    return result


def _score_all(
    checkpoints: dict[str, Path], corpus_root: Path, manifest: Path, out: Path, cache: Path, size: int
) -> dict:
    """One self-reenactment table on every clip: FP-FOMM (each clip by the generator that never saw its
    person), landmark-tps, the oracle, beside copy-onset."""
    from augmenter.score import score_generators

    rows = [
        (FPFOMM, (str(checkpoints["a"]), str(checkpoints["b"]))),
        (LANDMARK_TPS, (LANDMARK_TPS,)),
        (ORACLE, (f"demo-oracle:{Path(corpus_root).resolve()}",)),
    ]
    return score_generators(rows, manifest, corpus_root, size=size, out=out, cache_dir=cache, progress=True)


def _score_transfer(
    checkpoints: dict[str, Path], corpus_root: Path, manifest: Path, out: Path, cache: Path, job: DemoJob
) -> dict:
    """One transfer table on the demo's own pairings: FP-FOMM (each pairing by the half that saw neither
    person), landmark-tps, copy-onset and the oracle, planes at the evaluation's crop."""
    from augmenter.transfer import score_transfer

    rows = [(FPFOMM, (str(checkpoints["a"]), str(checkpoints["b"]))), (LANDMARK_TPS, (LANDMARK_TPS,))]
    return score_transfer(
        rows, manifest, corpus_root, truth=corpus_root, max_per_source=job.max_per_source, seed=job.seed,
        size=job.model_size, out=out, cache_dir=cache, recognizer=job.recognizer,
        feature_crop_size=job.model_size,
    )  # fmt: skip


def arm_rows(report: dict) -> list[tuple[str, dict]]:
    """(display name, arm entry) in table order; the report's main arm is the FP-FOMM stores."""
    arms = dict(report.get("arms") or {})
    if MAIN_ARM in arms and FPFOMM not in arms:
        arms[FPFOMM] = arms.pop(MAIN_ARM)
    ordered = [name for name in ARM_ORDER if name in arms]
    ordered += [name for name in arms if name not in ordered]
    return [(name, arms[name]) for name in ordered]


def summary_document(result: DemoResult, stores: dict[str, Path] | None = None) -> dict:
    """The numbers a reader of the demo wants, in one JSON: the report's gain keys (unit, folds, seeds,
    resampling, one entry per arm), the main arm's classic keys, the scores and the seconds per stage."""
    report = result.report
    return {
        "unit": report.get("unit"),
        "n_folds": report.get("n_folds"),
        "n_seeds": report.get("n_seeds"),
        "resampled": report.get("resampled"),
        "arms": dict(arm_rows(report)),
        "stores": {name: str(path) for name, path in (stores or {}).items()},
        "baseline": report.get("baseline"),
        "augmented": report.get("augmented"),
        "gain_uf1": report.get("gain_uf1"),
        "gain_uar": report.get("gain_uar"),
        "ci_uf1": report.get("ci_uf1"),
        "ci_uar": report.get("ci_uar"),
        "n_synthetic_used": report.get("n_synthetic_used"),
        "scores": result.scores,
        "transfer": result.transfer,
        "seconds": round(result.seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in result.stage_seconds.items()},
    }


def _number(value: object, pattern: str = "{:.3f}") -> str:
    return "—" if value is None else pattern.format(value)


def gain_table(report: dict) -> Table:
    """ONE table, readable at 80 columns: every arm with UF1, its gain over the baseline [95 % CI], the
    Holm-adjusted p and the distinct synthetic clips used."""
    title = (
        f"{report.get('n_persons', report.get('n_folds'))} persons in {report.get('n_folds')} folds × "
        f"{report.get('n_seeds')} seeds, CI over {report.get('resampled')}"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("arm", "role", "UF1", "gain UF1 [95% CI]", "p Holm", "n_syn"):
        table.add_column(column, justify="left" if column in ("arm", "role") else "right", no_wrap=True)
    roles = report.get("arm_roles") or {}
    for name, arm in arm_rows(report):
        ci = arm.get("ci_uf1")
        baseline = name == "baseline"
        gain = (
            "—"
            if arm.get("gain_uf1") is None or baseline
            else f"{arm['gain_uf1']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        )
        table.add_row(
            name + (" †" if arm.get("domain_mismatch") else ""),
            SHORT_ROLES.get(roles.get(name, ""), roles.get(name, "")),
            _number(arm.get("uf1")),
            gain,
            "—" if baseline else _number(arm.get("p_uf1_holm", arm.get("p_uf1"))),
            "—" if baseline else _number(arm.get("n_synthetic"), "{}"),
        )
    budget = report.get("budget") or {}
    table.caption = (
        f"{budget.get('steps')} steps per model; synthetic {budget.get('mode', 'replace')}: "
        f"{budget.get('synthetic_per_batch')} per batch of {budget.get('batch')} real; p: sign flip over "
        "persons, Holm over the arms"
    )
    return table


def print_summary(result: DemoResult, console: Console) -> None:
    """The final summary: the score table (when scored), then the one recognition table."""
    if result.scores:
        from augmenter.score import format_table

        console.print(format_table(result.scores), highlight=False, soft_wrap=True)
    if result.transfer:
        from augmenter.transfer import format_transfer_table

        console.print(format_transfer_table(result.transfer))
    console.print(gain_table(result.report))
    console.print(
        f"report: {result.report_dir}; preview: {result.preview}; wall time {result.seconds / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.stage_seconds.items() if v)})"
    )
