"""Workers you can see, with real `segbench worker` processes: each records itself,
beats with the runs it trains, is listed by `segbench workers`, leaves the list when
it stops, and drops off it when it is killed and its heartbeat stops."""

from __future__ import annotations

import json
import time

import pytest

from db import queries
from db.session import session_scope
from db.settings import get_settings
from tests.support.queue_stack import TINY

# Starts real worker processes that train: outside `make test-fast`.
pytestmark = pytest.mark.slow

FAST_PRESENCE = {"SEGBENCH_WORKER_HEARTBEAT": "0.5", "SEGBENCH_WORKER_STALE_AFTER": "3"}


def _live(stack) -> list[dict]:
    with session_scope(stack.db_url) as session:
        return queries.live_workers(session, stale_after_s=3)


def _wait(stack, predicate, timeout: float, what: str) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = _live(stack)
        if predicate(live):
            return live
        time.sleep(0.3)
    logs = "\n".join(w.log()[-3000:] for w in stack.workers)
    raise AssertionError(f"timed out waiting for {what}; workers: {_live(stack)}\n{logs}")


def test_workers_register_show_their_runs_and_leave_the_list(embedded, synthetic_data):
    embedded.env.update(FAST_PRESENCE)
    get_settings.cache_clear()  # the in-process `segbench workers` reads them too
    assert "No worker is alive" in embedded.cli("workers").stdout
    first = embedded.start_worker(concurrency=1)
    second = embedded.start_worker(concurrency=2)
    live = _wait(embedded, lambda w: len(w) == 2, 90, "two workers to register")
    by_pid = {w["pid"]: w for w in live}
    assert set(by_pid) == {first.process.pid, second.process.pid}
    assert by_pid[second.process.pid]["concurrency"] == 2
    assert {w["device"] for w in live} == {"cpu"} and all(w["gpu_name"] is None for w in live)

    (run_id,) = embedded.submit(*TINY, data=synthetic_data, epochs=3)
    busy = _wait(embedded, lambda w: any(run_id in x["current_runs"] for x in w), 90, "the run")
    holder = next(w for w in busy if run_id in w["current_runs"])
    table = embedded.cli("workers").stdout
    assert "2 live worker(s)" in table and f"#{run_id}" in table and holder["name"] in table
    document = json.loads(embedded.cli("workers", "--format", "json").stdout)
    assert {w["pid"] for w in document} == set(by_pid)
    embedded.wait_finished(timeout=180)

    first.terminate()  # SIGTERM: the worker removes its row as it stops
    live = _wait(embedded, lambda w: len(w) == 1, 60, "the stopped worker to leave")
    assert live[0]["pid"] == second.process.pid
    second.kill_all()  # SIGKILL: no goodbye, the heartbeat just stops
    _wait(embedded, lambda w: w == [], 30, "the killed worker to drop off")
    assert "No worker is alive" in embedded.cli("workers").stdout
