"""`augmenter evaluate`: leave-one-person-out recognition, baseline against every arm, with equal budgets.

Order of work: select the protocol's real clips → flow features (cached, computed once for every arm) →
every store resolved against the manifest's persons (fail closed) and labelled through its source clips →
per arm, seed and test person the synthetic clips the leakage guard allows → every model trained on the same
number of steps (batched where that pays) → pooled UF1/UAR per arm; per arm against the baseline a paired
persons × seeds bootstrap CI and a permutation p-value over persons → report directory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.cache import resolve_cache_dir
from augmenter.errors import UserError
from augmenter.manifest import LABEL3_CLASSES, clip_key, read_manifest
from augmenter.progress import StageProgress
from recognition_eval.features import (
    ClipFeatures,
    FeatureSettings,
    real_clip_features,
    stack_planes,
    synthetic_clip_features,
)
from recognition_eval.loso import (
    SYNTHETIC_MODES,
    Budget,
    FoldOutcome,
    ModelTask,
    array_digest,
    budget_for,
    load_outcome,
    model_cache_key,
    save_outcome,
    sorted_folds,
    train_models,
)
from recognition_eval.metrics import gain_test, holm_adjust, pooled_scores
from recognition_eval.models import RecognizerSpec, recognizer_spec
from recognition_eval.provenance import Declarations, PersonIndex, read_target_persons
from recognition_eval.synthetic import (
    StorePool,
    allowed_for_fold,
    cap_synthetic,
    load_store,
    parse_quality_bar,
    shuffle_labels,
)

log = logging.getLogger(__name__)

PROTOCOLS: dict[str, tuple[str, ...]] = {
    "3class": LABEL3_CLASSES,
    "casme2-5class": ("happiness", "disgust", "repression", "surprise", "others"),
}
BASELINE = "baseline"
MAIN_ARM = "augmented"  # the arm of EvaluateJob.synthetic, reported under the classic top-level keys
SHUFFLED_ARM = "shuffled"


@dataclass(frozen=True)
class Arm:
    """One training condition: the baseline's real clips plus the synthetic clips of `stores` (their union,
    each clip through the leakage guard); shuffle_labels permutes the labels within each store (seeded).
    """

    name: str
    stores: tuple[Path, ...]
    shuffle_labels: bool = False
    role: str = ""  # what the arm is for the reader: "floor", "ceiling", "transfer-ceiling", "control" or ""


@dataclass
class EvaluateJob:
    """Everything one evaluation needs; the CLI fills it from options, Python users build it directly."""

    manifest: Path
    root: Path
    out: Path
    recognizer: str = "resnet"
    synthetic: tuple[Path, ...] = ()  # the main arm, "augmented"
    arms: tuple[Arm, ...] = ()  # further arms, each against the same baseline
    shuffle_synthetic_labels: bool = False  # adds the arm "shuffled": the main arm's stores, labels permuted
    max_synthetic_ratio: float | None = None
    min_quality: tuple[str, ...] = ()  # bars such as "l1<=0.08" (synthetic.parse_quality_bar)
    strict: bool = True
    external_targets: bool = False  # folder target faces are of nobody in the manifest
    target_persons: Path | None = None  # CSV target,person: folder targets that show manifest persons
    synthetic_share: float = 0.5  # synthetic clips per batch as a share of the real batch size
    synthetic_mode: str = "add"  # add: the baseline's real batches + synthetic on top; replace: in place
    known_manifests: tuple[Path, ...] = ()  # persons known but not evaluated (the stores' own manifests)
    seeds: tuple[int, ...] = (0, 1, 2)
    # None: one fold per person (leave-one-person-out, the MEGC protocol); K: the persons in K groups, each
    # group one fold (no person on both sides either way; CIs and p still resample persons)
    person_folds: int | None = None
    workers: int = 0  # 0/1 = in this process; N ≥ 2 = a local Dask cluster of N workers
    scheduler_address: str | None = None
    feature_method: str = "tvl1"
    size: int | None = None  # recognizer input side; None = the recognizer's configured size
    crop_size: int = 128
    backend: str = "dlib"
    protocol: str = "3class"
    device: str = "auto"  # auto = cuda when the workers have a GPU, else cpu
    epochs: int | None = None  # None = the configured fixed schedule
    batch: int | None = None  # real clips per batch; None = the configured one
    config: Path | None = None
    cache_dir: Path | None = None  # None = <out>/cache
    prepare_cache_dir: Path | None = None  # face crops, shared by the stages: see resolve_cache_dir
    bootstrap: int = 2000
    permutations: int = 10000
    batched: bool | None = None  # None = batched on CUDA, one model at a time on CPU (measured faster there)
    group_size: int = 32  # models trained together (one batched model, or one Dask task)
    # In-process torch threads. 1 by default: the small default nets gain little from more, and on a shared
    # machine two spinning threads were measured 6× slower than one. Dask tasks always use 1 (parallel folds).
    torch_threads: int | None = 1
    progress: Callable[[str], None] | None = field(default=None, repr=False)
    show_progress: bool = True  # progress bars / periodic lines on stderr for features and training
    print_table: bool = True  # the arm table on stderr (the demo prints its own instead)


def _say(job: EvaluateJob, message: str, level: int = logging.INFO) -> None:
    """Messages to the caller's sink (the CLI's stderr console) when given, else to logging."""
    if job.progress is not None:
        job.progress(message)
    else:
        log.log(level, message)


def select_protocol_rows(manifest: pd.DataFrame, protocol: str) -> tuple[pd.DataFrame, np.ndarray, int, str]:
    """Rows of the protocol, their class indices, how many rows were dropped, and the label column used."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    classes = PROTOCOLS[protocol]
    if protocol == "3class":
        column = "label3"
        labels = manifest["label3"].astype(str).str.strip().str.lower()
        keep = labels.isin(classes)
    else:
        column = "emotion"
        labels = manifest["emotion"].astype(str).str.strip().str.lower()
        keep = labels.isin(classes) & (manifest["dataset"].astype(str) == "casme2")
    rows = manifest[keep].reset_index(drop=True)
    y = labels[keep].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    return rows, y, int((~keep).sum()), column


