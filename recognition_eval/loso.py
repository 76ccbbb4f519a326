"""Leave-one-subject-out training: a fresh recognizer per test subject, fixed schedule, no test-time choice.

Every fold trains for exactly `spec.epochs` epochs and the final weights predict the held-out subject;
nothing about the test subject (labels, scores, epoch choice) reaches training. Inputs are standardised per
channel with the training samples' statistics only. The loss is class-weighted cross-entropy (weights from
the training labels), so the majority class does not swallow UF1.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from recognition_eval.models import RecognizerSpec, build_recognizer


def sorted_folds(folds: Sequence[str] | np.ndarray) -> list[str]:
    """Distinct fold keys in natural order (casme2/2 before casme2/10), the order of every table and log."""
    return sorted(
        {str(f) for f in folds},
        key=lambda key: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)],
    )


def fold_seed(seed: int, fold: str) -> int:
    """A seed per (run seed, fold) that baseline and augmented runs share, so they differ only in the data."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{fold}".encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class FoldOutcome:
    """Predictions of one fold plus what went into its training set."""

    fold: str
    seed: int
    variant: str  # "baseline" | "augmented"
    test_rows: np.ndarray  # positions in the evaluation's real-sample table
    predictions: np.ndarray
    n_train_real: int
    n_train_synthetic: int
    synthetic_ids: tuple[str, ...]  # the synthetic clips this fold's model actually trained on
    seconds: float


@dataclass(frozen=True)
class FoldPlan:
    """What one fold trains and tests on: real rows by position, synthetic clips by pool row."""

    fold: str
    seed: int
    train_rows: np.ndarray
    test_rows: np.ndarray
    synthetic_rows: np.ndarray  # row labels of the synthetic pool table (empty for the baseline)


def plan_folds(
    folds_of_rows: np.ndarray,
    seeds: Sequence[int],
    synthetic_table: pd.DataFrame | None = None,
    strict: bool = True,
    max_ratio: float | None = None,
) -> list[FoldPlan]:
    """One plan per (seed, test subject): the other subjects' real clips train, the subject's clips test, and
    the synthetic clips the leakage guard allows (capped at max_ratio × real training clips) are added.
    """
    from recognition_eval.synthetic import allowed_for_fold, cap_synthetic

    folds_of_rows = np.asarray(folds_of_rows)
    plans = []
    for seed in seeds:
        for fold in sorted_folds(folds_of_rows):
            train_rows = np.flatnonzero(folds_of_rows != fold)
            synthetic = np.zeros(0, dtype=np.int64)
            if synthetic_table is not None and len(synthetic_table):
                allowed = allowed_for_fold(synthetic_table, fold, strict=strict)
                synthetic = cap_synthetic(
                    allowed, len(train_rows), max_ratio, fold_seed(seed, fold)
                ).index.to_numpy()
            plans.append(FoldPlan(fold, seed, train_rows, np.flatnonzero(folds_of_rows == fold), synthetic))
    return plans


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return [(a - mean) / std for a in (train, *others)]


def train_and_predict(
    spec: RecognizerSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """Train a fresh `spec` network on (x_train, y_train) for spec.epochs epochs; argmax predictions."""
    if len(x_test) == 0:
        return np.zeros(0, dtype=np.int64)
    x_train, x_test = _standardise(np.asarray(x_train, np.float32), np.asarray(x_test, np.float32))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    target_device = torch.device(device)
    model = build_recognizer(spec, n_classes).to(target_device)
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=target_device))
    optimiser = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    inputs = torch.from_numpy(np.ascontiguousarray(x_train)).to(target_device)
    labels = torch.from_numpy(np.asarray(y_train, np.int64)).to(target_device)
    model.train()
    for _ in range(spec.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(target_device)
        for start in range(0, len(order), spec.batch):
            batch = order[start : start + spec.batch]
            if len(batch) < 2 and len(order) >= 2:
                continue  # a batch of one breaks BatchNorm statistics; its sample is seen in other epochs
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs[batch]), labels[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x_test)).to(target_device))
    return logits.argmax(dim=1).cpu().numpy().astype(np.int64)


