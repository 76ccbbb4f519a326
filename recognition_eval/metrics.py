"""Scores of the MEGC protocol (UF1 and UAR pooled over every fold) and the statistics of a gain.

Pooled means one confusion matrix over the concatenated predictions of all folds (MEGC2019), not the mean of
per-fold scores: a fold with one test sample would otherwise weigh as much as a fold with thirty.

A gain (arm − baseline) is tested with the PERSON as the unit: clips of one person are not independent, and
training seeds vary too. `two_level_bootstrap` resamples test persons (clusters) and seeds, paired;
`permutation_p_values` swaps the two arms' predictions within persons (the sign flip of per-person
differences). `paired_bootstrap_gain` (clips as the unit) is kept for comparison only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    """Percentile CI of (augmented − baseline) pooled UF1/UAR, resampling test CLIPS with replacement.

    Clips of one person are not independent, so this interval is too narrow for a LOSO gain; the report uses
    `two_level_bootstrap`. Kept to show the difference (tests compare the two).

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


def cluster_confusions(
    y_true: Sequence[int], predictions: np.ndarray, clusters: Sequence[str] | np.ndarray, n_classes: int
) -> tuple[np.ndarray, list[str]]:
    """(S, P, C·C) confusion counts of each seed's predictions within each cluster (person), and the names.

    Pooled scores of any set of persons (with repeats) are sums of these rows, which makes the bootstrap and
    the permutation test below matrix products instead of loops.
    """
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    names, code = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    cells = n_classes * n_classes
    seeds = pred.shape[0]
    block = np.arange(seeds)[:, None] * len(names) + code[None, :]
    index = block * cells + true[None, :] * n_classes + pred
    counts = np.bincount(index.ravel(), minlength=seeds * len(names) * cells)
    return counts.reshape(seeds, len(names), cells).astype(np.float64), [str(n) for n in names]


def _scores_of_counts(counts: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """UF1/UAR of confusion counts with any leading shape (..., C·C)."""
    shape = counts.shape[:-1]
    flat = counts.reshape(-1, n_classes, n_classes)
    scores = _scores_from_confusions(flat)
    return {key: value.reshape(shape) for key, value in scores.items()}


@dataclass(frozen=True)
class GainTest:
    """Arm − baseline on pooled UF1/UAR: gains (mean and per seed), percentile CIs, permutation p-values."""

    gain_uf1: float
    gain_uar: float
    ci_uf1: tuple[float, float]
    ci_uar: tuple[float, float]
    p_uf1: float
    p_uar: float
    per_seed_gain_uf1: tuple[float, ...]
    per_seed_gain_uar: tuple[float, ...]
    resampled: str
    n_clusters: int
    n_resamples: int
    n_permutations: int
    exact_permutation: bool


def two_level_bootstrap(
    y_true: Sequence[int],
    pred_baseline: np.ndarray,
    pred_arm: np.ndarray,
    clusters: Sequence[str] | np.ndarray,
    n_classes: int,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    resample_seeds: bool = True,
) -> dict[str, tuple[float, float]]:
    """Percentile CI of the seed-mean gain of pooled UF1/UAR, resampling clusters and training seeds.

    Level 1: the test persons are drawn with replacement (a person's clips stay together: they are not
    independent). Level 2: the training seeds are drawn with replacement. Paired: one draw scores both arms on
    the same persons and seeds, so what they share cancels. Pass clusters = one id per clip to get the naive
    clip bootstrap for comparison; resample_seeds=False keeps every seed.
    """
    base_counts, _ = cluster_confusions(y_true, pred_baseline, clusters, n_classes)
    arm_counts, _ = cluster_confusions(y_true, pred_arm, clusters, n_classes)
    if base_counts.shape != arm_counts.shape:
        raise ValueError(f"prediction shapes differ: {np.shape(pred_baseline)} vs {np.shape(pred_arm)}")
    n_seeds, n_clusters, _ = base_counts.shape
    if n_clusters == 0:
        return {"uf1": (float("nan"), float("nan")), "uar": (float("nan"), float("nan"))}
    rng = np.random.default_rng(seed)
    person_weights = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_resamples)
    if resample_seeds:
        seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_resamples)
    else:
        seed_weights = np.ones((n_resamples, n_seeds), dtype=np.int64)
    person_weights = person_weights.astype(np.float64)
    scores = {}
    for name, counts in (("base", base_counts), ("arm", arm_counts)):
        pooled = np.einsum("bp,spk->bsk", person_weights, counts)
        scores[name] = _scores_of_counts(pooled, n_classes)
    tail = (1.0 - level) / 2.0 * 100.0
    result = {}
    for key in ("uf1", "uar"):
        difference = scores["arm"][key] - scores["base"][key]  # (B, S)
        gains = (seed_weights * difference).sum(axis=1) / n_seeds
        result[key] = (float(np.nanpercentile(gains, tail)), float(np.nanpercentile(gains, 100.0 - tail)))
    return result