def job_arms(job: EvaluateJob) -> list[Arm]:
    """The arms of a job in report order: the main arm, the shuffled control, then the named arms."""
    arms: list[Arm] = []
    if job.synthetic:
        arms.append(Arm(MAIN_ARM, tuple(Path(p) for p in job.synthetic)))
    if job.shuffle_synthetic_labels:
        if not job.synthetic:
            raise UserError("--shuffle-synthetic-labels shuffles the --synthetic stores; give at least one")
        arms.append(Arm(SHUFFLED_ARM, tuple(Path(p) for p in job.synthetic), shuffle_labels=True))
    arms.extend(job.arms)
    names = [arm.name for arm in arms]
    for arm in arms:
        if not arm.name or arm.name == BASELINE or names.count(arm.name) > 1:
            raise UserError(
                f"arm name {arm.name!r} is empty, reserved or used twice; give each arm its own name"
            )
        if not arm.stores:
            raise UserError(f"arm {arm.name}: no store; write NAME=STORE[,STORE]")
        for store in arm.stores:
            if not Path(store).exists():
                raise UserError(
                    f"{store}: synthetic store not found (arm {arm.name}); pass a store made by generate"
                )
    return arms


def parse_arm(text: str) -> Arm:
    """ "NAME=STORE[,STORE]" → Arm (the CLI's --arm)."""
    name, sep, stores = text.partition("=")
    paths = tuple(Path(p.strip()) for p in stores.split(",") if p.strip())
    if not sep or not name.strip() or not paths:
        raise UserError(f"--arm {text!r}: write NAME=STORE[,STORE], e.g. --arm tps=synthetic/tps.zarr")
    return Arm(name.strip(), paths)


def _client(job: EvaluateJob):  # noqa: ANN202 - distributed is imported lazily
    if job.scheduler_address is None and job.workers <= 1:
        return None
    from augmenter.cluster import get_client

    # dashboard_address=None: a free port on 127.0.0.1 (":0" would listen on every interface)
    return get_client(scheduler_address=job.scheduler_address, workers=job.workers, dashboard_address=None)


