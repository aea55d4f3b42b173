"""The Run page (a deep link per run: ?run=17) and what the Live page links to it: one
progress figure without cancelled runs, one time left, finished runs' loss curves, and
a failed run's traceback and log tail as its worker stored them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db import queries
from db.grid import custom_specs
from db.models import Run
from db.protocol import Protocol
from db.session import session_scope
from tests.dashboard.dashboard_fixtures import open_page, texts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_run(run_id: int | str):
    at = open_page()
    at.query_params["run"] = str(run_id)
    return at.switch_page("views/run.py").run()


def test_live_counts_done_runs_without_the_cancelled_and_says_one_time_left(populated):
    at = open_page()
    no_exception(at)
    counts = populated.counts
    done = counts["succeeded"] + counts["failed"]
    total = sum(counts.values()) - counts["cancelled"]
    progress = at.get("progress")[0].proto.text
    assert progress == (
        f"{done} of {total} runs done (succeeded or failed); 1 cancelled run(s) not counted"
    )
    assert texts(at).lower().count("time left") == 1  # no worker here: "unknown", once
    (running,) = [d.value for d in at.dataframe if "progress" in d.value.columns]
    assert "time left" not in running.columns  # the sweep's time left is the only one
    assert list(running["run"]) == [f"run?run={i}" for i in populated.running]


def test_live_offers_loss_curves_of_finished_runs(populated):
    at = open_page()
    options = at.multiselect(key="live_curve_runs").options
    assert any(f"#{populated.best_id} " in o and "(succeeded)" in o for o in options)
    at.multiselect(key="live_curve_runs").set_value([populated.best_id]).run()
    no_exception(at)
    assert at.get("vega_lite_chart"), texts(at)


def test_run_page_shows_one_run_by_its_id(populated):
    at = open_run(populated.best_id)
    no_exception(at)
    assert at.title[0].value == f"Run #{populated.best_id}"
    headers = [s.value for s in at.subheader]
    assert headers == [
        "Loss curves",
        "Test results",
        "Predicted masks",
        "Protocol, versions and device",
    ]
    assert at.metric[2].value == f"{populated.best_dice:.2f}%"
    assert at.get("vega_lite_chart")
    assert "SYNTHETIC DATA" in texts(at)
    epochs = next(d.value for d in at.dataframe if "train loss" in d.value.columns)
    assert list(epochs["epoch"]) == list(range(1, 7))
    setting = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert "NSD tolerance (mm)" in set(setting["setting"])
    assert len(at.get("image")) == 2  # the two stored gallery slices (no dataset folder)


def test_run_page_lists_runs_without_an_id_and_refuses_a_bad_one(populated):
    at = open_page("views/run.py")
    no_exception(at)
    assert at.title[0].value == "Runs"
    (table,) = [d.value for d in at.dataframe]
    assert set(table["run"]) >= {f"run?run={i}" for i in populated.ids}
    at = open_run("seventeen")
    assert any("must be a whole number" in e.value for e in at.error)
    at = open_run(424242)
    assert any("No run with id 424242" in e.value for e in at.error)


@pytest.fixture
def failed_run(populated, synthetic_data, caplog, monkeypatch) -> int:
    """A run of the failing test model, submitted and executed in this process as a
    worker executes it: it trains one epoch, then raises in its second."""
    from worker.queue import runner, service

    monkeypatch.syspath_prepend(str(FIXTURES))
    caplog.set_level(logging.INFO)  # a worker logs at INFO (segbench worker --loglevel)
    service.connect_broker(populated.url)
    submitted = service.submit_runs(
        custom_specs("failing_model:build", ["lung-segmentation"]),
        Protocol(epochs=3, image_size=64),
        data=synthetic_data,
        sweep="failing",
        db_url=populated.url,
    )
    (run_id,) = submitted.runs
    ended = runner.execute(run_id, worker="test@host/1", database_url=populated.url, device="cpu")
    assert ended == runner.FAILED
    sys.modules.pop("failing_model", None)
    return run_id


def test_a_failed_run_keeps_its_traceback_and_log_tail(populated, failed_run):
    with session_scope(populated.url) as session:
        run = session.scalar(select(Run).where(Run.id == failed_run))
        assert run.status == "failed" and "boom" in run.error
        assert run.traceback.startswith("Traceback (most recent call last):")
        assert run.traceback.rstrip().endswith(
            "RuntimeError: boom: the failing test model stops at step 12"
        )
        assert "failing_model.py" in run.traceback
        lines = run.log_tail.splitlines()
        assert 1 <= len(lines) <= 50
        assert any(f"run {failed_run} (" in line and "epoch 1:" in line for line in lines)
        assert not any("epoch 2:" in line for line in lines)  # it failed in epoch 2
        failed = queries.failed_runs(session, sweep="failing")
    assert [r["id"] for r in failed] == [failed_run]

    at = open_run(failed_run)
    no_exception(at)
    assert "Why it failed" in [s.value for s in at.subheader]
    assert any("boom" in e.value for e in at.error)
    code = [c.value for c in at.code]
    assert any("RuntimeError: boom" in c for c in code)
    assert any("epoch 1:" in c for c in code)

    live = open_page()
    live.selectbox(key="live_sweep").set_value("failing").run()
    links = [p.proto for p in live.get("page_link")]
    assert any(f"#{failed_run}: RuntimeError: boom" in link.label for link in links)
    assert {link.query_string for link in links} >= {f"run={failed_run}"}
