"""worker.results.bootstrap and worker.results.ranking against independent answers:
coverage on simulated clustered data, scipy (friedmanchisquare, kendalltau),
scikit-posthocs (Nemenyi) and Demšar's (2006) tables."""

from __future__ import annotations

import numpy as np
import pytest
import scikit_posthocs as sp
from scipy import stats as sps

from worker.results import bootstrap, intervals, ranking


def clustered(rng, volumes=12, slices=20, mean=0.7, between=0.1, within=0.1):
    """Per-slice scores of volumes with a random effect each: the true mean is `mean`."""
    effect = rng.normal(0, between, volumes)
    values = mean + np.repeat(effect, slices) + rng.normal(0, within, volumes * slices)
    return values, np.repeat(np.arange(volumes), slices)


def coverage(level: str, simulations: int = 200) -> float:
    rng = np.random.default_rng(7)
    hits = 0
    for s in range(simulations):
        values, volumes = clustered(rng)
        ci = bootstrap.hierarchical_ci(values, volumes, level=level, n_resamples=400, seed=s)
        hits += ci["low"] <= 0.7 <= ci["high"]
    return hits / simulations


def test_hierarchical_intervals_cover_the_true_mean_and_per_slice_ones_do_not():
    # Slices of a volume share its random effect: treating 240 slices as independent
    # gives intervals about a third as wide as they should be.
    assert 0.88 <= coverage("volumes+slices") <= 0.99
    assert coverage("slices") < 0.7


def test_one_volume_falls_back_to_slices_and_says_so():
    values = np.linspace(0, 1, 30)
    ci = bootstrap.hierarchical_ci(values, np.zeros(30), n_resamples=300)
    assert ci["resampled"] == bootstrap.ONE_VOLUME
    assert ci["low"] < values.mean() < ci["high"]
    two = bootstrap.hierarchical_ci(values, np.repeat([0, 1], 15), n_resamples=300)
    assert two["resampled"] == "volumes+slices"


def test_weights_draw_as_many_slices_as_the_test_set_on_average():
    volumes = np.repeat([0, 1, 2], [5, 10, 20])
    r = bootstrap.resample_weights(volumes, n_resamples=3000, seed=1)
    # each replicate draws 3 volumes; a volume's copies each draw all its slices
    assert np.all(r.weights.sum(1) % 5 == 0)
    assert r.weights.sum(1).mean() == pytest.approx(35, rel=0.03)
    whole = bootstrap.resample_weights(volumes, level="volumes", n_resamples=50)
    assert set(np.unique(whole.weights)) <= {0, 1, 2, 3}
    slices = bootstrap.resample_weights(volumes, level="slices", n_resamples=50)
    assert np.all(slices.weights.sum(1) == 35)


def test_slice_level_matches_the_plain_percentile_bootstrap_of_scipy():
    x = np.random.default_rng(2).normal(0.8, 0.1, size=200)
    ci = bootstrap.hierarchical_ci(x, np.arange(200), level="slices", n_resamples=4000)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=0)
    assert ci["low"] == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert ci["high"] == pytest.approx(ref.confidence_interval.high, abs=0.004)


def test_paired_difference_uses_one_resample_for_both_runs():
    rng = np.random.default_rng(3)
    a, volumes = clustered(rng)
    b = a - 0.02  # b is worse by exactly 0.02 on every slice
    out = bootstrap.paired_difference(a, b, volumes, n_resamples=500)
    # paired: the interval of a constant difference is that constant
    assert out["low"] == pytest.approx(0.02) and out["high"] == pytest.approx(0.02)
    assert out["p_bootstrap"] == 0.0
    same = bootstrap.paired_difference(a, a, volumes, n_resamples=100)
    assert same["p_bootstrap"] == 1.0 and same["difference"] == 0.0


def test_rank_stability_is_certain_for_separated_runs_and_uncertain_for_close_ones():
    rng = np.random.default_rng(4)
    base, volumes = clustered(rng)
    values = np.stack([base + 0.2, base + 0.001 * rng.normal(size=base.size), base - 0.2])
    values[1] += rng.normal(0, 0.05, base.size)
    values = np.vstack([values, base + rng.normal(0, 0.05, base.size)])  # run 3 ~ run 1
    r = bootstrap.resample_weights(volumes, n_resamples=500)
    out = ranking.rank_stability(values, r)
    assert out["median_rank"][0] == 1 and out["low"][0] == 1 and out["high"][0] == 1
    assert out["median_rank"][2] == 4
    assert out["low"][1] <= 2 and out["high"][1] >= 3  # runs 1 and 3 swap places
    shares = ranking.rank_frequencies(out["replicates"])
    assert sum(s["share"] for s in shares if s["run"] == 1) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_kendall_tau_matches_scipy_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6 if seed % 2 else 1000, 40).astype(float)
    y = x + rng.normal(0, 3, 40)
    if seed % 2:
        y = np.round(y)
    assert ranking.kendall_tau(x, y) == pytest.approx(sps.kendalltau(x, y).statistic)
    assert np.isnan(ranking.kendall_tau([1.0, 1.0], [1.0, 2.0]))