def _run_all(client, function: Callable, items: Sequence[dict], label: str, unit: str, show: bool, **kwargs):  # noqa: ANN001, ANN202
    """function(item, **kwargs) per item, in-process or on the cluster, with progress; results in order."""
    results: list = [None] * len(items)
    with StageProgress(label, len(items), unit=unit, enabled=show) as progress:
        if client is None:
            for i, item in enumerate(items):
                results[i] = function(item, **kwargs)
                progress.advance()
            return results
        from distributed import as_completed

        futures = {client.submit(function, item, pure=False, **kwargs): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            progress.advance()
    return results


def _real_features_task(
    row: dict, root: str, settings: FeatureSettings, cache_dir: str, prepare_cache: str
) -> ClipFeatures | str:
    """A feature task that returns a bad clip's reason (no face, no frames) as one line instead of failing."""
    try:
        return real_clip_features(row, root, settings, cache_dir, prepare_cache)
    except UserError as exc:
        return str(exc)


def _synthetic_features_task(item: dict, settings: FeatureSettings, cache_dir: str) -> ClipFeatures:
    from augmenter.store import read_clip

    identity = {k: item[k] for k in ("store", "index", "pair_id", "generator_checksum", "source_clip")}
    frames = read_clip(item["store"], int(item["index"]))
    return synthetic_clip_features(frames, int(item["apex_index"]), identity, settings, cache_dir)


def _train_group(tasks: list[ModelTask], **kwargs: object) -> list[FoldOutcome]:
    return train_models(tasks=tasks, **kwargs)  # type: ignore[arg-type]


@dataclass
class _ArmPool:
    arm: Arm
    table: pd.DataFrame  # the union of the arm's stores (labels shuffled for a shuffled arm)
    counts: dict[str, int]


def _arm_pools(arms: Sequence[Arm], pools: dict[str, StorePool], seeds: Sequence[int]) -> dict[str, _ArmPool]:
    result = {}
    for arm in arms:
        parts = [pools[str(store)] for store in arm.stores]
        table = pd.concat([p.table for p in parts], ignore_index=True) if parts else pd.DataFrame()
        if arm.shuffle_labels and len(table):
            table = shuffle_labels(table, seed=int(seeds[0]))
        counts = {key: sum(p.counts.get(key, 0) for p in parts) for key in parts[0].counts} if parts else {}
        result[arm.name] = _ArmPool(arm, table, counts)
    return result


def evaluate(job: EvaluateJob) -> dict:
    """Run the whole evaluation and write the report directory; returns the report.json content."""
    from recognition_eval.report import write_report

    started = time.perf_counter()
    job.out = Path(job.out)
    job.out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(job.cache_dir) if job.cache_dir is not None else job.out / "cache"
    spec: RecognizerSpec = recognizer_spec(
        job.recognizer, job.config, epochs=job.epochs, input_size=job.size, batch=job.batch
    )
    settings = FeatureSettings(method=job.feature_method, crop_size=job.crop_size, backend=job.backend)
    bars = [parse_quality_bar(text) for text in job.min_quality]
    if not job.seeds:
        raise UserError("--seeds: give at least one seed")
    if job.synthetic_mode not in SYNTHETIC_MODES:
        raise UserError(f"--synthetic-mode {job.synthetic_mode!r}: choose {' or '.join(SYNTHETIC_MODES)}")
    arms = job_arms(job)
    declarations = Declarations(
        external_targets=job.external_targets,
        target_persons=read_target_persons(job.target_persons) if job.target_persons else {},
    )

    manifest = read_manifest(job.manifest)
    rows, labels, n_unlabelled, label_column = select_protocol_rows(manifest, job.protocol)
    classes = PROTOCOLS[job.protocol]
    protocol_labels = {clip_key(row): int(y) for row, y in zip(rows.to_dict("records"), labels, strict=True)}
    _say(
        job, f"{len(rows)} clips in the {job.protocol} protocol ({n_unlabelled} rows without a class dropped)"
    )
    if len(rows) == 0:
        raise UserError(
            f"{job.manifest}: no clip has a {label_column} of {list(classes)}; check the manifest"
        )

    # ---- every store resolved against the manifest's persons before anything trains (fail closed)
    known = [(read_manifest(path), str(path)) for path in job.known_manifests]
    index = PersonIndex.of(manifest, source=str(job.manifest), known=known)
    stores = sorted({str(store) for arm in arms for store in arm.stores})
    pools = {
        store: load_store(
            store, index, protocol_labels, classes, label_column, declarations, job.strict, bars
        )
        for store in stores
    }
    for store, pool in pools.items():
        c = pool.counts
        _say(
            job,
            f"{store}: {c['kept']} of {c['done']} synthetic clips usable ({c['source_excluded']} whose "
            f"source the protocol excludes, {c['quality']} below the quality bar; labels from the manifest, "
            f"{c['label_changed']} differ from the store's)",
        )
    arm_pools = _arm_pools(arms, pools, job.seeds)

    client = _client(job)
    try:
        device = _device(job, client)
        # ---- real features (cached per clip, computed once for every arm)
        feature_started = time.perf_counter()
        results = _run_all(
            client, _real_features_task, rows.to_dict("records"), "evaluate features (real)", "clips",
            job.show_progress, root=str(job.root), settings=settings, cache_dir=str(cache_dir / "features"),
            prepare_cache=str(resolve_cache_dir(job.prepare_cache_dir, job.manifest, cache_dir / "prepared")),
        )  # fmt: skip
        failed = [(clip_key(rows.iloc[i]), r) for i, r in enumerate(results) if isinstance(r, str)]
        good = np.array([not isinstance(r, str) for r in results], dtype=bool)
        for key, reason in failed:
            _say(job, f"warning: clip {key} left out: {reason}", logging.WARNING)
        rows, labels = rows[good].reset_index(drop=True), labels[good]
        real_clips: list[ClipFeatures] = [r for r in results if not isinstance(r, str)]
        if len(real_clips) == 0:
            raise UserError(f"{job.manifest}: no clip produced features (first reason: {failed[0][1]})")
        feature_stats: dict = {
            "computed": sum(c.computed for c in real_clips),
            "cache_hits": sum(not c.computed for c in real_clips),
            "apex_estimated": sum(c.apex_estimated for c in real_clips),
            "failed": [{"clip": k, "reason": r} for k, r in failed],
        }
        real_x = stack_planes(real_clips, spec.input_size, spec.channel_indices)
        persons_of_rows = rows["person"].astype(str).to_numpy()
        if len(set(persons_of_rows)) < 2:
            raise UserError(
                f"{job.manifest}: {len(set(persons_of_rows))} person(s) in the protocol; LOPO needs two"
            )
        fold_of_person = group_persons(persons_of_rows, job.person_folds, seen_by(pools))
        fold_of_rows = np.array([fold_of_person[p] for p in persons_of_rows])
        folds = sorted_folds(fold_of_rows)
        fold_persons = {f: sorted_folds([p for p, g in fold_of_person.items() if g == f]) for f in folds}
        _say(
            job,
            f"features of {len(real_clips)} clips ({feature_stats['computed']} computed, "
            f"{feature_stats['cache_hits']} cached, {feature_stats['apex_estimated']} with estimated apex) "
            f"in {time.perf_counter() - feature_started:.1f} s; {len(fold_of_person)} persons in "
            f"{len(folds)} folds",
        )

        # ---- per arm, seed and person: the synthetic clips the guard allows (capped), then their features
        plans = _plan_tasks(job, arms, arm_pools, fold_of_rows, fold_persons)
        needed = sorted({key for arm in arms for task in plans[arm.name] for key in task["synthetic_keys"]})
        item_of = {}
        for pool in arm_pools.values():
            for record in pool.table.to_dict("records"):
                item_of.setdefault((record["store"], int(record["index"])), record)
        synthetic_results = _run_all(
            client, _synthetic_features_task, [item_of[k] for k in needed], "evaluate features (synthetic)",
            "clips", job.show_progress, settings=settings, cache_dir=str(cache_dir / "features"),
        )  # fmt: skip
        if needed:
            feature_stats["synthetic_computed"] = sum(c.computed for c in synthetic_results)
            feature_stats["synthetic_cache_hits"] = sum(not c.computed for c in synthetic_results)
        synthetic_x = stack_planes(synthetic_results, spec.input_size, spec.channel_indices)
        position = {key: k for k, key in enumerate(needed)}

        # ---- models: every (arm, seed, person) on one budget
        n_train = [int((fold_of_rows != fold).sum()) for fold in folds]
        budget = budget_for(spec, n_train, job.synthetic_share if arms else 0.0, job.synthetic_mode)
        tasks = _model_tasks(job, arms, plans, fold_of_rows, folds, position)
        outcomes, fold_cache_hits, train_seconds = _train(
            job, spec, budget, tasks, real_x, labels, synthetic_x, len(classes), device, client, cache_dir
        )
    finally:
        if client is not None:
            from augmenter.cluster import close_client

            close_client(client)

    names = [BASELINE] + [arm.name for arm in arms]
    predictions = {
        name: np.stack([_assemble(outcomes, name, seed, len(rows)) for seed in job.seeds]) for name in names
    }
    report = summarise(
        job, spec, budget, rows, labels, classes, persons_of_rows, predictions, outcomes, fold_of_rows
    )
    if job.person_folds is not None:
        report["fold_persons"] = fold_persons
    report["arms"] = _arm_reports(job, arms, arm_pools, pools, report, outcomes, budget)
    report.update(
        {
            "domain": {
                "crop_size": job.crop_size,
                "path": "real clips: face box of the onset frame, square crop resized to crop_size; "
                "synthetic clips: the store's face crops resized to crop_size; then onset→apex flow + strain",
                "mismatched_arms": [n for n, a in report["arms"].items() if a.get("domain_mismatch")],
            },
            "known_manifests": [str(p) for p in job.known_manifests],
            "arm_roles": {arm.name: arm.role for arm in arms if arm.role},
            "n_unlabelled_dropped": n_unlabelled,
            "features": feature_stats,
            "synthetic": {
                "stores": [str(p) for p in job.synthetic],
                "strict": job.strict,
                "external_targets": job.external_targets,
                "target_persons": str(job.target_persons) if job.target_persons else None,
                "max_synthetic_ratio": job.max_synthetic_ratio,
                "min_quality": list(job.min_quality),
                "per_store": {store: pool.counts for store, pool in pools.items()},
                "pool": len(arm_pools[MAIN_ARM].table) if MAIN_ARM in arm_pools else 0,
                "allowed_per_fold": _allowed_counts(arm_pools.get(MAIN_ARM), fold_persons, job.strict),
                "folds_without_synthetic": _folds_without(outcomes, MAIN_ARM, job.seeds[0]),
            },
            "seconds": {"train": round(train_seconds, 2), "total": round(time.perf_counter() - started, 2)},
            "fold_cache_hits": fold_cache_hits,
        }
    )
    write_report(
        job.out,
        report,
        rows,
        labels,
        classes,
        persons_of_rows,
        predictions,
        outcomes,
        print_table=job.print_table,
    )
    return report


def seen_by(pools: dict[str, StorePool]) -> dict[str, tuple[str, ...]]:
    """person → the stores whose generator saw them; persons no generator saw are absent."""
    seen: dict[str, set[str]] = {}
    for store, pool in pools.items():
        if "training_persons" not in pool.table.columns:
            continue
        for persons in pool.table["training_persons"]:
            for person in persons:
                seen.setdefault(person, set()).add(store)
    return {person: tuple(sorted(stores)) for person, stores in seen.items()}


def group_persons(
    persons: Sequence[str], n_folds: int | None, seen: dict[str, tuple[str, ...]] | None = None
) -> dict[str, str]:
    """person → fold key: the person itself (None), or one of `n_folds` folds of whole persons.

    Persons seen by different generators (`seen`, from seen_by) never share a fold: a fold may use a store
    only when its generator saw none of the fold's persons, so a fold mixing the two halves of a two-halves
    recipe would get no learned generator's clips at all. Within each such stratum the persons are dealt
    round-robin from a fixed shuffle of their natural order, the folds split over the strata in proportion
    to their sizes (at least one each); sizes stay balanced and the folds are the same every run.
    """
    ordered = sorted_folds(persons)
    if n_folds is None:
        return {person: person for person in ordered}
    if not 2 <= n_folds <= len(ordered):
        raise UserError(f"--person-folds {n_folds}: choose between 2 and the {len(ordered)} persons")
    seen = seen or {}
    strata: dict[tuple[str, ...], list[str]] = {}
    for person in ordered:
        strata.setdefault(seen.get(person, ()), []).append(person)
    groups = sorted(strata.values(), key=len, reverse=True)
    if len(groups) > n_folds:
        raise UserError(
            f"--person-folds {n_folds}: the stores' generators saw {len(groups)} different sets of persons; "
            f"give at least {len(groups)} folds"
        )
    shares = [max(1, round(n_folds * len(g) / len(ordered))) for g in groups]
    while sum(shares) > n_folds:
        shares[shares.index(max(shares))] -= 1
    while sum(shares) < n_folds:  # the stratum with most persons per fold gets one more (never > its persons)
        room = [len(g) / share if share < len(g) else 0.0 for g, share in zip(groups, shares, strict=True)]
        shares[room.index(max(room))] += 1
    rng = np.random.default_rng(0)
    width = len(str(n_folds))
    result: dict[str, str] = {}
    first = 0
    for group, share in zip(groups, shares, strict=True):
        shuffled = [group[i] for i in rng.permutation(len(group))]
        for k, person in enumerate(shuffled):
            result[person] = f"persons-{first + k % share + 1:0{width}d}"
        first += share
    return result


def _device(job: EvaluateJob, client) -> str:  # noqa: ANN001
    if job.device != "auto":
        return job.device
    if client is not None:
        from augmenter.cluster import cluster_has_gpus

        return "cuda" if cluster_has_gpus(client) else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _plan_tasks(
    job: EvaluateJob,
    arms: Sequence[Arm],
    arm_pools: dict[str, _ArmPool],
    fold_of_rows: np.ndarray,
    fold_persons: dict[str, list[str]],
) -> dict[str, list[dict]]:
    """Per arm, one entry per (seed, fold): the pool rows the guard allows for every test person of the
    fold, capped (seeded)."""
    from recognition_eval.loso import fold_seed

    plans: dict[str, list[dict]] = {}
    for arm in arms:
        table = arm_pools[arm.name].table
        entries = []
        for seed in job.seeds:
            for fold, test_persons in fold_persons.items():
                n_real = int((fold_of_rows != fold).sum())
                allowed = allowed_for_fold(table, test_persons, strict=job.strict) if len(table) else table
                chosen = cap_synthetic(allowed, n_real, job.max_synthetic_ratio, fold_seed(seed, fold))
                keys = (
                    [(s, int(i)) for s, i in zip(chosen["store"], chosen["index"], strict=True)]
                    if len(chosen)
                    else []
                )
                entries.append(
                    {
                        "seed": seed,
                        "fold": fold,
                        "synthetic_keys": keys,
                        "labels": chosen["label"].to_numpy(np.int64)
                        if len(chosen)
                        else np.zeros(0, np.int64),
                    }
                )
        plans[arm.name] = entries
    return plans


def _model_tasks(
    job: EvaluateJob,
    arms: Sequence[Arm],
    plans: dict[str, list[dict]],
    fold_of_rows: np.ndarray,
    folds: Sequence[str],
    position: dict[tuple[str, int], int],
) -> list[ModelTask]:
    tasks = []
    for seed in job.seeds:
        for fold in folds:
            train, test = np.flatnonzero(fold_of_rows != fold), np.flatnonzero(fold_of_rows == fold)
            tasks.append(ModelTask(BASELINE, seed, fold, train, test))
    for arm in arms:
        for entry in plans[arm.name]:
            fold = entry["fold"]
            keys = entry["synthetic_keys"]
            tasks.append(
                ModelTask(
                    arm=arm.name,
                    seed=entry["seed"],
                    fold=fold,
                    train_rows=np.flatnonzero(fold_of_rows != fold),
                    test_rows=np.flatnonzero(fold_of_rows == fold),
                    synthetic_rows=np.array([position[k] for k in keys], np.int64),
                    synthetic_labels=entry["labels"],
                    synthetic_ids=tuple(f"{store}#{index}" for store, index in keys),
                )
            )
    return tasks


def _train(
    job: EvaluateJob,
    spec: RecognizerSpec,
    budget: Budget,
    tasks: list[ModelTask],
    real_x: np.ndarray,
    labels: np.ndarray,
    synthetic_x: np.ndarray,
    n_classes: int,
    device: str,
    client,  # noqa: ANN001
    cache_dir: Path,
) -> tuple[list[FoldOutcome], int, float]:
    """Every task's outcome (finished models are cached: a rerun after a crash trains only the missing)."""
    started = time.perf_counter()
    fold_cache = cache_dir / "folds"
    real_digest = array_digest(real_x, labels)
    paths = [fold_cache / f"{model_cache_key(spec, budget, t, real_digest, synthetic_x)}.npz" for t in tasks]
    outcomes: list[FoldOutcome | None] = [load_outcome(path) for path in paths]
    todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
    batched = job.batched if job.batched is not None else device.startswith("cuda")
    _say(
        job,
        f"training {len(todo)} models ({len(tasks) - len(todo)} reused from {fold_cache}); {job.recognizer}, "
        f"{budget.steps} steps of {budget.batch} (real:synthetic {budget.ratio} when a fold has synthetic "
        f"clips), {'batched' if batched else 'one model at a time'}, device {device}",
    )
    workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {}))) if client is not None else 1
    size = max(1, min(job.group_size, math.ceil(len(todo) / workers))) if todo else 1
    groups = [todo[k : k + size] for k in range(0, len(todo), size)]
    common = dict(spec=spec, budget=budget, n_classes=n_classes, device=device, batched=batched)
    with StageProgress(
        "evaluate training", len(todo) * budget.steps, unit="model-steps", enabled=job.show_progress
    ) as progress:
        if client is None:
            for group in groups:
                finished = train_models(
                    tasks=[tasks[i] for i in group], real_x=real_x, real_y=labels, synthetic_x=synthetic_x,
                    torch_threads=job.torch_threads, on_step=progress.advance, **common,
                )  # fmt: skip
                for i, outcome in zip(group, finished, strict=True):
                    outcomes[i] = outcome
                    save_outcome(paths[i], outcome)
        elif groups:
            from distributed import as_completed

            from augmenter.cluster import cluster_has_gpus

            shared = client.scatter([real_x, labels, synthetic_x], broadcast=True)
            # Ask for a GPU only where workers advertise one (else the tasks would wait forever).
            resources = {"GPU": 1} if device.startswith("cuda") and cluster_has_gpus(client) else None
            futures = {
                client.submit(
                    _train_group, [tasks[i] for i in group], real_x=shared[0], real_y=shared[1],
                    synthetic_x=shared[2], torch_threads=1, resources=resources, pure=False, **common,
                ): group
                for group in groups
            }  # fmt: skip
            for future in as_completed(futures):
                group = futures[future]
                for i, outcome in zip(group, future.result(), strict=True):
                    outcomes[i] = outcome
                    save_outcome(paths[i], outcome)
                progress.advance(len(group) * budget.steps)
    return [o for o in outcomes if o is not None], len(tasks) - len(todo), time.perf_counter() - started


