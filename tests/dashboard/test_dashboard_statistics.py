"""The Statistics and Leaderboard pages through streamlit's AppTest, on the populated
database of dashboard_fixtures (per-slice counts stored for every succeeded run):
every tab, readable tables (metrics first, units and help from the registry, no
"None", formatted p-values and intervals), chart specs that show every label, and a
metric added to the registry reaching both pages."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import update

from db import metrics as registry
from db.metrics import Metric
from db.models import TestSummary
from db.queries import sweeps
from db.session import session_scope
from tests.dashboard.dashboard_fixtures import SWEEP, open_page, texts
from worker.results import stat_charts
from worker.training import metrics

PAGE = "views/statistics.py"


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_statistics_on_an_empty_database_says_so(empty_url):
    at = open_page(PAGE)
    no_exception(at)
    assert any("no runs yet" in i.value for i in at.info), texts(at)


def test_statistics_draws_every_tab(populated):
    at = open_page(PAGE)
    no_exception(at)
    shown = texts(at)
    assert "SYNTHETIC DATA" in shown
    assert "volumes+slices" in shown  # which level was resampled
    assert "Blob plot" in shown and "Friedman chi²" in shown
    assert "authors-2020 metric mode" in shown  # the note beside the paper's numbers
    assert len(at.get("vega_lite_chart")) >= 4  # intervals, blobs, map, CD, paper
    at.selectbox(key="stats_mode").set_value("authors-2020").run()
    no_exception(at)
    at.radio(key="stats_experiment").set_value("lesion-segmentation-b").run()
    no_exception(at)


def test_more_seeds_needs_the_password(populated, monkeypatch):
    from db.settings import get_settings

    monkeypatch.setenv("SEGBENCH_DASHBOARD_PASSWORD", "s3cret")
    get_settings.cache_clear()
    at = open_page(PAGE)
    no_exception(at)
    assert at.button(key="stats_add_seeds").disabled


@pytest.mark.parametrize("seeds", ["1", "x"])
def test_more_seeds_refuses_bad_seeds_and_a_missing_dataset_in_one_sentence(populated, seeds):
    at = open_page(PAGE)
    at.number_input(key="seeds_k").set_value(2).run()
    at.text_input(key="seeds_list").set_value(seeds).run()
    at.button(key="stats_add_seeds").click().run()
    no_exception(at)
    if seeds == "x":
        assert any("whole numbers" in e.value for e in at.error)
        return
    # the fixture's dataset folder does not exist: one sentence, nothing queued
    with session_scope(populated.url) as session:
        names = [s["name"] for s in sweeps(session)]
    assert f"{SWEEP}-seed1" not in names
    assert at.error and len(at.error[0].value.splitlines()) == 1


def test_leaderboard_pools_seeds_and_states_the_std_conventions(populated):
    at = open_page("views/leaderboard.py")
    no_exception(at)
    shown = texts(at)
    assert "differ only by seed" in shown and "ddof=1" in shown
    pooled = next(d.value for d in at.dataframe if "Dice (%) mean ± std" in d.value.columns)
    assert set(pooled["n"]) == {1}  # one seed per cell in the fixture
    assert "std rows: over the encoders of an architecture, ddof=1" in shown


# ------------------------------------------------------------------ readable pages


def shown_values(frame) -> pd.DataFrame:
    """What a st.dataframe of a Styler displays: its display values, as text."""
    styler = frame.proto.arrow_data.styler
    return pa.ipc.open_stream(styler.display_values).read_all().to_pandas()


def specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def axis(layer_spec: dict, channel: str) -> dict:
    return layer_spec["layer"][0]["encoding"][channel].get("axis", {})


def test_leaderboard_puts_the_metrics_first_with_units_help_and_no_none(populated):
    at = open_page("views/leaderboard.py")
    no_exception(at)
    table = at.dataframe[0]
    headers = [m.header for m in registry.all_metrics()]
    # the link to the run's page, then the run, its model and the metrics
    assert list(table.value.columns[: 3 + len(headers)]) == ["page", "run", "model", *headers]
    assert table.proto.placeholder == "–"
    config = json.loads(table.proto.columns)
    assert "not the uncertainty of the mean" in config["Dice std (%)"]["help"]
    assert "diagonal" in config["HD95 (mm)"]["help"]
    shown = shown_values(table)
    text = " ".join(shown.astype(str).to_numpy().ravel())
    assert "None" not in text and "nan" not in text.split()
    assert "–" in text  # running and queued runs have no metrics yet
    assert "64 x 64 px" in texts(at)  # at which resolution the metrics were measured
    at.text_input(key="lb_search").set_value("linknet vgg11").run()
    rows = at.dataframe[0].value
    assert len(rows) > 0 and set(rows["architecture"]) == {"linknet"}
    assert set(rows["encoder"]) == {"vgg11"}
    at.text_input(key="lb_search").set_value("no-such-model").run()
    assert any("No run matches 'no-such-model'" in i.value for i in at.info)


def test_leaderboard_compares_chosen_runs_side_by_side(populated):
    at = open_page("views/leaderboard.py")
    first, second = populated.best_id, populated.ids[0]
    at.multiselect(key="lb_compare").set_value([first, second]).run()
    no_exception(at)
    side = next(d for d in at.dataframe if f"#{first}" in d.value.columns)
    assert list(side.value.columns) == [f"#{first}", f"#{second}"]
    assert "Dice (%)" in side.value.index and "HD95 (mm)" in side.value.index
    assert side.value.at["Dice (%)", f"#{first}"] == f"{populated.best_dice:.2f}"


def test_table2_tab_has_units_in_its_headers(populated):
    at = open_page("views/leaderboard.py")
    at.multiselect(key="lb_sweep").set_value([SWEEP]).run()
    table2 = next(d for d in at.dataframe if "encoder" in d.value.columns[:2])
    assert "random lung-segmentation Dice (%)" in table2.value.columns
    assert "Params (M)" in table2.value.columns


P_TEXT = re.compile(r"^(–|< 1e-4|< 1/\d+|≤ .+|\d(\.\d{1,6})?(e-\d+)?|0\.\d{1,6})$")


def test_statistics_formats_p_values_and_intervals_and_draws_every_label(populated):
    at = open_page(PAGE)
    no_exception(at)
    assert "approximate cluster-robust t interval" in texts(at)
    interval, blob, heat = specs(at)[:3]
    runs = [t for t in at.dataframe[0].value["run"]]
    # every run has its row and its label: no label dropped, none cut short
    assert interval["height"] == stat_charts.ROW_PX * len(runs)
    assert interval["autosize"]["type"] == "fit-x"
    y = axis(interval, "y")
    assert y["labelOverlap"] is False and y["labelLimit"] >= 7 * max(len(r) for r in runs)
    for channel in ("x", "y"):
        assert axis(heat, channel)["labelOverlap"] is False
    assert axis(blob, "x")["labelOverlap"] is False
    ci = at.dataframe[0].value["95% CI"]
    assert all(re.fullmatch(r"\[\d+\.\d{2}, \d+\.\d{2}\]", c) for c in ci)
    pairs = next(d.value for d in at.dataframe if "p (Wilcoxon, Holm)" in d.value.columns)
    labelled = set(pairs["a"]) | set(pairs["b"])  # the runs of the map
    assert heat["height"] == stat_charts.ROW_PX * len(labelled) >= stat_charts.ROW_PX * 2
    for column in ("p (cluster t, Holm)", "p (Wilcoxon, Holm)", "p (bootstrap, Holm)"):
        assert all(P_TEXT.match(p) for p in pairs[column]), pairs[column].tolist()
    assert all(re.fullmatch(r"\[-?\d+\.\d{2}, -?\d+\.\d{2}\]", c) for c in pairs["95% CI"])
    for frame in at.dataframe:  # no "None" or "nan" anywhere: en dashes instead
        assert frame.proto.placeholder == "–"  # what the grid draws for a missing value
        if frame.proto.arrow_data.HasField("styler"):
            cells = shown_values(frame).astype(str).to_numpy().ravel()
        else:
            assert not frame.value.isna().any().any(), frame.value
            cells = frame.value.astype(str).to_numpy().ravel()
        assert not {"None", "nan", "NaN", "<NA>"} & set(cells), frame.value
    at.selectbox(key="stats_interval").set_value("percentile").run()
    no_exception(at)
    assert "approximate percentile bootstrap interval" in texts(at)


def test_a_metric_added_in_one_place_reaches_both_pages(populated, monkeypatch):
    """The registry entry and its formula (as tests/results/test_metric_registry.py adds
    them): the leaderboard shows the stored value, Statistics recomputes it from the
    per-slice counts."""
    iou = Metric("iou", "IoU", "%", True, "slice", "Intersection over union of each slice.",
                 from_counts=True)  # fmt: skip
    monkeypatch.setattr(registry, "METRICS", (*registry.METRICS, iou))

    def iou_of(tp, fp, fn, tn, eps):
        return metrics.ratio(tp, tp + fp + fn, eps)

    monkeypatch.setitem(metrics.COUNT_FORMULAS, "iou", iou_of)
    with session_scope(populated.url) as session:
        session.execute(update(TestSummary).where(TestSummary.run_id == populated.best_id)
                        .values(extra={"iou": 77.25}))  # fmt: skip
    at = open_page("views/leaderboard.py")
    no_exception(at)
    board = at.dataframe[0].value.set_index("run")
    assert board.at[populated.best_id, "IoU (%)"] == 77.25
    at = open_page(PAGE)
    no_exception(at)
    assert "IoU (%)" in at.dataframe[0].value.columns