def permutation_p_values(
    y_true: Sequence[int],
    pred_baseline: np.ndarray,
    pred_arm: np.ndarray,
    clusters: Sequence[str] | np.ndarray,
    n_classes: int,
    n_permutations: int = 10000,
    seed: int = 0,
) -> tuple[dict[str, float], int, bool]:
    """Two-sided paired permutation p-values of the seed-mean gain, swapping the arms within persons.

    Under "the arm makes no difference" the two arms' predictions of one person are exchangeable; swapping
    them for a subset of persons (all seeds together) is the sign flip of that person's difference. Every
    subset is enumerated when there are at most n_permutations of them (exact test), else a seeded random
    sample with the identity included. Returns ({"uf1", "uar"}, number of permutations, exact).
    """
    base_counts, _ = cluster_confusions(y_true, pred_baseline, clusters, n_classes)
    arm_counts, _ = cluster_confusions(y_true, pred_arm, clusters, n_classes)
    n_clusters = base_counts.shape[1]
    exact = n_clusters <= 20 and 2**n_clusters <= n_permutations
    if exact:
        codes = np.arange(2**n_clusters, dtype=np.int64)
        flips = ((codes[:, None] >> np.arange(n_clusters)[None, :]) & 1).astype(np.float64)
    else:
        rng = np.random.default_rng(seed)
        flips = rng.integers(0, 2, size=(n_permutations, n_clusters)).astype(np.float64)
        flips[0] = 0.0
    delta = base_counts - arm_counts  # (S, P, K): what a flip moves from the arm to the baseline
    arm_total, base_total = arm_counts.sum(axis=1), base_counts.sum(axis=1)  # (S, K)
    moved = np.einsum("fp,spk->fsk", flips, delta)
    arm_scores = _scores_of_counts(arm_total[None] + moved, n_classes)
    base_scores = _scores_of_counts(base_total[None] - moved, n_classes)
    observed_arm = _scores_of_counts(arm_total, n_classes)
    observed_base = _scores_of_counts(base_total, n_classes)
    result = {}
    for key in ("uf1", "uar"):
        observed = float(np.mean(observed_arm[key] - observed_base[key]))
        null = np.mean(arm_scores[key] - base_scores[key], axis=1)
        result[key] = float(np.mean(np.abs(null) >= abs(observed) - 1e-12))
    return result, len(flips), exact


def gain_test(
    y_true: Sequence[int],
    pred_baseline: np.ndarray,
    pred_arm: np.ndarray,
    clusters: Sequence[str] | np.ndarray,
    n_classes: int,
    n_resamples: int = 2000,
    n_permutations: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> GainTest:
    """What a report says about one arm against the baseline (persons × seeds; see the two functions)."""
    base = np.atleast_2d(np.asarray(pred_baseline, dtype=np.int64))
    arm = np.atleast_2d(np.asarray(pred_arm, dtype=np.int64))
    true = np.asarray(y_true, dtype=np.int64)
    per_seed = [
        (pooled_scores(true, a, n_classes), pooled_scores(true, b, n_classes))
        for a, b in zip(arm, base, strict=True)
    ]
    gains_uf1 = tuple(float(a["uf1"] - b["uf1"]) for a, b in per_seed)
    gains_uar = tuple(float(a["uar"] - b["uar"]) for a, b in per_seed)
    ci = two_level_bootstrap(true, base, arm, clusters, n_classes, n_resamples, seed, level)
    p, n_flips, exact = permutation_p_values(true, base, arm, clusters, n_classes, n_permutations, seed)
    return GainTest(
        gain_uf1=float(np.mean(gains_uf1)),
        gain_uar=float(np.mean(gains_uar)),
        ci_uf1=ci["uf1"],
        ci_uar=ci["uar"],
        p_uf1=p["uf1"],
        p_uar=p["uar"],
        per_seed_gain_uf1=gains_uf1,
        per_seed_gain_uar=gains_uar,
        resampled="persons x seeds" if len(base) > 1 else "persons",
        n_clusters=len(set(np.asarray(clusters).astype(str).tolist())),
        n_resamples=n_resamples,
        n_permutations=n_flips,
        exact_permutation=exact,
    )


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of the p-values of one family of tests (the arms of one evaluation).

    Sorted ascending, the k-th smallest (0-based) becomes max over j ≤ k of min(1, (m − j) · p_(j)), so
    every adjusted p is ≥ its raw p and the family-wise error rate stays at the level without assuming the
    tests are independent (they are not: every arm shares the baseline).
    """
    values = np.asarray(list(p_values), dtype=np.float64)
    m = len(values)
    adjusted = np.empty(m, dtype=np.float64)
    running = 0.0
    for rank, index in enumerate(np.argsort(values, kind="stable")):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()
