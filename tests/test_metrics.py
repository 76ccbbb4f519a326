"""MEGC scores equal scikit-learn's; gain statistics over persons × seeds on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from recognition_eval.metrics import (
    _scores_from_confusions,
    cluster_confusions,
    confusion,
    gain_test,
    paired_bootstrap_gain,
    per_class_f1,
    per_fold_average,
    permutation_p_values,
    pooled_scores,
    two_level_bootstrap,
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


def _persons(n_persons: int, clips: int) -> tuple[np.ndarray, np.ndarray]:
    """Person ids and labels (every class in every person) of a balanced made-up test set."""
    return np.repeat(np.arange(n_persons), clips), np.tile(np.arange(clips) % 3, n_persons)


def test_cluster_confusions_sum_to_each_seeds_pooled_confusion() -> None:
    rng = np.random.default_rng(1)
    persons, true = _persons(5, 7)
    pred = rng.integers(0, 3, (2, len(true)))
    counts, names = cluster_confusions(true, pred, persons, 3)
    assert counts.shape == (2, 5, 9) and names == [str(p) for p in range(5)]
    for s in range(2):
        assert counts[s].sum(axis=0).reshape(3, 3).tolist() == confusion(true, pred[s], 3).tolist()
        assert (
            counts[s, 2].reshape(3, 3).tolist()
            == confusion(true[persons == 2], pred[s][persons == 2], 3).tolist()
        )


def test_identical_arms_give_a_zero_gain_a_ci_on_zero_and_p_one() -> None:
    rng = np.random.default_rng(0)
    persons, true = _persons(6, 9)
    noisy = np.where(rng.random((3, len(true))) < 0.6, true, (true + 1) % 3)
    test = gain_test(true, noisy, noisy, persons, 3, n_resamples=400)
    assert test.gain_uf1 == 0.0 and test.ci_uf1 == (0.0, 0.0) and test.ci_uar == (0.0, 0.0)
    assert test.p_uf1 == 1.0 and test.exact_permutation and test.n_permutations == 2**6
    assert test.resampled == "persons x seeds" and test.per_seed_gain_uf1 == (0.0, 0.0, 0.0)


def test_exact_sign_flip_p_value_when_every_person_improves() -> None:
    # 8 persons, each alike: the arm is right on every clip, the baseline wrong on 4 of 10. Only "no flip" and
    # "flip all" reach the observed |gain|, so the exact two-sided p is 2 / 2^8.
    persons, true = _persons(8, 10)
    base = np.where(np.tile(np.arange(10), 8) < 6, true, (true + 1) % 3)
    p, n, exact = permutation_p_values(true, base[None], true[None], persons, 3)
    assert exact and n == 256 and p["uf1"] == pytest.approx(2 / 256) and p["uar"] == pytest.approx(2 / 256)
    # More persons than the exact limit: a seeded random sample of flips, identity included.
    persons, true = _persons(14, 6)
    base = np.where(np.tile(np.arange(6), 14) < 3, true, (true + 1) % 3)
    p, n, exact = permutation_p_values(true, base[None], true[None], persons, 3, n_permutations=2000)
    assert not exact and n == 2000 and 1 / 2000 <= p["uf1"] < 0.01


def test_clustered_effects_widen_the_interval_against_clip_resampling() -> None:
    # 12 persons × 15 clips; the arm fixes every clip of half the persons and breaks every clip of the others:
    # the effect lives at the person level. Treating clips as independent claims a precision the data lack.
    persons, true = _persons(12, 15)
    helped = persons % 2 == 0
    base = np.where(helped, (true + 1) % 3, true)
    arm = np.where(helped, true, (true + 1) % 3)
    by_person = two_level_bootstrap(true, base, arm, persons, 3, n_resamples=1000)
    by_clip = two_level_bootstrap(true, base, arm, np.arange(len(true)), 3, n_resamples=1000)
    width = {k: (v["uf1"][1] - v["uf1"][0]) for k, v in (("person", by_person), ("clip", by_clip))}
    assert by_person["uf1"][0] < 0 < by_person["uf1"][1]
    # Persons are 15 clips each: the cluster interval is about sqrt(15) ≈ 3.9 times the clip one.
    assert 2.5 < width["person"] / width["clip"] < 6.0


def test_resampling_seeds_widens_the_interval_when_seeds_disagree() -> None:
    persons, true = _persons(10, 9)
    wrong = (true + 1) % 3
    base = np.stack([true, true, true])
    arm = np.stack([true, wrong, true])  # one seed of three collapsed: training noise, not persons
    with_seeds = two_level_bootstrap(true, base, arm, persons, 3, n_resamples=1000)
    without = two_level_bootstrap(true, base, arm, persons, 3, n_resamples=1000, resample_seeds=False)
    assert without["uf1"][1] - without["uf1"][0] == pytest.approx(0.0, abs=1e-12)
    assert with_seeds["uf1"][0] == pytest.approx(-1.0) and with_seeds["uf1"][1] == pytest.approx(0.0)


def test_holm_adjustment_matches_the_step_down_by_hand() -> None:
    from recognition_eval.metrics import holm_adjust

    # sorted 0.01·4 = 0.04, 0.03·3 = 0.09, 0.04·2 = 0.08 → kept monotone at 0.09, 0.5·1 = 0.5
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm_adjust([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # capped by monotonicity, not above 1
    assert holm_adjust([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]
    assert holm_adjust([]) == []
