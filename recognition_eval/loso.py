"""Leave-one-PERSON-out training with equal budgets: a fresh recognizer per (arm, seed, test person).

- Folds are persons (the manifest's `person` column): a person filmed as two subjects is one fold, so no fold
  trains on the person it tests.
- Equal budgets: every model of every arm trains for the same number of optimiser steps with the same
  learning rate and schedule, and the same real batches. The baseline re-samples its real clips
  (epoch-style: every real clip once before any repeats). In the default `add` mode an arm's model sees
  exactly the baseline's real batches plus `synthetic_per_batch` synthetic clips on top (augmentation adds
  data); in `replace` mode it draws `synthetic_per_batch` of each fixed-size batch from its synthetic clips
  and the rest from the real ones (half the real data + synthetic against all of it). A fold the guard
  leaves without synthetic clips trains exactly the baseline's model (same initial weights, same batches).
- No test-time choice: the last weights predict the held-out person; nothing about it reaches training.
  Inputs are standardised with the fold's real training clips; the loss is cross-entropy weighted by the
  inverse class frequency of what the model is actually fed.

Cost: every model of a group trains at once as one batched model (torch.func.stack_module_state +
functional_call + vmap); Adam is elementwise, so one Adam over the stacked weights is every model's own Adam.
BatchNorm stays: its running statistics are stacked per model and passed to functional_call, so each model
normalises with its own batch statistics and keeps its own running buffers (vmap updates the stacked buffers
in place), and evaluation uses them as usual. `train_models(batched=False)` runs the same models one by one
(the reference the batched path must equal; benchmarks/loso_throughput.py compares the two). Dropout draws
differ between the two paths (vmap randomness="different"), so only dropout-free nets are bit-comparable.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from recognition_eval.models import RecognizerSpec, build_recognizer


def sorted_folds(folds: Sequence[str] | np.ndarray) -> list[str]:
    """Distinct fold keys in natural order (casme2/2 before casme2/10), the order of every table and log."""
    return sorted(
        {str(f) for f in folds},
        key=lambda key: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)],
    )


def fold_seed(seed: int, fold: str) -> int:
    """A seed per (run seed, fold) that every arm shares: same initial weights, same real-clip order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{fold}".encode()).digest()[:4], "little") & 0x7FFFFFFF


SYNTHETIC_MODES = ("add", "replace")


@dataclass(frozen=True)
class Budget:
    """The training budget every model gets: `steps` optimiser steps whose batches hold `batch` real clips.

    When the fold has synthetic clips, `synthetic_per_batch` of them join each batch: in `add` mode on top of
    the same real clips (batch + synthetic samples), in `replace` mode in place of real ones (batch samples,
    batch − synthetic of them real). The baseline and folds without synthetic clips use 0.
    """

    steps: int
    batch: int
    synthetic_per_batch: int = 0
    mode: str = "add"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2:
            raise ValueError(f"a budget needs ≥ 1 step and batches of ≥ 2 (got {self.steps}, {self.batch})")
        if self.mode not in SYNTHETIC_MODES:
            raise ValueError(f"synthetic mode must be one of {SYNTHETIC_MODES} (got {self.mode!r})")
        limit = self.batch if self.mode == "add" else self.batch - 1
        if not 0 <= self.synthetic_per_batch <= limit:
            raise ValueError(f"synthetic_per_batch must be in [0, {limit}] in {self.mode} mode")

    def real_per_batch(self, synthetic: int) -> int:
        """Real clips in a batch that carries `synthetic` synthetic ones."""
        return self.batch if self.mode == "add" else self.batch - synthetic

    @property
    def ratio(self) -> str:
        """real:synthetic per batch of a fold with synthetic clips, e.g. "16:8" (add) or "8:8" (replace)."""
        return f"{self.real_per_batch(self.synthetic_per_batch)}:{self.synthetic_per_batch}"


