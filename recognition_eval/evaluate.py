"""`augmenter evaluate`: LOSO recognition with and without synthetic clips, on the same folds and seeds.

Order of work: select the protocol's real clips → flow features (cached) → synthetic pool (labels, quality
bars) → per fold and seed, the real training subjects plus the synthetic clips the leakage guard allows →
train, predict → pooled UF1/UAR over all folds, paired bootstrap CI of the gain, per-dataset breakdown →
report directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import LABEL3_CLASSES, clip_key, read_manifest
from recognition_eval.features import (
    ClipFeatures,
    FeatureSettings,
    real_clip_features,
    stack_planes,
    synthetic_clip_features,
)
from recognition_eval.loso import (
    FoldOutcome,
    array_digest,
    fold_cache_key,
    load_outcome,
    plan_folds,
    run_fold,
    save_outcome,
    sorted_folds,
)
from recognition_eval.metrics import paired_bootstrap_gain, pooled_scores
from recognition_eval.models import RecognizerSpec, recognizer_spec
from recognition_eval.synthetic import SyntheticPool, allowed_for_fold, load_synthetic, parse_quality_bar

log = logging.getLogger(__name__)

PROTOCOLS: dict[str, tuple[str, ...]] = {
    "3class": LABEL3_CLASSES,
    "casme2-5class": ("happiness", "disgust", "repression", "surprise", "others"),
}


@dataclass
class EvaluateJob:
    """Everything one evaluation needs; the CLI fills it from options, Python users build it directly."""

    manifest: Path
    root: Path
    out: Path
    recognizer: str = "resnet"
    synthetic: tuple[Path, ...] = ()
    max_synthetic_ratio: float | None = None
    min_quality: tuple[str, ...] = ()  # bars such as "l1<=0.08" (synthetic.parse_quality_bar)
    strict: bool = True
    seeds: tuple[int, ...] = (0,)
    workers: int = 0  # 0/1 = in this process; N ≥ 2 = a local Dask cluster of N workers
    scheduler_address: str | None = None
    feature_method: str = "tvl1"
    size: int | None = None  # recognizer input side; None = the recognizer's configured size
    crop_size: int = 128
    backend: str = "dlib"
    protocol: str = "3class"
    device: str = "auto"  # auto = cuda when the workers have a GPU, else cpu
    epochs: int | None = None  # None = the configured fixed schedule
    config: Path | None = None
    cache_dir: Path | None = None  # None = <out>/cache
    bootstrap: int = 2000
    # In-process torch threads. 1 by default: the small default nets gain little from more, and on a shared
    # machine two spinning threads were measured 6× slower than one. Dask tasks always use 1 (parallel folds).
    torch_threads: int | None = 1
    progress: Callable[[str], None] | None = field(default=None, repr=False)


def _say(job: EvaluateJob, message: str, level: int = logging.INFO) -> None:
    """Progress to the caller's sink (the CLI's stderr console) when given, else to logging."""
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


def _client(job: EvaluateJob):  # noqa: ANN202 - distributed is imported lazily
    if job.scheduler_address is None and job.workers <= 1:
        return None
    from augmenter.cluster import get_client

    return get_client(scheduler_address=job.scheduler_address, workers=job.workers, dashboard_address=":0")


def _map(client, function: Callable, items: Sequence, **kwargs: object) -> list:  # noqa: ANN001
    if client is None:
        return [function(item, **kwargs) for item in items]
    futures = client.map(function, list(items), pure=False, **kwargs)
    return client.gather(futures)


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


def evaluate(job: EvaluateJob) -> dict:
    """Run the whole evaluation and write the report directory; returns the report.json content."""
    from recognition_eval.report import write_report

    started = time.perf_counter()
    job.out = Path(job.out)
    job.out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(job.cache_dir) if job.cache_dir is not None else job.out / "cache"
    spec: RecognizerSpec = recognizer_spec(job.recognizer, job.config, epochs=job.epochs, input_size=job.size)
    settings = FeatureSettings(method=job.feature_method, crop_size=job.crop_size, backend=job.backend)
    bars = [parse_quality_bar(text) for text in job.min_quality]
    if not job.seeds:
        raise UserError("--seeds: give at least one seed")
    for path in job.synthetic:
        if not Path(path).exists():
            raise UserError(f"{path}: synthetic store not found; pass a store made by `augmenter generate`")

    manifest = read_manifest(job.manifest)
    rows, labels, n_unlabelled, label_column = select_protocol_rows(manifest, job.protocol)
    classes = PROTOCOLS[job.protocol]
    _say(
        job,
        f"{len(rows)} clips in the {job.protocol} protocol ({n_unlabelled} rows without a class dropped)",
    )
    if len(rows) == 0:
        raise UserError(
            f"{job.manifest}: no clip has a {label_column} of {list(classes)}; check the manifest"
        )

    client = _client(job)
    try:
        device = job.device
        if device == "auto":
            if client is not None:
                from augmenter.cluster import cluster_has_gpus

                device = "cuda" if cluster_has_gpus(client) else "cpu"
            else:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"

        # ---- real features (cached per clip)
        feature_started = time.perf_counter()
        results = _map(
            client,
            _real_features_task,
            [{k: v for k, v in row.items()} for _, row in rows.iterrows()],
            root=str(job.root),
            settings=settings,
            cache_dir=str(cache_dir / "features"),
            prepare_cache=str(cache_dir / "prepared"),
        )
        failed = [(clip_key(rows.iloc[i]), r) for i, r in enumerate(results) if isinstance(r, str)]
        good = np.array([not isinstance(r, str) for r in results], dtype=bool)
        for key, reason in failed:
            _say(job, f"warning: clip {key} left out: {reason}", logging.WARNING)
        rows, labels = rows[good].reset_index(drop=True), labels[good]
        real_clips: list[ClipFeatures] = [r for r in results if not isinstance(r, str)]
        if len(real_clips) == 0:
            raise UserError(f"{job.manifest}: no clip produced features (first reason: {failed[0][1]})")
        feature_stats = {
            "computed": sum(c.computed for c in real_clips),
            "cache_hits": sum(not c.computed for c in real_clips),
            "apex_estimated": sum(c.apex_estimated for c in real_clips),
            "failed": [{"clip": k, "reason": r} for k, r in failed],
        }
        real_x = stack_planes(real_clips, spec.input_size, spec.channel_indices)
        folds_of_rows = (rows["dataset"].astype(str) + "/" + rows["subject"].astype(str)).to_numpy()
        folds = sorted_folds(folds_of_rows)
        _say(
            job,
            f"features of {len(real_clips)} clips ({feature_stats['computed']} computed, "
            f"{feature_stats['cache_hits']} cached, {feature_stats['apex_estimated']} with estimated apex) "
            f"in {time.perf_counter() - feature_started:.1f} s; {len(folds)} LOSO folds",
        )

        # ---- synthetic pool, per-fold selection (leakage guard); the same folds and seeds for both variants
        pool = SyntheticPool(pd.DataFrame())
        fold_allowed: dict[str, int] = {}
        if job.synthetic:
            pool = load_synthetic(job.synthetic, classes, label_column, bars)
            _say(
                job,
                f"{len(pool)} synthetic clips usable ({pool.dropped['no_label']} without a class, "
                f"{pool.dropped['quality']} below the quality bar dropped)",
            )
            fold_allowed = {f: len(allowed_for_fold(pool.table, f, strict=job.strict)) for f in folds}
            empty = [f for f in folds if fold_allowed[f] == 0]
            if empty:
                _say(
                    job,
                    f"warning: {len(empty)} of {len(folds)} folds get no synthetic clip "
                    f"({'strict' if job.strict else 'relaxed'} leakage guard): {', '.join(empty)}",
                    logging.WARNING,
                )
        plans = plan_folds(
            folds_of_rows,
            job.seeds,
            pool.table if job.synthetic else None,
            job.strict,
            job.max_synthetic_ratio,
        )
        needed = sorted({int(i) for plan in plans for i in plan.synthetic_rows})
        synthetic_clips: dict[int, ClipFeatures] = {}
        if needed:
            items = [pool.table.loc[i].to_dict() for i in needed]
            computed = _map(
                client,
                _synthetic_features_task,
                items,
                settings=settings,
                cache_dir=str(cache_dir / "features"),
            )
            synthetic_clips = dict(zip(needed, computed, strict=True))
            feature_stats["synthetic_computed"] = sum(c.computed for c in computed)
            feature_stats["synthetic_cache_hits"] = sum(not c.computed for c in computed)

        # ---- LOSO tasks (finished folds are cached: a rerun after a crash trains only the missing ones)
        # One array of every synthetic sample any fold uses; each fold picks its rows (sent to workers once).
        synthetic_x = stack_planes(
            [synthetic_clips[i] for i in needed], spec.input_size, spec.channel_indices
        )
        synthetic_y = pool.table.loc[needed, "label"].to_numpy(np.int64) if needed else np.zeros(0, np.int64)
        all_ids = synthetic_ids(pool.table.loc[needed]) if needed else []
        position = {row: k for k, row in enumerate(needed)}
        calls = []
        for plan in plans:
            for variant in ["baseline"] + (["augmented"] if job.synthetic else []):
                chosen = plan.synthetic_rows if variant == "augmented" else []
                pick = np.array([position[int(i)] for i in chosen], dtype=np.int64)
                calls.append(
                    dict(
                        spec=spec,
                        fold=plan.fold,
                        variant=variant,
                        seed=plan.seed,
                        train_rows=plan.train_rows,
                        test_rows=plan.test_rows,
                        synthetic_pick=pick,
                        synthetic_ids=[all_ids[k] for k in pick],
                        n_classes=len(classes),
                        device=device,
                    )
                )
        train_started = time.perf_counter()
        fold_cache = cache_dir / "folds"
        real_digest = array_digest(real_x, labels)
        synthetic_digest = array_digest(synthetic_x, synthetic_y)
        cache_paths = [fold_cache / f"{fold_cache_key(c, real_digest, synthetic_digest)}.npz" for c in calls]
        outcomes: list[FoldOutcome | None] = [load_outcome(path) for path in cache_paths]
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        _say(
            job,
            f"training {len(todo)} fold models ({len(calls) - len(todo)} reused from {fold_cache}; "
            f"{job.recognizer}, {spec.epochs} epochs, device {device})",
        )
        if client is None:
            for i in todo:
                outcomes[i] = run_fold(
                    real_x=real_x,
                    real_y=labels,
                    synthetic_x=synthetic_x,
                    synthetic_y=synthetic_y,
                    torch_threads=job.torch_threads,
                    **calls[i],
                )
                save_outcome(cache_paths[i], outcomes[i])
        elif todo:
            from distributed import as_completed

            shared = client.scatter([real_x, labels, synthetic_x, synthetic_y], broadcast=True)
            from augmenter.cluster import cluster_has_gpus

            # Ask for a GPU only where workers advertise one (else the tasks would wait forever).
            resources = {"GPU": 1} if device.startswith("cuda") and cluster_has_gpus(client) else None
            futures = {
                client.submit(
                    run_fold,
                    real_x=shared[0],
                    real_y=shared[1],
                    synthetic_x=shared[2],
                    synthetic_y=shared[3],
                    torch_threads=1,
                    resources=resources,
                    pure=False,
                    **calls[i],
                ): i
                for i in todo
            }
            for future in as_completed(futures):
                i = futures[future]
                outcomes[i] = future.result()
                save_outcome(cache_paths[i], outcomes[i])
        fold_cache_hits = len(calls) - len(todo)
        train_seconds = time.perf_counter() - train_started
    finally:
        if client is not None:
            from augmenter.cluster import close_client

            close_client(client)

    # ---- pooled scores
    predictions = {
        variant: np.stack([_assemble(outcomes, variant, seed, len(rows)) for seed in job.seeds])
        for variant in ({o.variant for o in outcomes})
    }
    report = summarise(job, spec, rows, labels, classes, folds_of_rows, predictions, outcomes)
    report.update(
        {
            "n_unlabelled_dropped": n_unlabelled,
            "features": feature_stats,
            "synthetic": {
                "stores": [str(p) for p in job.synthetic],
                "strict": job.strict,
                "max_synthetic_ratio": job.max_synthetic_ratio,
                "min_quality": list(job.min_quality),
                "pool": len(pool),
                "dropped": pool.dropped if job.synthetic else {},
                "allowed_per_fold": fold_allowed,
                "folds_without_synthetic": [f for f, n in fold_allowed.items() if n == 0],
            },
            "seconds": {"train": round(train_seconds, 2), "total": round(time.perf_counter() - started, 2)},
            "fold_cache_hits": fold_cache_hits,
        }
    )
    write_report(job.out, report, rows, labels, classes, folds_of_rows, predictions, outcomes)
    return report


def synthetic_ids(table: pd.DataFrame) -> list[str]:
    """Names each synthetic row as "<store path>#<index in the store>" (the ids in training_sets.csv)."""
    return [f"{store}#{int(index)}" for store, index in zip(table["store"], table["index"], strict=True)]


def _assemble(outcomes: Sequence[FoldOutcome], variant: str, seed: int, n: int) -> np.ndarray:
    """(n,) predictions of one variant and seed, put back in row order from the folds."""
    prediction = np.full(n, -1, dtype=np.int64)
    for outcome in outcomes:
        if outcome.variant == variant and outcome.seed == seed:
            prediction[outcome.test_rows] = outcome.predictions
    if (prediction < 0).any():
        raise RuntimeError(f"{variant} seed {seed}: {(prediction < 0).sum()} samples got no prediction")
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


def summarise(
    job: EvaluateJob,
    spec: RecognizerSpec,
    rows: pd.DataFrame,
    labels: np.ndarray,
    classes: Sequence[str],
    folds_of_rows: np.ndarray,
    predictions: dict[str, np.ndarray],
    outcomes: Sequence[FoldOutcome],
) -> dict:
    """The report.json content from the pooled predictions ((S, N) per variant)."""
    n_classes = len(classes)
    report: dict = {
        "recognizer": job.recognizer,
        "protocol": job.protocol,
        "classes": list(classes),
        "spec": asdict(spec),
        "feature_method": job.feature_method,
        "seeds": list(job.seeds),
        "n_samples": int(len(labels)),
        "n_folds": int(len(set(folds_of_rows.tolist()))),
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
    }
    for variant, prediction in predictions.items():
        report[variant] = _seed_mean(labels, prediction, n_classes)
    datasets = rows["dataset"].astype(str).to_numpy()
    report["per_dataset"] = {
        name: {
            variant: _seed_mean(labels, p, n_classes, datasets == name) for variant, p in predictions.items()
        }
        for name in sorted(set(datasets.tolist()))
    }
    per_fold = []
    for fold in sorted_folds(folds_of_rows):
        entry: dict = {"fold": fold, "n_test": int((folds_of_rows == fold).sum())}
        for outcome in outcomes:
            if outcome.fold == fold and outcome.seed == job.seeds[0]:
                entry[f"{outcome.variant}_accuracy"] = float(
                    np.mean(outcome.predictions == labels[outcome.test_rows])
                )
                entry["n_train_real"] = outcome.n_train_real
                if outcome.variant == "augmented":
                    entry["n_synthetic"] = outcome.n_train_synthetic
        per_fold.append(entry)
    report["per_fold"] = per_fold
    augmented = [o for o in outcomes if o.variant == "augmented"]
    report["n_synthetic_used"] = int(sum(o.n_train_synthetic for o in augmented) / max(1, len(job.seeds)))
    if "augmented" in predictions:
        base, aug = report["baseline"], report["augmented"]
        report["gain_uf1"] = aug["uf1"] - base["uf1"]
        report["gain_uar"] = aug["uar"] - base["uar"]
        ci = paired_bootstrap_gain(
            labels, predictions["baseline"], predictions["augmented"], n_classes, n_resamples=job.bootstrap
        )
        report["ci_uf1"], report["ci_uar"] = list(ci["uf1"]), list(ci["uar"])
    report["fold_seconds"] = float(sum(o.seconds for o in outcomes))
    return report
