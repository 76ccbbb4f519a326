"""MEGC scores: pooled UF1/UAR equal scikit-learn's, differ from per-fold means; the bootstrap is paired."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from recognition_eval.metrics import (
    _scores_from_confusions,
    confusion,
    paired_bootstrap_gain,
    per_class_f1,
    per_fold_average,
    pooled_scores,
    uar,
    uf1,
)

# Hand-made LOSO outcome: 3 folds, unbalanced sizes (5, 2, 3), 3 classes.
Y_TRUE = np.array([0, 0, 0, 1, 2, 1, 1, 2, 2, 0])
Y_PRED = np.array([0, 0, 1, 1, 2, 0, 1, 2, 0, 0])
FOLDS = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 3)


def test_pooled_scores_equal_scikit_learn_on_hand_made_predictions() -> None:
    scores = pooled_scores(Y_TRUE, Y_PRED, 3)
    assert scores["uf1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert scores["uar"] == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))
    # By hand: class 0 TP=3 FP=2 FN=1 → F1 = 6/9; class 1 TP=2 FP=1 FN=1 → 4/6; class 2 TP=2 FP=0 FN=1 → 4/5.
    assert scores["uf1"] == pytest.approx((6 / 9 + 4 / 6 + 4 / 5) / 3)
    assert scores["uar"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert per_class_f1(Y_TRUE, Y_PRED, 3) == pytest.approx([6 / 9, 4 / 6, 4 / 5])
    assert confusion(Y_TRUE, Y_PRED, 3).tolist() == [[3, 1, 0], [1, 2, 0], [1, 0, 2]]


def test_a_class_never_predicted_counts_as_f1_zero_and_absent_classes_leave_uar() -> None:
    true, pred = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])
    assert uf1(true, pred, 3) == pytest.approx(
        f1_score(true, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    )
    assert uar(true, pred, 3) == pytest.approx(recall_score(true, pred, labels=[0, 1], average="macro"))
    assert uar(true, pred, 3) == pytest.approx(0.5)


def test_pooled_differs_from_the_mean_of_per_fold_scores() -> None:
    pooled = pooled_scores(Y_TRUE, Y_PRED, 3)
    averaged = per_fold_average(Y_TRUE, Y_PRED, FOLDS, 3)
    by_hand = np.mean([f1_score(Y_TRUE[FOLDS == f], Y_PRED[FOLDS == f], labels=[0, 1, 2], average="macro",
                                zero_division=0) for f in "abc"])  # fmt: skip
    assert averaged["uf1"] == pytest.approx(by_hand)
    assert abs(pooled["uf1"] - averaged["uf1"]) > 0.05
    assert abs(pooled["uar"] - averaged["uar"]) > 0.01


def test_vectorised_confusion_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        true = rng.integers(0, 3, 25)
        pred = np.where(rng.random(25) < 0.6, true, rng.integers(0, 3, 25))
        scores = _scores_from_confusions(confusion(true, pred, 3)[None])
        assert scores["uf1"][0] == pytest.approx(uf1(true, pred, 3))
        assert scores["uar"][0] == pytest.approx(uar(true, pred, 3))


def test_paired_bootstrap_is_zero_for_identical_runs_and_positive_for_a_clear_gain() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 60)
    noisy = np.where(rng.random(60) < 0.4, true, (true + 1) % 3)
    ci = paired_bootstrap_gain(true, noisy, noisy, 3, n_resamples=500)
    assert ci == {"uf1": (0.0, 0.0), "uar": (0.0, 0.0)}
    ci = paired_bootstrap_gain(true, noisy, true, 3, n_resamples=500)
    assert 0 < ci["uf1"][0] < ci["uf1"][1] and 0 < ci["uar"][0] < ci["uar"][1]
    # Two seeds: the CI of the seed-mean gain; a seed that equals the baseline halves the gain.
    both = paired_bootstrap_gain(true, np.stack([noisy, noisy]), np.stack([true, noisy]), 3, n_resamples=500)
    assert both["uf1"][1] == pytest.approx(ci["uf1"][1] / 2, rel=0.2)