def budget_for(
    spec: RecognizerSpec, n_train_real: Sequence[int], synthetic_share: float, mode: str = "add"
) -> Budget:
    """spec.epochs passes over the median real training set of the folds, in batches of spec.batch real clips;
    synthetic clips per batch = synthetic_share × spec.batch, rounded (at least one when the share is > 0):
    added to the real clips (`add`) or taking their place (`replace`, share < 1).
    """
    median = float(np.median(np.asarray(n_train_real))) if len(n_train_real) else 0.0
    steps = max(1, int(spec.epochs * math.ceil(max(median, 1.0) / spec.batch)))
    top = 1.0 if mode == "add" else 1.0 - 1e-9
    if not 0.0 <= synthetic_share <= top:
        raise ValueError(
            f"synthetic share must be in [0, 1{']' if mode == 'add' else ')'} in {mode} mode "
            f"(got {synthetic_share})"
        )
    per_batch = int(round(synthetic_share * spec.batch))
    limit = spec.batch if mode == "add" else spec.batch - 1
    per_batch = min(limit, max(1, per_batch)) if synthetic_share > 0 else 0
    return Budget(steps=steps, batch=spec.batch, synthetic_per_batch=per_batch, mode=mode)


@dataclass(frozen=True)
class ModelTask:
    """One model to train: its arm, seed and test person, real rows by position, and its synthetic samples
    (positions in the shared synthetic array, with this arm's labels — permuted for a shuffled arm).
    """

    arm: str
    seed: int
    fold: str
    train_rows: np.ndarray
    test_rows: np.ndarray
    synthetic_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    synthetic_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    synthetic_ids: tuple[str, ...] = ()

    @property
    def model_seed(self) -> int:
        return fold_seed(self.seed, self.fold)


@dataclass(frozen=True)
class FoldOutcome:
    """Predictions of one model plus what it trained on and how training ended."""

    fold: str
    seed: int
    arm: str
    test_rows: np.ndarray  # positions in the evaluation's real-sample table
    predictions: np.ndarray
    n_train_real: int
    n_train_synthetic: int
    synthetic_ids: tuple[str, ...]  # the synthetic clips this model could draw from
    steps: int
    batch: int
    synthetic_per_batch: int  # 0 when the fold got no synthetic clip
    real_per_batch: int  # real clips in each of its batches (the baseline's count in add mode)
    final_loss: float  # mean training loss over the last tenth of the steps
    seconds: float


def _stream(rng: np.random.Generator, pool: np.ndarray, length: int) -> np.ndarray:
    """`length` draws from `pool`, epoch-style: a fresh permutation each pass, no repeats within a pass."""
    if length == 0:
        return np.zeros(0, np.int64)
    passes = math.ceil(length / len(pool))
    return np.concatenate([pool[rng.permutation(len(pool))] for _ in range(passes)])[:length]


def batch_schedule(
    task: ModelTask, budget: Budget, real_y: np.ndarray, n_real: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, batch) positions into [real samples; synthetic samples], their labels, and the synthetic
    count per batch actually used (0 when the task has no synthetic sample).

    The real stream depends only on (seed, fold), so every arm's real draws start alike (in add mode they are
    the baseline's batches exactly) and a task without synthetic samples gets exactly the baseline's schedule.
    """
    synthetic = budget.synthetic_per_batch if len(task.synthetic_rows) else 0
    real_count = budget.real_per_batch(synthetic)
    train_rows = np.asarray(task.train_rows, np.int64)
    if len(train_rows) == 0:
        raise ValueError(f"fold {task.fold}: no real training sample")
    real = _stream(np.random.default_rng([task.model_seed, 0]), train_rows, budget.steps * real_count)
    real = real.reshape(budget.steps, real_count)
    labels = np.asarray(real_y, np.int64)[real]
    if synthetic:
        draw = _stream(
            np.random.default_rng([task.model_seed, 1]),
            np.arange(len(task.synthetic_rows)),
            budget.steps * synthetic,
        ).reshape(budget.steps, synthetic)
        positions = np.concatenate([real, n_real + np.asarray(task.synthetic_rows, np.int64)[draw]], axis=1)
        labels = np.concatenate([labels, np.asarray(task.synthetic_labels, np.int64)[draw]], axis=1)
        return positions, labels, synthetic
    return real, labels, 0


def _class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse frequency of each class in what the model is fed (0 for a class it never sees)."""
    counts = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0).astype(np.float32)


