"""worker.results.stats against scipy and hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from worker.results import stats
from worker.training.metrics import summarize


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.6, 0.95, size=80)
    b = a - rng.normal(0.02, 0.05, size=80)
    ours = stats.wilcoxon(a, b)
    ref = sps.wilcoxon(a, b)
    assert ours["p_value"] == ref.pvalue
    assert ours["statistic"] == ref.statistic
    assert ours["n"] == 80


def test_wilcoxon_small_sample_with_zero_differences_matches_scipy():
    a = np.array([0.9, 0.8, 0.7, 1.0, 0.5, 0.65, 0.3])
    b = np.array([0.85, 0.8, 0.6, 1.0, 0.45, 0.7, 0.1])
    assert stats.wilcoxon(a, b)["p_value"] == sps.wilcoxon(a, b).pvalue
    assert stats.wilcoxon(a, b)["n"] == 5


def test_wilcoxon_identical_samples_give_p_one():
    a = np.array([0.5, 0.7, 1.0])
    assert stats.wilcoxon(a, a.copy()) == {"statistic": 0.0, "p_value": 1.0, "n": 0}


def test_wilcoxon_rejects_unpaired():
    with pytest.raises(ValueError, match="differ in length"):
        stats.wilcoxon([1.0, 2.0], [1.0])


def test_holm_hand_computed():
    # sorted: .005 x4 = .02, .01 x3 = .03, .03 x2 = .06, .04 x1 = .04 -> running max .06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_ties():
    np.testing.assert_allclose(stats.holm([0.5, 0.5, 0.9]), [1.0, 1.0, 1.0])
    assert stats.holm([]).size == 0
    np.testing.assert_allclose(stats.holm([0.2]), [0.2])


COUNTS = np.array(
    [
        # tp, fp, fn, tn      volume
        [2, 1, 0, 97],  # 0   Dice 4/5
        [0, 0, 1, 99],  # 0   Dice 0
        [0, 0, 0, 100],  # 1  empty truth, empty prediction: 1 in both modes
        [0, 3, 0, 97],  # 2   empty truth, false positives: standard 0, authors 1
    ]
)
VOLUMES = [0, 0, 1, 2]


def test_volume_dice_by_hand():
    # volume 0: TP 2, FP 1, FN 1 -> 4 / 6; volume 1: nothing -> 1; volume 2: FP only -> 0
    assert stats.volume_dice(COUNTS, VOLUMES) == pytest.approx({0: 4 / 6, 1: 1.0, 2: 0.0})


def test_pooled_and_positive_dice_by_hand():
    assert stats.pooled_dice(COUNTS) == pytest.approx(4 / 9)  # TP 2, FP 4, FN 1
    assert stats.positive_dice(COUNTS) == pytest.approx((0.8 + 0.0) / 2)
    assert np.isnan(stats.positive_dice(COUNTS[2:]))
    assert stats.pooled_dice(COUNTS[2:3]) == 1.0


def test_mode_summaries_show_empty_truth_inflation():
    m = stats.mode_summaries(COUNTS)
    assert m["standard"]["dice"] == pytest.approx(100 * (0.8 + 0 + 1 + 0) / 4)
    assert m["authors-2020"]["dice"] == pytest.approx(100 * (0.8 + 0 + 1 + 1) / 4, abs=1e-3)
    assert m["inflation"]["dice"] == pytest.approx(25.0, abs=1e-3)
    assert m["empty_truth"] == {"slices": 2, "with_false_positives": 1, "total_slices": 4}
    for mode in ("standard", "authors-2020"):
        assert m[mode]["dice"] == summarize(COUNTS, mode)["dice"]
    assert m["standard"]["positive_dice"] == pytest.approx(40.0)


def test_compare_counts_pairs_slices():
    rng = np.random.default_rng(5)
    n = 60
    tp = rng.integers(0, 50, n)
    a = np.stack([tp, rng.integers(0, 10, n), rng.integers(0, 10, n), 1000 - tp], 1)
    b = a.copy()
    b[:, 1] += 5  # b predicts more false positives on every slice: worse
    out = stats.compare_counts(a, b, np.repeat([0, 1, 2], 20), n_resamples=500)
    assert out["slices"] == n
    assert out["a"]["dice"]["mean"] > out["b"]["dice"]["mean"]
    assert out["difference"]["low"] > 0
    assert out["wilcoxon"]["p_value"] < 1e-6
    assert set(out["a"]["volume_dice"]) == {0, 1, 2}
    with pytest.raises(ValueError, match="same"):
        stats.compare_counts(a, b[:-1], np.zeros(n))
