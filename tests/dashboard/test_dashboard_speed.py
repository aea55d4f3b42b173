"""Every page renders in under a second on a database holding the full 600-run
benchmark at the paper's scale (bench/make_full_db.py: 120k epochs, 490k slices),
with warm caches and with empty ones; the one exception is Statistics with empty
caches, which bootstraps every run's test slices (1000 resamples) and has a budget of
its own. The budgets are fixed: `make test` runs this module alone, after the rest."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db.session import dispose_engine
from tests.dashboard.dashboard_fixtures import APP, point_dashboard_at

BENCH = Path(__file__).resolve().parents[2] / "bench"
# every page of dashboard/app.py; "?run=" the Run page of one run, without it the list
PAGES = [
    "views/live.py",
    "views/launch.py",
    "views/run.py",
    "views/run.py?run=17",
    "views/leaderboard.py",
    "views/analysis.py",
    "views/statistics.py",
    "views/gallery.py",
]
BUDGET_S = 1.0
COLD_BUDGETS_S = {"views/statistics.py": 10.0}  # the bootstrap of 600 runs x 829 slices

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timing,
    pytest.mark.skipif(
        not (BENCH / "make_full_db.py").is_file(), reason="needs bench/make_full_db.py"
    ),
]


def load_make_full_db():
    """bench/make_full_db.py, loaded from its file (bench/ is a folder of scripts)."""
    spec = importlib.util.spec_from_file_location("make_full_db", BENCH / "make_full_db.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def full_db(tmp_path_factory) -> Path:
    make_full_db = load_make_full_db()
    cached = Path(make_full_db.SQLITE_PATH)
    path = tmp_path_factory.mktemp("full") / "full.db"
    if cached.is_file() and make_full_db.is_complete(f"sqlite:///{cached}"):
        dispose_engine(f"sqlite:///{cached}")
        shutil.copy(cached, path)  # the dashboard may write (schema check): use a copy
    else:
        make_full_db.build(f"sqlite:///{path}")
    dispose_engine(f"sqlite:///{path}")
    return path


def render_seconds(at: AppTest, page: str) -> float:
    started = time.perf_counter()
    at.switch_page(page).run()
    return time.perf_counter() - started


def test_every_page_is_listed():
    app = APP.read_text()
    listed = {p.split("?")[0] for p in PAGES}
    assert listed == {f"views/{p.name}" for p in (APP.parent / "views").glob("*.py")}
    assert all(f'"{page}"' in app for page in listed)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_within_a_second_at_paper_scale(full_db, monkeypatch, page):
    point_dashboard_at(monkeypatch, f"sqlite:///{full_db}")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    page, _, query = page.partition("?")
    if query:
        key, value = query.split("=")
        at.query_params[key] = value
    at.switch_page(page).run()  # imports and engine: paid once per server
    assert not at.exception
    cold = []
    for _ in range(2):
        st.cache_data.clear()
        cold.append(render_seconds(at, page))
    warm = min(render_seconds(at, page) for _ in range(2))  # the least of two, as cold
    assert not at.exception
    cold_budget = COLD_BUDGETS_S.get(page, BUDGET_S)
    assert min(cold) < cold_budget, f"{page}: {min(cold):.2f} s with empty caches"
    assert warm < BUDGET_S, f"{page}: {warm:.2f} s with warm caches"
