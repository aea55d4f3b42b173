"""worker.results.stat_charts: every chart builds a valid Vega-Lite spec (altair
validates against the schema in to_dict) that draws what its docstring says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worker.results import bootstrap, paper, ranking, stat_charts


def spec(chart) -> dict:
    return chart.to_dict()


def layers(s: dict) -> list[dict]:
    return s.get("layer", [s])


def test_interval_blob_and_significance_charts():
    rng = np.random.default_rng(0)
    volumes = np.repeat(np.arange(4), 10)
    x = rng.normal(80, 5, (3, 40)) + np.array([[0], [2], [8]])
    r = bootstrap.resample_weights(volumes, n_resamples=200)
    st = ranking.rank_stability(x, r)
    labels = ["a", "b", "c"]
    ranks = pd.DataFrame({"label": labels, "rank": st["rank"], "median_rank": st["median_rank"],
                          "low": st["low"], "high": st["high"]})  # fmt: skip
    shares = pd.DataFrame(ranking.rank_frequencies(st["replicates"]))
    shares["label"] = shares["run"].map(dict(enumerate(labels)))
    blob = spec(stat_charts.blob_chart(shares, ranks))
    assert [layer["mark"]["type"] for layer in layers(blob)] == ["circle", "rule", "tick"]
    assert blob["layer"][0]["encoding"]["x"]["sort"] == ["c", "b", "a"]  # best first
    runs = pd.DataFrame({"label": labels, "architecture": "unet", "dice": x.mean(1),
                         "low": x.mean(1) - 1, "high": x.mean(1) + 1})  # fmt: skip
    assert spec(stat_charts.interval_chart(runs))["layer"][0]["mark"]["type"] == "rule"
    pairs = pd.DataFrame({"a": ["a", "a", "b"], "b": ["b", "c", "c"], "p_holm": [0.5, 1e-3, 0.02]})
    sig = spec(stat_charts.significance_map(pairs))
    assert sig["layer"][0]["encoding"]["color"]["field"] == "p_holm"


def test_cd_chart_draws_the_cd_bar_and_one_line_per_clique():
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 0.3, (20, 4)) + np.array([2.0, 1.9, 0.0, -0.1])
    cd = ranking.cd_analysis(scores, ["w", "x", "y", "z"])
    s = spec(stat_charts.cd_chart(cd))
    datasets = s["datasets"]
    bar = next(v for v in datasets.values() if v and "label" in v[0])
    assert bar[0]["end"] - bar[0]["mean_rank"] == pytest.approx(cd["cd"])
    cliques = [v for v in datasets.values() if v and set(v[0]) == {"mean_rank", "end", "y"}]
    assert len(cliques[0]) == len(cd["cliques"]) == 2


def test_paper_chart_has_the_papers_twelve_means():
    means = paper.architecture_means()
    assert len(means) == 12
    assert (
        means.set_index(["experiment", "architecture"]).loc[
            ("lung-segmentation", "linknet"), "dice"
        ]
        == 93.96
    )
    frame = pd.concat([means.assign(source="paper"), means.assign(source="this database")])
    s = spec(stat_charts.paper_chart(frame))
    assert s["facet"]["column"]["field"] == "experiment"


def test_metric_tables_show_dashes_coverage_and_the_best_complete_value():
    """worker.results.styles: an en dash for a missing value (never "None" or "nan"),
    "(k/n)" after a mean that covers k of n volumes, which is never marked best."""
    from db import metrics as registry
    from worker.results.styles import BEST_STYLE, metric_styler

    rows = pd.DataFrame(
        {"dice": [90.0, None, 80.0, 85.0], "hd95": [4.0, None, 1.0, 5.0],
         "hd95_volumes": [3, None, 2, 3], "test_volumes": [3, None, 3, 3]}
    )  # fmt: skip
    shown = pd.DataFrame({"Dice (%)": rows["dice"], "HD95 (mm)": rows["hd95"]})
    metrics = (registry.get("dice"), registry.get("hd95"))
    html = metric_styler(shown, rows, metrics).to_html()
    assert "None" not in html and "nan" not in html and html.count("–") == 2
    assert "1.00 (2/3)" in html and "90.00" in html
    styles = metric_styler(shown, rows, metrics)._compute().ctx
    best = BEST_STYLE.split(";")[0].split(":")[1].strip()
    assert any(best in v for _, v in styles[(0, 1)])  # 4.0 over 3 volumes: the best HD95
    assert not any(best in v for _, v in styles.get((2, 1), []))  # 1.0 covers 2 of 3