def _weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-model class-weighted cross-entropy over (M, B, K) logits: PyTorch's weighted mean, per model."""
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, labels[..., None]).squeeze(-1)
    w = weights.gather(1, labels)
    return (w * nll).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)


@dataclass
class _Prepared:
    """Everything a group of models needs, as tensors (M leading)."""

    positions: np.ndarray  # (M, steps, batch)
    labels: torch.Tensor  # (M, steps, batch)
    weights: torch.Tensor  # (M, K)
    mean: torch.Tensor  # (M, 1, C, 1, 1)
    std: torch.Tensor
    synthetic_used: list[int]


def _prepare(
    tasks: Sequence[ModelTask], budget: Budget, real_x: np.ndarray, real_y: np.ndarray, n_classes: int
) -> _Prepared:
    schedules = [batch_schedule(t, budget, real_y, len(real_x)) for t in tasks]
    means, stds = [], []
    for task in tasks:
        train = real_x[np.asarray(task.train_rows, np.int64)]
        means.append(train.mean(axis=(0, 2, 3)))
        stds.append(train.std(axis=(0, 2, 3)) + 1e-6)
    shape = (len(tasks), 1, real_x.shape[1], 1, 1)
    return _Prepared(
        positions=np.stack([s[0] for s in schedules]),
        labels=torch.from_numpy(np.stack([s[1] for s in schedules])),
        weights=torch.from_numpy(np.stack([_class_weights(s[1], n_classes) for s in schedules])),
        mean=torch.from_numpy(np.stack(means).astype(np.float32)).reshape(shape),
        std=torch.from_numpy(np.stack(stds).astype(np.float32)).reshape(shape),
        synthetic_used=[s[2] for s in schedules],
    )


def _build(spec: RecognizerSpec, tasks: Sequence[ModelTask], n_classes: int) -> list[torch.nn.Module]:
    models = []
    for task in tasks:
        torch.manual_seed(task.model_seed)
        models.append(build_recognizer(spec, n_classes))
    return models


def _test_inputs(tasks: Sequence[ModelTask], real_x: np.ndarray) -> tuple[torch.Tensor, list[int]]:
    """(M, T_max, C, H, W) test samples, padded with each model's first test sample; and the true lengths."""
    lengths = [len(t.test_rows) for t in tasks]
    longest = max(1, max(lengths))
    empty = np.zeros(longest, np.int64)
    rows = [
        np.resize(np.asarray(t.test_rows, np.int64), longest) if n else empty
        for t, n in zip(tasks, lengths, strict=True)
    ]
    return torch.from_numpy(real_x[np.stack(rows)]), lengths


