"""The Statistics page through streamlit's AppTest, on the populated database of
dashboard_fixtures (per-slice counts stored for every succeeded run)."""

from __future__ import annotations

import pytest
from dashboard_fixtures import SWEEP, open_page, texts

from db.queries import sweeps
from db.session import session_scope

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