def run_fold(
    spec: RecognizerSpec,
    fold: str,
    variant: str,
    seed: int,
    real_x: np.ndarray,
    real_y: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    synthetic_x: np.ndarray,
    synthetic_y: np.ndarray,
    n_classes: int,
    synthetic_ids: Sequence[str] = (),
    device: str = "cpu",
    synthetic_pick: np.ndarray | None = None,
    torch_threads: int | None = None,
) -> FoldOutcome:
    """One LOSO fold: real training rows (+ the synthetic samples chosen for this fold) → test predictions.

    synthetic_pick: positions in synthetic_x/y of this fold's synthetic samples (None = all), so a pool
    shared by every fold goes to the workers once. The seed is fold_seed(seed, fold), identical for
    baseline and augmented. A self-contained function of arrays: it runs the same in-process and as a
    Dask task.
    """
    previous_threads = torch.get_num_threads()
    if torch_threads is not None:
        # Tiny nets gain nothing from intra-op threads, and on a busy machine 2 spinning threads can be 6×
        # slower than one; restored afterwards so an in-process caller keeps its own setting.
        torch.set_num_threads(torch_threads)
    if synthetic_pick is not None:
        synthetic_x, synthetic_y = synthetic_x[synthetic_pick], synthetic_y[synthetic_pick]
    try:
        return _run_fold(
            spec, fold, variant, seed, real_x, real_y, train_rows, test_rows, synthetic_x, synthetic_y,
            n_classes, synthetic_ids, device,
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _run_fold(
    spec: RecognizerSpec,
    fold: str,
    variant: str,
    seed: int,
    real_x: np.ndarray,
    real_y: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    synthetic_x: np.ndarray,
    synthetic_y: np.ndarray,
    n_classes: int,
    synthetic_ids: Sequence[str],
    device: str,
) -> FoldOutcome:
    started = time.perf_counter()
    x_train = real_x[train_rows]
    y_train = real_y[train_rows]
    if len(synthetic_x) != len(synthetic_ids) and len(synthetic_ids):
        raise ValueError(f"fold {fold}: {len(synthetic_x)} synthetic samples but {len(synthetic_ids)} ids")
    if len(synthetic_x):
        x_train = np.concatenate([x_train, synthetic_x])
        y_train = np.concatenate([y_train, synthetic_y])
    predictions = train_and_predict(
        spec, x_train, y_train, real_x[test_rows], n_classes, fold_seed(seed, fold), device=device
    )
    return FoldOutcome(
        fold=fold,
        seed=seed,
        variant=variant,
        test_rows=np.asarray(test_rows),
        predictions=predictions,
        n_train_real=len(train_rows),
        n_train_synthetic=len(synthetic_x),
        synthetic_ids=tuple(synthetic_ids),
        seconds=time.perf_counter() - started,
    )


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtype, shape and bytes: a training set's identity for the fold cache."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def fold_cache_key(call: dict, real_digest: str, synthetic_digest: str = "") -> str:
    """Everything that decides a fold's predictions: schedule, fold, variant, seed and the exact data
    (the digests of the real and synthetic sample arrays, and which rows of them this fold uses).
    """
    spec = call["spec"]
    head = json.dumps(
        [asdict(spec), call["fold"], call["variant"], int(call["seed"]), real_digest, synthetic_digest],
        default=str,
    )
    data = array_digest(
        np.asarray(call["train_rows"]),
        np.asarray(call["test_rows"]),
        np.asarray(call["synthetic_pick"] if call.get("synthetic_pick") is not None else [], np.int64),
    )
    return hashlib.sha256((head + data).encode()).hexdigest()[:24]


def save_outcome(path: Path, outcome: FoldOutcome) -> None:
    """Keep a finished fold (atomic), so a rerun after a crash retrains only what is missing."""
    from augmenter.prepare import atomic_savez

    meta = {k: v for k, v in asdict(outcome).items() if k not in ("test_rows", "predictions")}
    atomic_savez(
        path, test_rows=outcome.test_rows, predictions=outcome.predictions, meta=np.asarray(json.dumps(meta))
    )


def load_outcome(path: Path) -> FoldOutcome | None:
    """A fold finished by an earlier run, or None (absent or unreadable: it is simply trained again)."""
    from augmenter.prepare import load_npz

    arrays = load_npz(path, ("test_rows", "predictions", "meta"))
    if arrays is None:
        return None
    meta = json.loads(str(arrays["meta"]))
    meta["synthetic_ids"] = tuple(meta["synthetic_ids"])
    return FoldOutcome(test_rows=arrays["test_rows"], predictions=arrays["predictions"], **meta)