def synthetic_ids(table: pd.DataFrame) -> list[str]:
    """Names each synthetic row as "<store path>#<index in the store>" (the ids in training_sets.csv)."""
    return [f"{store}#{int(index)}" for store, index in zip(table["store"], table["index"], strict=True)]


def _assemble(outcomes: Sequence[FoldOutcome], arm: str, seed: int, n: int) -> np.ndarray:
    """(n,) predictions of one arm and seed, put back in row order from the folds."""
    prediction = np.full(n, -1, dtype=np.int64)
    for outcome in outcomes:
        if outcome.arm == arm and outcome.seed == seed:
            prediction[outcome.test_rows] = outcome.predictions
    if (prediction < 0).any():
        raise RuntimeError(f"{arm} seed {seed}: {(prediction < 0).sum()} samples got no prediction")
    return prediction


def _seed_mean(
    labels: np.ndarray, predictions: np.ndarray, n_classes: int, mask: np.ndarray | None = None
) -> dict:
    if mask is not None:
        labels, predictions = labels[mask], predictions[:, mask]
    per_seed = [pooled_scores(labels, p, n_classes) for p in predictions]
    return {
        "uf1": float(np.mean([s["uf1"] for s in per_seed])),
        "uar": float(np.mean([s["uar"] for s in per_seed])),
        "per_seed": per_seed,
        "n": int(len(labels)),
    }