def _train_batched(
    spec: RecognizerSpec,
    tasks: Sequence[ModelTask],
    data: torch.Tensor,
    real_x: np.ndarray,
    prepared: _Prepared,
    budget: Budget,
    n_classes: int,
    device: torch.device,
    on_step: Callable[[int], None] | None,
) -> tuple[list[np.ndarray], np.ndarray]:
    from torch.func import functional_call, stack_module_state

    models = [m.to(device) for m in _build(spec, tasks, n_classes)]
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    del models

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (x,))

    batched = torch.vmap(forward, randomness="different")
    optimiser = torch.optim.Adam(list(params.values()), lr=spec.lr, weight_decay=spec.weight_decay)
    labels, weights = prepared.labels.to(device), prepared.weights.to(device)
    mean, std = prepared.mean.to(device), prepared.std.to(device)
    losses = np.zeros((len(tasks), budget.steps), np.float32)
    skeleton.train()
    for step in range(budget.steps):
        index = torch.from_numpy(prepared.positions[:, step]).to(device)
        x = (data[index] - mean) / std
        loss = _weighted_loss(batched(params, buffers, x), labels[:, step], weights)
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimiser.step()
        losses[:, step] = loss.detach().cpu().numpy()
        if on_step is not None:
            on_step(len(tasks))
    skeleton.eval()
    test_x, lengths = _test_inputs(tasks, real_x)
    with torch.no_grad():
        logits = batched(params, buffers, (test_x.to(device) - mean) / std)
    predictions = logits.argmax(dim=-1).cpu().numpy().astype(np.int64)
    return [predictions[k, :n] for k, n in enumerate(lengths)], losses


def _train_one_by_one(
    spec: RecognizerSpec,
    tasks: Sequence[ModelTask],
    data: torch.Tensor,
    real_x: np.ndarray,
    prepared: _Prepared,
    budget: Budget,
    n_classes: int,
    device: torch.device,
    on_step: Callable[[int], None] | None,
) -> tuple[list[np.ndarray], np.ndarray]:
    losses = np.zeros((len(tasks), budget.steps), np.float32)
    predictions = []
    test_x, lengths = _test_inputs(tasks, real_x)
    for k, model in enumerate(_build(spec, tasks, n_classes)):
        # channels-last weights and inputs: the same network, ~1.5× faster small convolutions and pooling
        # on CPUs (STSTNet's training step 7.6 → 4.9 ms at batch 24 on one core)
        model = model.to(device, memory_format=torch.channels_last)
        optimiser = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        labels, weights = prepared.labels[k : k + 1].to(device), prepared.weights[k : k + 1].to(device)
        mean, std = prepared.mean[k].to(device), prepared.std[k].to(device)
        model.train()
        for step in range(budget.steps):
            x = (data[torch.from_numpy(prepared.positions[k, step]).to(device)] - mean) / std
            x = x.contiguous(memory_format=torch.channels_last)
            loss = _weighted_loss(model(x)[None], labels[:, step], weights)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimiser.step()
            losses[k, step] = float(loss.detach())
            if on_step is not None:
                on_step(1)
        model.eval()
        with torch.no_grad():
            logits = model(
                ((test_x[k].to(device) - mean) / std).contiguous(memory_format=torch.channels_last)
            )
        predictions.append(logits.argmax(dim=-1).cpu().numpy().astype(np.int64)[: lengths[k]])
    return predictions, losses


