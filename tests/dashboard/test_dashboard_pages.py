"""Every page through streamlit's AppTest: on an empty database, on a populated one,
and on a database that does not answer."""

from __future__ import annotations

import pytest

from db.models import Run
from db.session import session_scope
from tests.dashboard.dashboard_fixtures import (
    OTHER_SWEEP,
    SWEEP,
    open_page,
    point_dashboard_at,
    populate,
    texts,
)

PAGES = [
    "views/live.py",
    "views/launch.py",
    "views/leaderboard.py",
    "views/analysis.py",
    "views/statistics.py",
    "views/gallery.py",
]
READ_PAGES = [
    "views/live.py",
    "views/leaderboard.py",
    "views/analysis.py",
    "views/statistics.py",
    "views/gallery.py",
]
BADGE = "SYNTHETIC DATA"


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", READ_PAGES)
def test_empty_database_says_so(empty_url, page):
    at = open_page(page)
    no_exception(at)
    assert not at.error
    assert any("no runs yet" in i.value for i in at.info), texts(at)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-folder/segbench.db",
        "postgresql://segbench@127.0.0.1:1/segbench",
    ],
)
@pytest.mark.parametrize("page", PAGES)
def test_database_that_does_not_answer_gives_one_sentence(monkeypatch, url, page):
    point_dashboard_at(monkeypatch, url)
    at = open_page(page)
    no_exception(at)
    messages = [e.value for e in at.error if e.value.startswith("Cannot")]
    assert messages, texts(at)
    assert "\n" not in messages[0] and "Traceback" not in messages[0]


def test_live_counts_running_and_failed(populated):
    at = open_page()  # Live is the default page
    no_exception(at)
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics == {"total": sum(populated.counts.values()), **populated.counts}
    assert BADGE in texts(at)
    running, failed = at.dataframe[0].value, at.dataframe[1].value
    assert len(running) == len(populated.running)
    assert list(running["worker"]) == ["gpu-1", "gpu-2", "gpu-3"]
    assert running["progress"].between(0, 1).all()
    assert "CUDA out of memory" in failed["reason"].iloc[0]
    chart = at.get("vega_lite_chart")
    assert len(chart) == 1  # the loss curves of the running runs


def test_live_selection_survives_a_refresh(populated):
    at = open_page()
    chosen = [populated.running[1]]
    at.multiselect(key="live_curve_runs").set_value(chosen).run()
    at.run()  # what the fragment's timer does
    no_exception(at)
    assert at.multiselect(key="live_curve_runs").value == chosen


def test_live_filters_by_sweep(populated):
    at = open_page()
    at.selectbox(key="live_sweep").set_value(OTHER_SWEEP).run()
    no_exception(at)
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics["total"] == len(populated.other_ids) == metrics["queued"]
    assert any("wait for a worker" in i.value for i in at.info)


def test_leaderboard_top_row_is_the_best_dice(populated):
    at = open_page("views/leaderboard.py")
    no_exception(at)
    board = at.dataframe[0].value
    assert len(board) == sum(populated.counts.values())
    assert board["run"].iloc[0] == populated.best_id
    assert board["Dice (%)"].iloc[0] == pytest.approx(populated.best_dice)
    assert board["NSD (%)"].iloc[0] == pytest.approx(populated.best_dice - 5.0)
    assert board["HD95 (mm)"].iloc[0] == pytest.approx((100.0 - populated.best_dice) / 10)
    assert BADGE in texts(at)
    assert at.get("download_button")


def test_leaderboard_filters_reduce_the_rows(populated):
    at = open_page("views/leaderboard.py")
    everything = len(at.dataframe[0].value)
    at.multiselect(key="lb_arch").set_value(["unet"]).run()
    unet = at.dataframe[0].value
    assert 0 < len(unet) < everything
    assert set(unet["architecture"]) == {"unet"}
    at.multiselect(key="lb_status").set_value(["succeeded"]).run()
    assert set(at.dataframe[0].value["status"]) == {"succeeded"}
    at.multiselect(key="lb_encoder").set_value(["efficientnet-b6"]).run()
    no_exception(at)
    assert any("No run matches" in i.value for i in at.info)


def test_leaderboard_sorts_by_parameters(populated):
    at = open_page("views/leaderboard.py")
    at.selectbox(key="lb_sort").set_value("parameters_m").run()
    params = at.dataframe[0].value["Params (M)"].dropna()
    assert params.is_monotonic_increasing