@pytest.mark.parametrize("seed", range(3))
def test_friedman_matches_scipy_friedmanchisquare(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 1, (24, 5)) + np.arange(5) * 0.3
    if seed == 2:
        scores = np.round(scores)  # ties within blocks: scipy's tie correction
    ours = ranking.friedman(scores)
    ref = sps.friedmanchisquare(*scores.T)
    assert ours["statistic"] == pytest.approx(ref.statistic)
    assert ours["p_value"] == pytest.approx(ref.pvalue)


def test_nemenyi_matches_scikit_posthocs():
    rng = np.random.default_rng(5)
    scores = rng.normal(0, 1, (24, 4)) + np.array([0.0, 0.2, 0.9, 1.0])
    fr = ranking.friedman(scores)
    ours = ranking.nemenyi_p(fr["mean_ranks"], len(scores))
    ref = sp.posthoc_nemenyi_friedman(scores).to_numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_critical_difference_by_demsar():
    # Demšar (2006) Table 5(a), alpha 0.05: q = 1.960 (k=2), 2.343 (3), 2.569 (4),
    # 2.728 (5), 2.949 (7), 3.164 (10); his worked example: k = 4 classifiers on N = 14 data sets
    # give CD = 2.569 sqrt(4 * 5 / (6 * 14)) = 1.25.
    for k, q in {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 7: 2.949, 10: 3.164}.items():
        assert ranking.nemenyi_q(k) == pytest.approx(q, abs=1e-3)
    assert ranking.critical_difference(4, 14) == pytest.approx(1.25, abs=0.005)


def test_cd_analysis_groups_treatments_within_the_cd():
    rng = np.random.default_rng(6)
    scores = rng.normal(0, 0.2, (30, 4)) + np.array([3.0, 2.0, 1.95, 0.0])
    out = ranking.cd_analysis(scores, ["a", "b", "c", "d"])
    assert [m["name"] for m in out["mean_ranks"]] == ["a", "b", "c", "d"] or [
        m["name"] for m in out["mean_ranks"]
    ] == ["a", "c", "b", "d"]
    assert out["mean_ranks"][0]["mean_rank"] == 1.0
    assert {"b", "c"} <= set(next(g for g in out["cliques"] if "b" in g))
    assert not any({"a", "d"} <= set(g) for g in out["cliques"])
    assert out["friedman"]["p_value"] < 1e-6
    assert out["nemenyi_p"]["a"]["d"] < 0.01


def test_holm_matches_statsmodels_multipletests():
    from statsmodels.stats.multitest import multipletests

    from worker.results.stats import holm

    p = np.random.default_rng(8).uniform(0, 0.2, 30)
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])


def test_compare_counts_uses_the_cluster_t_or_the_hierarchical_bootstrap():
    from worker.results.stats import compare_counts

    rng = np.random.default_rng(9)
    n = 60
    tp = rng.integers(1, 50, n)
    a = np.stack([tp, rng.integers(0, 10, n), rng.integers(0, 10, n), 1000 - tp], 1)
    b = a.copy()
    b[:, 1] += 5
    volumes = np.repeat([0, 1, 2], 20)
    out = compare_counts(a, b, volumes, n_resamples=300, method="percentile")
    assert out["resampled"] == "volumes+slices"
    assert out["a"]["dice"]["resampled"] == "volumes+slices"
    da = 100 * (2 * a[:, 0] / (2 * a[:, 0] + a[:, 1] + a[:, 2]))
    db = 100 * (2 * b[:, 0] / (2 * b[:, 0] + b[:, 1] + b[:, 2]))
    ref = bootstrap.paired_difference(da, db, volumes, n_resamples=300)
    assert out["difference"]["low"] == pytest.approx(ref["low"])
    assert out["difference"]["p_bootstrap"] == ref["p_bootstrap"]
    assert out["wilcoxon"]["assumes"] == "independent slices"
    default = compare_counts(a, b, volumes, n_resamples=300)
    t = intervals.cluster_t(da - db, volumes, bounds=(-100, 100))
    assert (default["difference"]["low"], default["difference"]["high"]) == pytest.approx(
        (float(t["low"]), float(t["high"]))
    )
    assert "cluster-robust t" in default["interval"] and "approximate" in default["interval"]


def test_iman_davenport_with_blocks_that_all_agree_is_their_exact_probability():
    """2 blocks ranking 4 treatments alike: F is infinite, and p is not 0 but the share
    of the 4! rankings of the second block that agree as much, counted by brute force
    over every permutation (1/24)."""
    import itertools

    first = np.array([0.9, 0.8, 0.7, 0.6])
    out = ranking.friedman(np.vstack([first, first - 0.1]))
    assert out["iman_davenport"] == float("inf")
    observed = out["statistic"]
    as_high = sum(
        ranking.friedman(np.vstack([first, first[list(p)]]))["statistic"] >= observed - 1e-12
        for p in itertools.permutations(range(4))
    )
    assert out["p_iman_davenport"] == pytest.approx(as_high / 24) == pytest.approx(1 / 24)
    three = ranking.friedman(np.vstack([first, first - 0.1, first[[1, 0, 2, 3]]]))
    assert 0 < three["p_iman_davenport"] < 1 and np.isfinite(three["iman_davenport"])
