"""Scores of the MEGC protocol: UF1 and UAR pooled over every LOSO fold, and a paired bootstrap for gains.

Pooled means one confusion matrix over the concatenated predictions of all folds (MEGC2019), not the mean of
per-fold scores: a fold with one test sample would otherwise weigh as much as a fold with thirty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score


def _as_arrays(y_true: Sequence[int], y_pred: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.shape} vs {pred.shape}")
    return true, pred


def uf1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted F1: mean over classes of F1 from TP/FP/FN summed over all samples given."""
    true, pred = _as_arrays(y_true, y_pred)
    return float(f1_score(true, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def uar(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted average recall: mean per-class recall (classes absent from y_true left out, as MEGC)."""
    true, pred = _as_arrays(y_true, y_pred)
    present = sorted(set(true.tolist()))
    if not present:
        return float("nan")
    return float(recall_score(true, pred, labels=present, average="macro", zero_division=0))


def pooled_scores(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, float]:
    """{"uf1", "uar"} of the concatenated predictions of all folds."""
    return {"uf1": uf1(y_true, y_pred, n_classes), "uar": uar(y_true, y_pred, n_classes)}


def per_fold_average(
    y_true: Sequence[int], y_pred: Sequence[int], folds: Sequence[str], n_classes: int
) -> dict[str, float]:
    """The mean of per-fold scores: NOT the protocol, kept to show how far it is from the pooled value."""
    true, pred = _as_arrays(y_true, y_pred)
    fold_array = np.asarray(folds)
    scores = [
        pooled_scores(true[fold_array == f], pred[fold_array == f], n_classes) for f in np.unique(fold_array)
    ]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("uf1", "uar")}


def per_class_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[float]:
    """F1 of each class (pooled), in class-index order."""
    true, pred = _as_arrays(y_true, y_pred)
    values = f1_score(true, pred, labels=list(range(n_classes)), average=None, zero_division=0)
    return [float(v) for v in values]


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows = ground truth, columns = prediction."""
    true, pred = _as_arrays(y_true, y_pred)
    return confusion_matrix(true, pred, labels=list(range(n_classes)))


def _scores_from_confusions(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised UF1/UAR of a stack of (B, C, C) confusion matrices, same definitions as sklearn's above."""
    tp = np.diagonal(matrices, axis1=1, axis2=2).astype(np.float64)
    support = matrices.sum(axis=2).astype(np.float64)  # ground-truth count per class
    predicted = matrices.sum(axis=1).astype(np.float64)
    denominator = support + predicted
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    present = support > 0
    uar_values = np.where(
        present.any(axis=1), (recall * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1), np.nan
    )
    return {"uf1": f1.mean(axis=1), "uar": uar_values}


def paired_bootstrap_gain(
    y_true: Sequence[int],
    pred_baseline: np.ndarray | Sequence[int],
    pred_augmented: np.ndarray | Sequence[int],
    n_classes: int,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile CI of (augmented − baseline) pooled UF1/UAR, resampling test samples with replacement.

    Paired: the same resampled samples score both runs, so the difficulty they share cancels out. Predictions
    may be (N,) or (S, N) for S training seeds: a resample then scores every seed's pooled prediction on the
    same samples and averages over seeds (the headline number is the seed mean too). Confusion matrices are
    built with bincount so 2000 resamples take milliseconds (tests check the formulas against scikit-learn).
    """
    true = np.asarray(y_true, dtype=np.int64)
    base = np.atleast_2d(np.asarray(pred_baseline, dtype=np.int64))
    aug = np.atleast_2d(np.asarray(pred_augmented, dtype=np.int64))
    if base.shape != aug.shape or base.shape[1] != len(true):
        raise ValueError(f"prediction shapes {base.shape} / {aug.shape} do not match {len(true)} samples")
    if len(true) == 0:
        return {"uf1": (float("nan"), float("nan")), "uar": (float("nan"), float("nan"))}
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(true), size=(n_resamples, len(true)))
    offsets = (np.arange(n_resamples) * n_classes * n_classes)[:, None]
    true_cells = true[index] * n_classes + offsets

    def seed_mean_scores(predictions: np.ndarray) -> dict[str, np.ndarray]:
        per_seed = []
        for pred in predictions:
            cells = true_cells + pred[index]
            counts = np.bincount(cells.ravel(), minlength=n_resamples * n_classes * n_classes)
            per_seed.append(_scores_from_confusions(counts.reshape(n_resamples, n_classes, n_classes)))
        return {key: np.mean([s[key] for s in per_seed], axis=0) for key in ("uf1", "uar")}

    score_base, score_aug = seed_mean_scores(base), seed_mean_scores(aug)
    tail = (1.0 - level) / 2.0 * 100.0
    result = {}
    for key in ("uf1", "uar"):
        gains = score_aug[key] - score_base[key]
        result[key] = (float(np.nanpercentile(gains, tail)), float(np.nanpercentile(gains, 100.0 - tail)))
    return result