def test_analysis_draws_the_figures(populated):
    at = open_page("views/analysis.py")
    no_exception(at)
    assert at.selectbox(key="an_sweep").value == SWEEP  # the sweep with results
    charts = at.get("vega_lite_chart")
    # Fig. 6 (2), Fig. 4, Fig. 5 bands and B - A, mean Dice by encoder and family
    assert len(charts) == 7
    assert BADGE in texts(at)


def test_gallery_shows_masks_and_filters_without_the_dataset(populated):
    at = open_page("views/gallery.py")
    no_exception(at)
    models = at.multiselect(key=f"gal_models_{SWEEP}_lung-segmentation").value
    assert len(models) == 8  # best and worst encoder of each of 4 architectures
    # The dataset folder "data" does not exist: its error shows, the masks still do.
    assert any("data" in e.value for e in at.error)
    images = at.get("image")
    assert len(images) == 8 + 2  # 8 masks, first-layer filters before and after
    assert BADGE in texts(at)


def test_password_guards_actions_not_reading(populated, monkeypatch):
    from db.settings import get_settings

    monkeypatch.setenv("SEGBENCH_DASHBOARD_PASSWORD", "s3cret")
    get_settings.cache_clear()
    at = open_page("views/launch.py")
    no_exception(at)
    assert at.button(key="launch_enqueue").disabled
    assert at.button(key="manage_cancel_sweep").disabled
    assert any("password" in i.value for i in at.info)
    at.switch_page("views/leaderboard.py").run()
    assert len(at.dataframe[0].value) > 0  # reading needs no password
    at.switch_page("views/launch.py").run()
    at.sidebar.text_input(key="segbench_password").set_value("wrong").run()
    assert at.button(key="manage_cancel_sweep").disabled
    at.sidebar.text_input(key="segbench_password").set_value("s3cret").run()
    assert not at.button(key="manage_cancel_sweep").disabled


def test_nan_losses_are_a_warning_not_an_error(postgres_url, monkeypatch):
    populated = populate(postgres_url, nan_losses=True)
    point_dashboard_at(monkeypatch, postgres_url)
    at = open_page()
    no_exception(at)
    assert any("NaN" in w.value for w in at.warning), texts(at)
    assert len(at.get("vega_lite_chart")) == 1
    for page in ("views/leaderboard.py", "views/analysis.py"):
        at.switch_page(page).run()
        no_exception(at)
    assert at.get("vega_lite_chart")
    at.switch_page("views/leaderboard.py").run()
    assert at.dataframe[0].value["run"].iloc[0] == populated.best_id


def test_gallery_and_histograms_read_the_sweeps_dataset(empty_url, synthetic_data):
    populate(empty_url, data_dir=str(synthetic_data))
    at = open_page("views/gallery.py")
    no_exception(at)
    assert not at.error, texts(at)
    captions = [c.value for c in at.caption]
    images = at.get("image")
    assert len(images) == 1 + 8 + 2  # ground truth, 8 models, filters before/after
    assert any("this slice" in str(c) for c in captions + [i.proto for i in images])
    at.switch_page("views/analysis.py").run()
    at.toggle(key="an_histograms").set_value(True).run()
    no_exception(at)
    assert not at.error, texts(at)
    assert len(at.get("vega_lite_chart")) == 7 + 1


def test_live_marks_a_run_whose_heartbeat_is_late_before_its_lease_expires(populated):
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import utcnow

    late, gone, fine = populated.running
    with session_scope(populated.url) as session:
        now = utcnow()
        session.execute(
            update(Run)
            .where(Run.id == fine)
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=40))
        )
        session.execute(
            update(Run)
            .where(Run.id == late)
            .values(
                heartbeat_at=now - timedelta(seconds=33),
                lease_expires_at=now + timedelta(seconds=7),
            )
        )
        session.execute(
            update(Run)
            .where(Run.id == gone)
            .values(
                heartbeat_at=now - timedelta(seconds=50),
                lease_expires_at=now - timedelta(seconds=10),
            )
        )
    at = open_page()
    no_exception(at)
    notes = list(at.dataframe[0].value["note"])
    assert notes[0].startswith("no heartbeat for 3") and notes[0].endswith(" s")
    assert notes[1] == "lease expired: being requeued"
    assert notes[2] == ""
