"""A dead worker costs a minute: with the DEFAULT lease, heartbeat and reaper settings,
a SIGKILLed worker's run records its next epoch on another worker within 60 s, on
the embedded default and on PostgreSQL + Redis, on the same host and on another."""

from __future__ import annotations

import time

import pytest

from db.settings import Settings
from tests.support.queue_stack import TINY

# Wall-clock bounds: `make test` runs this module alone, after the rest of the suite.
pytestmark = pytest.mark.timing

RECOVERY_S = 60.0
DEFAULT_TIMINGS = (
    "SEGBENCH_LEASE_SECONDS",
    "SEGBENCH_REAPER_INTERVAL",
    "SEGBENCH_HEARTBEAT_SECONDS",
)


def with_default_timings(stack) -> None:
    for key in DEFAULT_TIMINGS:
        stack.env.pop(key, None)


def epochs_recorded(stack, run_id: int) -> int:
    return max(stack.epochs(run_id), default=0)


def kill_and_recover(stack, data, *, second_env: dict[str, str]) -> tuple[float, dict]:
    with_default_timings(stack)
    (run_id,) = stack.submit(*TINY, data=data, epochs=40)
    first = stack.start_worker()
    stack.wait(lambda runs: runs[run_id]["epoch"] >= 3, 180, "epoch 3")
    first.kill_all()  # the worker and its pool process: the machine died
    killed_at = time.monotonic()
    last = epochs_recorded(stack, run_id)
    stack.start_worker(env=second_env)
    stack.wait(lambda runs: epochs_recorded(stack, run_id) > last, 120, "the next epoch")
    recovery = time.monotonic() - killed_at
    run = stack.runs()[run_id]
    return recovery, run


def test_the_defaults_are_sized_for_detection():
    s = Settings()
    assert s.heartbeat_seconds <= s.lease_seconds / 3
    assert s.lease_seconds + 1.2 * s.reaper_interval < RECOVERY_S


@pytest.mark.slow
@pytest.mark.parametrize("deployment", ["embedded", "pg_redis"])
def test_a_killed_workers_run_goes_on_within_a_minute_on_the_same_host(
    deployment, request, synthetic_data
):
    stack = request.getfixturevalue(deployment)
    recovery, run = kill_and_recover(stack, synthetic_data, second_env={})
    assert recovery < RECOVERY_S, f"the next epoch came {recovery:.0f} s after the kill"
    assert run["resumed_from"] >= 2 and run["attempts"] == 2


@pytest.mark.slow
def test_a_killed_workers_run_goes_on_within_a_minute_from_another_host(pg_redis, synthetic_data):
    # the second worker cannot see the first one's processes: it waits for the lease
    recovery, run = kill_and_recover(
        pg_redis, synthetic_data, second_env={"SEGBENCH_WORKER_HOST": "another-host"}
    )
    assert recovery < RECOVERY_S, f"the next epoch came {recovery:.0f} s after the kill"
    assert run["worker"].split("/")[0].endswith("@another-host")
    assert run["resumed_from"] >= 2 and run["attempts"] == 2