def train_models(
    spec: RecognizerSpec,
    tasks: Sequence[ModelTask],
    real_x: np.ndarray,
    real_y: np.ndarray,
    synthetic_x: np.ndarray,
    budget: Budget,
    n_classes: int,
    device: str = "cpu",
    batched: bool = True,
    torch_threads: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[FoldOutcome]:
    """Train every task's model on its schedule and predict its test person; one FoldOutcome per task.

    A self-contained function of arrays: it runs the same in-process and as a Dask task. `on_step(n)` is
    called as n model-steps finish (progress).
    """
    if not tasks:
        return []
    previous_threads = torch.get_num_threads()
    if torch_threads is not None:
        # Small nets gain nothing from intra-op threads, and on a busy machine 2 spinning threads can be 6×
        # slower than one; restored afterwards so an in-process caller keeps its own setting.
        torch.set_num_threads(torch_threads)
    started = time.perf_counter()
    try:
        target = torch.device(device)
        real_x = np.ascontiguousarray(real_x, np.float32)
        synthetic_x = np.asarray(synthetic_x, np.float32).reshape(-1, *real_x.shape[1:])
        data = torch.from_numpy(np.concatenate([real_x, synthetic_x])).to(target)
        run = _train_batched if batched else _train_one_by_one
        predictions: list[np.ndarray] = [np.zeros(0, np.int64)] * len(tasks)
        losses = np.zeros((len(tasks), budget.steps), np.float32)
        synthetic_used = [0] * len(tasks)
        # Tasks whose batches have the same width train together (in add mode a fold with synthetic clips
        # has wider batches than the baseline's).
        widths = [budget.synthetic_per_batch if len(t.synthetic_rows) else 0 for t in tasks]
        for width in sorted(set(widths)):
            members = [k for k, w in enumerate(widths) if w == width]
            group = [tasks[k] for k in members]
            prepared = _prepare(group, budget, real_x, real_y, n_classes)
            group_predictions, group_losses = run(
                spec, group, data, real_x, prepared, budget, n_classes, target, on_step
            )
            for j, k in enumerate(members):
                predictions[k], losses[k] = group_predictions[j], group_losses[j]
                synthetic_used[k] = prepared.synthetic_used[j]
    finally:
        torch.set_num_threads(previous_threads)
    seconds = (time.perf_counter() - started) / len(tasks)
    tail = max(1, budget.steps // 10)
    return [
        FoldOutcome(
            fold=task.fold,
            seed=task.seed,
            arm=task.arm,
            test_rows=np.asarray(task.test_rows),
            predictions=np.asarray(predictions[k], np.int64),
            n_train_real=len(task.train_rows),
            n_train_synthetic=len(task.synthetic_rows),
            synthetic_ids=tuple(task.synthetic_ids),
            steps=budget.steps,
            batch=budget.batch,
            synthetic_per_batch=synthetic_used[k],
            real_per_batch=budget.real_per_batch(synthetic_used[k]),
            final_loss=float(losses[k, -tail:].mean()),
            seconds=seconds,
        )
        for k, task in enumerate(tasks)
    ]


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtype, shape and bytes: a training set's identity for the model cache."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def model_cache_key(
    spec: RecognizerSpec, budget: Budget, task: ModelTask, real_digest: str, synthetic_x: np.ndarray
) -> str:
    """Everything that decides a model's predictions: schedule, budget, arm, fold, seed and the exact data
    (the real samples' digest, which rows it trains and tests on, its synthetic samples and their labels).
    """
    head = json.dumps([asdict(spec), asdict(budget), task.arm, task.fold, int(task.seed), real_digest])
    rows = np.asarray(task.synthetic_rows, np.int64)
    data = array_digest(
        np.asarray(task.train_rows, np.int64),
        np.asarray(task.test_rows, np.int64),
        np.asarray(synthetic_x[rows] if len(rows) else np.zeros(0, np.float32)),
        np.asarray(task.synthetic_labels, np.int64),
    )
    return hashlib.sha256((head + data).encode()).hexdigest()[:24]


def save_outcome(path: Path, outcome: FoldOutcome) -> None:
    """Keep a finished model's outcome (atomic), so a rerun after a crash retrains only what is missing."""
    from augmenter.cache import atomic_savez

    meta = {k: v for k, v in asdict(outcome).items() if k not in ("test_rows", "predictions")}
    atomic_savez(
        path, test_rows=outcome.test_rows, predictions=outcome.predictions, meta=np.asarray(json.dumps(meta))
    )


def load_outcome(path: Path) -> FoldOutcome | None:
    """An outcome finished by an earlier run, or None (absent, unreadable or older: it is trained again)."""
    from augmenter.cache import load_npz

    arrays = load_npz(path, ("test_rows", "predictions", "meta"))
    if arrays is None:
        return None
    try:
        meta = json.loads(str(arrays["meta"]))
        meta["synthetic_ids"] = tuple(meta["synthetic_ids"])
        return FoldOutcome(test_rows=arrays["test_rows"], predictions=arrays["predictions"], **meta)
    except (TypeError, KeyError, ValueError):
        return None
