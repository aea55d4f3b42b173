"""worker.results.intervals: the cluster-robust t interval against a literal
transcription of Bell and McCaffrey's CR2 estimator and degrees of freedom (full N x N
hat matrices, scipy's matrix square root), and its coverage on simulated test sets
of 9 unequal volumes (bench/interval_coverage.py), which must stay at or above what
docs/report.md states."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg
from scipy import stats as sps

from worker.results import bootstrap, intervals

ROOT = Path(__file__).resolve().parents[2]


def bench_module():
    spec = importlib.util.spec_from_file_location("interval_coverage", ROOT / "bench" /
                                                  "interval_coverage.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cr2_by_the_book(y: np.ndarray, cluster: np.ndarray) -> tuple[float, float]:
    """(standard error, degrees of freedom) of the mean of y (regression on a constant)
    with CR2 and the Bell-McCaffrey df (Imbens and Kolesar 2016, eq. 9 and section 3),
    written with the full matrices."""
    n = len(y)
    x = np.ones((n, 1))
    bread = np.linalg.inv(x.T @ x)
    hat = x @ bread @ x.T
    residual = y - x @ bread @ x.T @ y
    meat = np.zeros((1, 1))
    g_columns = []
    for g in np.unique(cluster):
        rows = np.flatnonzero(cluster == g)
        adjust = linalg.sqrtm(np.linalg.inv(np.eye(len(rows)) - hat[np.ix_(rows, rows)])).real
        score = x[rows].T @ adjust @ residual[rows]
        meat += np.outer(score, score)
        # G_g = (I - H)[:, g] A_g X_g (X'X)^-1 l, l = 1
        g_columns.append(((np.eye(n) - hat)[:, rows] @ adjust @ x[rows] @ bread)[:, 0])
    variance = (bread @ meat @ bread)[0, 0]
    gg = np.column_stack(g_columns)
    m = gg.T @ gg
    return float(np.sqrt(variance)), float(np.trace(m) ** 2 / np.trace(m @ m))


@pytest.mark.parametrize("sizes", [(3, 5, 12, 2), (4, 4, 4), (10, 1, 7, 2, 9)])
def test_cluster_t_matches_the_book(sizes):
    rng = np.random.default_rng(len(sizes))
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    y = rng.normal(size=len(cluster)) + rng.normal(size=len(sizes))[cluster]
    se, df = cr2_by_the_book(y, cluster)
    got = intervals.cluster_t(y, cluster)
    assert got["se"] == pytest.approx(se, rel=1e-9)
    assert got["df"] == pytest.approx(df, rel=1e-9)
    half = sps.t.ppf(0.975, df) * se
    assert (got["low"], got["high"]) == pytest.approx((y.mean() - half, y.mean() + half))
    # many runs at once give each run's own interval
    both = intervals.cluster_t(np.vstack([y, 2 * y]), cluster)
    assert both["se"] == pytest.approx([se, 2 * se])


def test_p_value_agrees_with_the_interval_and_bounds_cut_it():
    rng = np.random.default_rng(3)
    cluster = np.repeat(np.arange(9), [45, 39, 418, 110, 66, 42, 42, 45, 22])
    for shift in (0.0, 0.05, 0.2):
        d = shift + rng.normal(0, 0.1, 9)[cluster] + rng.normal(0, 0.1, len(cluster))
        r = intervals.cluster_t(d, cluster)
        p = intervals.cluster_t_p(d, cluster)
        assert (p < 0.05) == (not r["low"] <= 0 <= r["high"])
    cut = intervals.cluster_t(np.r_[np.ones(5), np.zeros(5)] * 100, np.repeat([0, 1], 5),
                              bounds=(0, 100))  # fmt: skip
    assert cut["low"] == 0 and cut["high"] == 100  # 1 df: t = 12.7, cut to Dice's range


def test_one_volume_takes_slices_as_independent_and_says_so():
    x = np.linspace(0, 1, 30)
    r = intervals.mean_interval(x, np.zeros(30))
    assert r["resampled"] == bootstrap.ONE_VOLUME and r["method"] == "cluster-t"
    lo, hi = sps.t.interval(0.95, 29, loc=x.mean(), scale=sps.sem(x))
    assert (r["low"], r["high"]) == pytest.approx((lo, hi))
    assert "approximate" in r["interval"]
    with pytest.raises(ValueError, match="Unknown interval method 'bca'"):
        intervals.mean_interval(x, np.zeros(30), method="bca")


def stated_coverage() -> float:
    """The default interval's coverage that docs/report.md promises."""
    text = (ROOT / "docs" / "report.md").read_text()
    found = re.search(r"covers the true mean in at least (\d+) %", text)
    assert found, "docs/report.md must state the default interval's coverage"
    return int(found.group(1)) / 100


def test_the_default_interval_keeps_its_stated_coverage_with_9_unequal_volumes():
    """1000 simulated test sets per scenario, fixed seed (a few seconds)."""
    bench = bench_module()
    floor = stated_coverage()
    for scenario in ("patients differ", "hardly differ", "bounded (Beta)"):
        rng = np.random.default_rng(5)
        hits = 0
        for _ in range(1000):
            values, volumes = bench.SCENARIOS[scenario](rng)
            r = intervals.cluster_t(values, volumes)
            hits += r["low"] <= bench.TRUTH <= r["high"]
        assert hits / 1000 >= floor, (scenario, hits / 1000)