def _folds_without(outcomes: Sequence[FoldOutcome], arm: str, seed: int) -> list[str]:
    return sorted_folds(
        [o.fold for o in outcomes if o.arm == arm and o.seed == seed and o.n_train_synthetic == 0]
    )


def _allowed_counts(
    pool: _ArmPool | None, fold_persons: dict[str, list[str]], strict: bool
) -> dict[str, int]:
    if pool is None or pool.table.empty:
        return {}
    return {
        fold: len(allowed_for_fold(pool.table, members, strict)) for fold, members in fold_persons.items()
    }


def _mean_draws(outcomes: Sequence[FoldOutcome], per_batch: str) -> float:
    """Samples a model of the arm drew in training (steps × clips per batch), mean over its models."""
    return float(np.mean([o.steps * getattr(o, per_batch) for o in outcomes])) if outcomes else 0.0


def _arm_reports(
    job: EvaluateJob,
    arms: Sequence[Arm],
    arm_pools: dict[str, _ArmPool],
    pools: dict[str, StorePool],
    report: dict,
    outcomes: Sequence[FoldOutcome],
    budget: Budget,
) -> dict[str, dict]:
    """The "arms" section: per arm its scores, gain, CI, raw and Holm-adjusted p-values (over the arms of
    this evaluation), budget, what each model saw (real and synthetic draws), synthetic counts and whether
    its stores were made at the evaluation's crop size."""
    result = {}
    for name in [BASELINE] + [arm.name for arm in arms]:
        mine = [o for o in outcomes if o.arm == name]
        used = sorted({i for o in mine for i in o.synthetic_ids})
        scores = report["variants"][name]
        entry = {
            "uf1": scores["uf1"],
            "uar": scores["uar"],
            "gain_uf1": 0.0,
            "ci_uf1": [0.0, 0.0],
            "gain_uar": 0.0,
            "ci_uar": [0.0, 0.0],
            "p_uf1": 1.0,
            "p_uar": 1.0,
            "steps": budget.steps,
            "batch": budget.batch,
            "n_synthetic": len(used),
            "ratio": "real:synthetic " + (budget.ratio if name != BASELINE else f"{budget.batch}:0"),
            "final_loss": float(np.mean([o.final_loss for o in mine])) if mine else float("nan"),
            "synthetic_mode": budget.mode,
            "real_draws": _mean_draws(mine, "real_per_batch"),
            "synthetic_draws": _mean_draws(mine, "synthetic_per_batch"),
            "per_seed_uf1": [s["uf1"] for s in scores["per_seed"]],
            "per_seed_gain_uf1": [0.0] * len(job.seeds),
        }
        if name != BASELINE:
            arm = arm_pools[name].arm
            test = report["gain_tests"][name]
            entry.update(
                {
                    "gain_uf1": test.gain_uf1,
                    "ci_uf1": list(test.ci_uf1),
                    "gain_uar": test.gain_uar,
                    "ci_uar": list(test.ci_uar),
                    "p_uf1": test.p_uf1,
                    "p_uar": test.p_uar,
                    "per_seed_gain_uf1": list(test.per_seed_gain_uf1),
                    "stores": [str(s) for s in arm.stores],
                    "store_sizes": [pools[str(s)].size for s in arm.stores],
                    "domain_mismatch": any(
                        pools[str(s)].size not in (None, job.crop_size) for s in arm.stores
                    ),
                    "shuffled_labels": arm.shuffle_labels,
                    "role": arm.role,
                    "synthetic": arm_pools[name].counts,
                    "folds_without_synthetic": _folds_without(outcomes, name, job.seeds[0]),
                    "n_synthetic_per_fold": float(
                        np.mean([o.n_train_synthetic for o in mine if o.seed == job.seeds[0]])
                    ),
                }
            )
        result[name] = entry
    others = [name for name in result if name != BASELINE]
    for key in ("p_uf1", "p_uar"):
        for name, adjusted in zip(others, holm_adjust([result[n][key] for n in others]), strict=True):
            result[name][f"{key}_holm"] = adjusted
    result[BASELINE].update({"p_uf1_holm": 1.0, "p_uar_holm": 1.0})
    report.pop("gain_tests")
    report.pop("variants")
    return result


