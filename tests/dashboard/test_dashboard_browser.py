"""End to end in a real browser: `segbench dashboard` against a SQLite file, driven by
Playwright with Debian's chromium. Enqueues a small sweep from the Launch page, sees
its runs on Live, and saves a screenshot of every page under test-output/dashboard/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import migrate
from db.queries import queue_counts
from db.session import dispose_engine, session_scope
from tests.dashboard.browser_tools import (
    HAVE_CHROMIUM,
    NO_CHROMIUM,
    choose,
    dashboard_server,
    no_exception,
    settle,
    shoot,
)
from tests.dashboard.dashboard_fixtures import GALLERY_INDEXES, populate

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "dashboard"
PAGES = ("live", "launch", "leaderboard", "analysis", "statistics", "gallery")
ANALYSIS_TABS = {
    "Dice vs parameters (Fig. 4)": "analysis-parameters",
    "Loss curves (Fig. 5)": "analysis-losses",
    "Encoders": "analysis-encoders",
    "Intensities (Fig. 2)": "analysis-intensities",
}
STATISTICS_TABS = {
    "Ranking": "statistics-ranking",
    "Significance": "statistics-significance",
    "Critical difference": "statistics-cd",
    "Paper": "statistics-paper",
}

# A real Chromium and a real worker: outside `make test-fast`.
pytestmark = [pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM), pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A synthetic dataset, a populated database and the dashboard serving them."""
    from worker.data import load_dataset, synth

    root = tmp_path_factory.mktemp("e2e")
    data_dir = synth(
        root / "data", image_size=64, train_slices=10, test_volumes=2, slices_per_volume=8
    )
    truth = {
        experiment: {
            i: load_dataset(data_dir, experiment, 64).test.masks[i] for i in GALLERY_INDEXES
        }
        for experiment in ("lung-segmentation", "lesion-segmentation-a", "lesion-segmentation-b")
    }
    url = f"sqlite:///{root / 'segbench.db'}"
    migrate.upgrade(url)
    populated = populate(url, data_dir=str(data_dir), truth=truth)
    dispose_engine(url)

    with dashboard_server(url, root, {"SEGBENCH_DATA_DIR": str(data_dir)}) as base:
        yield base, url, populated
    dispose_engine(url)


def test_enqueue_from_launch_and_watch_on_live(served, browser):
    base, url, populated = served
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})

    page.goto(f"{base}/launch")
    settle(page)
    page.get_by_text("SYNTHETIC DATA").first.wait_for()
    choose(page, "Experiments", "lung-segmentation")
    choose(page, "Architectures", "unet")
    choose(page, "Encoders", "resnet18")
    sweep_box = page.get_by_label("Sweep name").first
    sweep_box.fill("e2e-sweep")
    sweep_box.press("Enter")
    settle(page)
    page.get_by_role("button", name="Enqueue 2 runs").click()
    page.get_by_text("Sweep 'e2e-sweep' holds these 2 runs").wait_for(timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "launch.png"), full_page=True)

    with session_scope(url) as session:
        assert queue_counts(session, sweep="e2e-sweep")["queued"] == 2
    from worker.queue import broker

    broker.configure(url)  # the embedded broker beside the SQLite file
    assert broker.queue_depth() == 2

    page.goto(f"{base}/")  # Live is the default page
    settle(page)
    queued = populated.counts["queued"] + 2
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="queued")
    assert metric.first.inner_text().split()[-1] == str(queued)
    # Data grids draw on a canvas; their cells are in the DOM for accessibility only.
    page.get_by_text("CUDA out of memory").first.wait_for(state="attached")
    page.screenshot(path=str(SCREENSHOTS / "live.png"), full_page=True)

    for name in ("leaderboard", "analysis", "statistics", "gallery"):
        page.goto(f"{base}/{name}")
        settle(page)
        page.get_by_text("SYNTHETIC DATA").first.wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    page.goto(f"{base}/analysis")
    settle(page)
    for tab, shot in ANALYSIS_TABS.items():
        page.get_by_role("tab", name=tab).click()
        if shot == "analysis-intensities":
            page.get_by_text("Read the dataset and draw the histograms").click()
            settle(page)
            page.get_by_text("log scale").first.wait_for()
        page.wait_for_timeout(700)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)
    page.goto(f"{base}/statistics")
    settle(page)
    page.get_by_text("volumes+slices").first.wait_for()
    for tab, shot in STATISTICS_TABS.items():
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(700)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)
    page.close()
    for name in [*PAGES, *ANALYSIS_TABS.values(), *STATISTICS_TABS.values()]:
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


def test_live_shows_a_real_worker(served, browser, tmp_path):
    """A real `segbench worker` on the served database appears on Live. It listens on
    a Redis database of its own, empty, so it trains nothing of the page's runs."""
    import redis

    base, url, _ = served
    broker_url = "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(broker_url).flushdb()
    env = {
        **os.environ,
        "SEGBENCH_WORKER_HEARTBEAT": "0.5",
        "SEGBENCH_REAPER_INTERVAL": "600",
        "OMP_NUM_THREADS": "1",
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--db", url, "--broker", broker_url,
         "--gpu", "none", "--concurrency", "3"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        from db.queries import live_workers

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with session_scope(url) as session:
                if live_workers(session):
                    break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.3)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{base}/")
        settle(page)
        page.get_by_text("Workers (1)").first.wait_for(timeout=30_000)
        # the data grid's cells are in the DOM for accessibility
        page.get_by_text(f"segbench-{worker.pid}@").first.wait_for(state="attached")
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(SCREENSHOTS / "live-workers.png"), full_page=True)
        page.close()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
        redis.Redis.from_url(broker_url).flushdb()


def test_analysis_charts_in_light_and_dark(served, browser):
    """The figures whose legends and background were made to read on both themes: the
    Dice-vs-parameters density and the mean ± std loss bands (screenshots for the docs)."""
    base, _, _ = served
    for theme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1600, "height": 1000}, color_scheme=theme)
        page = context.new_page()
        page.goto(f"{base}/analysis")
        settle(page)
        for tab, name in (("Dice vs parameters (Fig. 4)", "analysis-parameters"),
                          ("Loss curves (Fig. 5)", "analysis-losses")):  # fmt: skip
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1000)
            no_exception(page)
            shoot(page, name, theme)
        context.close()
