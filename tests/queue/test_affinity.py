"""Cell affinity through the real queue: one `segbench worker` process (embedded
broker, SQLite) gets the messages of two cells interleaved, one run cancelled, and
trains each cell's runs one after the other; every other run trains exactly once
(the cancelled run's message trains the next queued run instead of being lost). The
two cells are the tiny test model's two builders (tests/fixtures/tiny_model.py), so
the test costs seconds of training. And one submit publishes each cell's runs
together (db.queries.longest_cells_first)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from db.grid import EXPERIMENTS, custom_specs
from db.models import Run
from db.protocol import Protocol
from db.session import session_scope

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
A, B = "tiny_model:build", "tiny_model:build_probabilities"
PROTOCOL = Protocol(epochs=1, image_size=32)


def interleaved():
    """lung A, lung B, lesion-a A, lesion-a B, lesion-b A, lesion-b B"""
    pairs = zip(custom_specs(A, EXPERIMENTS), custom_specs(B, EXPERIMENTS), strict=True)
    return [spec for pair in pairs for spec in pair]


def test_one_submit_publishes_each_cell_together(embedded, synthetic_data, monkeypatch):
    from worker.queue import service

    monkeypatch.syspath_prepend(str(FIXTURES))  # submit builds the model to check it
    done = service.submit_runs(
        interleaved(), PROTOCOL, data=synthetic_data, sweep="cells", db_url=embedded.db_url,
        broker_url=embedded.broker_url,
    )  # fmt: skip
    # nothing measured yet: the cells in the order given, each cell's runs together
    assert done.published == [done.runs[i] for i in (0, 2, 4, 1, 3, 5)]
    # new seeds of the sweep's runs are sent the same way
    added = service.add_seeds(embedded.db_url, done.runs, [7], broker_url=embedded.broker_url)
    assert sorted(added.published) == added.created and len(added.created) == 6
    with session_scope(embedded.db_url) as session:
        encoders = dict(session.execute(select(Run.id, Run.encoder)).all())
    assert [encoders[i] for i in added.published] == [A, A, A, B, B, B]


@pytest.mark.slow  # a real worker process
def test_one_process_trains_each_cell_together_and_every_run_once(
    embedded, synthetic_data, monkeypatch
):
    from worker.queue import service

    monkeypatch.syspath_prepend(str(FIXTURES))
    ids = [  # submitted one by one: the messages alternate A, B, A, B, A, B
        service.submit_runs(
            [spec], PROTOCOL, data=synthetic_data, sweep="cells", db_url=embedded.db_url,
            broker_url=embedded.broker_url,
        ).runs[0]
        for spec in interleaved()
    ]  # fmt: skip
    cancelled = ids[1]  # cell B's first message
    service.cancel(embedded.db_url, run_ids=[cancelled])
    path = os.pathsep.join(p for p in (str(FIXTURES), os.environ.get("PYTHONPATH")) if p)
    # the reaper would resend a run left without a message: here it ticks only at start,
    # so every run must train on the messages submit sent
    worker = embedded.start_worker(env={"PYTHONPATH": path, "SEGBENCH_REAPER_INTERVAL": "3600"})
    runs = embedded.wait_finished(240)
    assert {i: r["status"] for i, r in runs.items()} == {
        i: "cancelled" if i == cancelled else "succeeded" for i in ids
    }, worker.log()[-3000:]
    assert all(runs[i]["attempts"] == 1 for i in ids if i != cancelled)
    with session_scope(embedded.db_url) as session:
        started = (
            session.execute(
                select(Run.encoder).where(Run.status == "succeeded").order_by(Run.started_at)
            )
            .scalars()
            .all()
        )
    # one message at a time without affinity: A, A, B, A, B; with it each cell's runs
    # follow each other
    assert started == [A, A, A, B, B], worker.log()[-3000:]
    assert "in its place, the next of this process's cell" in worker.log()
    assert "republishing" not in worker.log()