def summarise(
    job: EvaluateJob,
    spec: RecognizerSpec,
    budget: Budget,
    rows: pd.DataFrame,
    labels: np.ndarray,
    classes: Sequence[str],
    persons_of_rows: np.ndarray,
    predictions: dict[str, np.ndarray],
    outcomes: Sequence[FoldOutcome],
    fold_of_rows: np.ndarray | None = None,
) -> dict:
    """The report.json content from the pooled predictions ((S, N) per arm); the gain tests resample persons
    whatever the folds (`fold_of_rows`, default one fold per person)."""
    n_classes = len(classes)
    fold_of_rows = persons_of_rows if fold_of_rows is None else fold_of_rows
    folds = sorted_folds(fold_of_rows)
    report: dict = {
        "recognizer": job.recognizer,
        "protocol": job.protocol,
        "classes": list(classes),
        "spec": asdict(spec),
        "budget": asdict(budget) | {"synthetic_share": job.synthetic_share, "ratio": budget.ratio},
        "feature_method": job.feature_method,
        "seeds": list(job.seeds),
        "n_seeds": len(job.seeds),
        "unit": "person",
        "n_folds": len(folds),
        "n_persons": len(set(persons_of_rows.tolist())),
        "folding": "one person per fold"
        if job.person_folds is None
        else f"{len(folds)} folds of whole persons",
        "folds": folds,
        "n_subjects": int(rows[["dataset", "subject"]].astype(str).drop_duplicates().shape[0]),
        "resampled": "persons x seeds" if len(job.seeds) > 1 else "persons",
        "n_samples": int(len(labels)),
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
    }
    variants = {name: _seed_mean(labels, p, n_classes) for name, p in predictions.items()}
    report["variants"] = variants
    report[BASELINE] = variants[BASELINE]
    tests = {
        name: gain_test(
            labels,
            predictions[BASELINE],
            p,
            persons_of_rows,
            n_classes,
            n_resamples=job.bootstrap,
            n_permutations=job.permutations,
        )  # fmt: skip
        for name, p in predictions.items()
        if name != BASELINE
    }
    report["gain_tests"] = tests
    if tests:
        first = next(iter(tests.values()))
        report["test"] = {
            "bootstrap": f"paired, {first.n_resamples} resamples of persons (clusters) and seeds, "
            "percentile 95 %",
            "permutation": f"{'exact' if first.exact_permutation else 'random'} sign flip over persons, "
            f"{first.n_permutations} permutations, two-sided",
        }
    datasets = rows["dataset"].astype(str).to_numpy()
    report["per_dataset"] = {
        name: {arm: _seed_mean(labels, p, n_classes, datasets == name) for arm, p in predictions.items()}
        for name in sorted(set(datasets.tolist()))
    }
    per_fold = []
    for fold in folds:
        entry: dict = {"fold": fold, "n_test": int((fold_of_rows == fold).sum())}
        for outcome in outcomes:
            if outcome.fold == fold:
                accuracy = float(np.mean(outcome.predictions == labels[outcome.test_rows]))
                entry.setdefault(f"{outcome.arm}_accuracy_seeds", {})[str(outcome.seed)] = accuracy
            if outcome.fold == fold and outcome.seed == job.seeds[0]:
                entry[f"{outcome.arm}_accuracy"] = float(
                    np.mean(outcome.predictions == labels[outcome.test_rows])
                )
                entry["n_train_real"] = outcome.n_train_real
                if outcome.arm == MAIN_ARM:
                    entry["n_synthetic"] = outcome.n_train_synthetic
        per_fold.append(entry)
    report["per_fold"] = per_fold
    if MAIN_ARM in predictions:
        main = tests[MAIN_ARM]
        report[MAIN_ARM] = variants[MAIN_ARM]
        report["gain_uf1"], report["gain_uar"] = main.gain_uf1, main.gain_uar
        report["ci_uf1"], report["ci_uar"] = list(main.ci_uf1), list(main.ci_uar)
        report["p_uf1"], report["p_uar"] = main.p_uf1, main.p_uar
        augmented = [o for o in outcomes if o.arm == MAIN_ARM]
        report["n_synthetic_used"] = int(sum(o.n_train_synthetic for o in augmented) / max(1, len(job.seeds)))
    report["fold_seconds"] = float(sum(o.seconds for o in outcomes))
    return report
