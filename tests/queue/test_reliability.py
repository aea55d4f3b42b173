"""Crashes, duplicates, bad data, a broker restart and shutdowns, with real
`segbench worker` processes, real brokers and real databases."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from sqlalchemy import func, select

from db.models import TestSummary
from db.session import session_scope
from tests.support.queue_stack import TINY, damage
from worker.queue import broker

pytestmark = pytest.mark.slow

NOT_CLAIMED = "nothing to claim"


def summaries(stack, run_id: int) -> int:
    with session_scope(stack.db_url) as session:
        return session.scalar(
            select(func.count()).select_from(TestSummary).where(TestSummary.run_id == run_id)
        )


def assert_succeeded_once(stack, run_id: int, epochs: int, attempts: int) -> dict:
    run = stack.runs()[run_id]
    assert (run["status"], run["attempts"], run["error"]) == ("succeeded", attempts, None)
    assert stack.epochs(run_id) == list(range(1, epochs + 1))  # one row per epoch
    assert summaries(stack, run_id) == 1
    return run


def test_sigkilled_worker_run_resumes_from_its_checkpoint(pg_redis, synthetic_data):
    s = pg_redis
    (run_id,) = s.submit(*TINY, data=synthetic_data, epochs=10)
    first = s.start_worker()
    s.wait(lambda runs: runs[run_id]["epoch"] >= 3, 180, "epoch 3")
    first.kill_all()  # the worker and its pool process, like a machine that died
    second = s.start_worker()
    s.wait_finished(180)
    run = assert_succeeded_once(s, run_id, epochs=10, attempts=2)
    assert run["resumed_from"] >= 2
    assert f"run {run_id} (" in second.log()


def test_killed_pool_process_is_requeued_not_lost(embedded, synthetic_data):
    s = embedded
    (run_id,) = s.submit(*TINY, data=synthetic_data, epochs=10)
    # A long lease: only the redelivered message can bring the run back in time.
    worker = s.start_worker(env={"SEGBENCH_LEASE_SECONDS": "600"})
    s.wait(lambda runs: runs[run_id]["epoch"] >= 2, 180, "epoch 2")
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)  # as the OOM killer would
    s.wait_finished(120)
    run = assert_succeeded_once(s, run_id, epochs=10, attempts=2)
    assert run["resumed_from"] >= 1
    assert worker.process.poll() is None  # the worker itself carries on
    assert "WorkerLostError" in worker.log()
    assert "leases expired" not in worker.log()


def test_the_same_message_delivered_twice_trains_once(pg_redis, synthetic_data):
    s = pg_redis
    (run_id,) = s.submit(*TINY, data=synthetic_data, epochs=3)
    broker.configure(s.db_url, s.broker_url)
    broker.publish([run_id, run_id])
    worker = s.start_worker(concurrency=2)
    s.wait_finished(180)
    assert_succeeded_once(s, run_id, epochs=3, attempts=1)
    s.wait(lambda _: worker.log().count(NOT_CLAIMED) == 2, 60, "both duplicates to be dropped")


def test_corrupt_data_fails_with_its_reason_and_the_other_runs_finish(
    embedded, synthetic_data, corrupt_data
):
    s = embedded
    (bad,) = s.submit(*TINY, data=corrupt_data, sweep="bad")
    damage(corrupt_data)
    good = s.submit("-x", "lung-segmentation", "-a", "pspnet", "-e", "resnet18", "-e",
                    "mobilenet_v2", "-i", "random", data=synthetic_data, sweep="good")  # fmt: skip
    s.start_worker()
    runs = s.wait_finished(180)
    assert runs[bad]["status"] == "failed"
    assert runs[bad]["error"].startswith("data check failed: ")
    assert "tr_mask.nii.gz" in runs[bad]["error"]
    for run_id in good:
        assert_succeeded_once(s, run_id, epochs=2, attempts=1)
    # the data is repaired: `segbench retry` queues the failed run again
    shutil.copy(synthetic_data / "tr_mask.nii.gz", corrupt_data / "tr_mask.nii.gz")
    s.cli("retry", "--sweep", "bad")
    s.wait_finished(180)
    assert_succeeded_once(s, bad, epochs=2, attempts=1)


def test_redis_restart_while_a_run_trains(pg_redis, redis_server, synthetic_data):
    s = pg_redis
    (training,) = s.submit(*TINY, data=synthetic_data, epochs=16, sweep="long")
    (waiting,) = s.submit(*TINY, data=synthetic_data, epochs=2, sweep="short")
    s.start_worker()
    s.wait(lambda runs: runs[training]["epoch"] >= 2, 180, "epoch 2")
    redis_server.restart()  # nothing saved: the waiting run's message is gone
    assert redis_server.client().llen(broker.QUEUE) == 0
    s.wait_finished(240)
    assert_succeeded_once(s, training, epochs=16, attempts=1)  # never interrupted
    assert_succeeded_once(s, waiting, epochs=2, attempts=1)  # republished by the reaper


def test_broker_down_when_a_run_ends_does_not_stall_the_worker(
    pg_redis, redis_server, synthetic_data
):
    s = pg_redis
    (first,) = s.submit(*TINY, data=synthetic_data, epochs=4, sweep="first")
    s.start_worker()
    s.wait(lambda runs: runs[first]["epoch"] >= 2, 180, "epoch 2")
    redis_server.stop()  # the run ends and its message cannot be acknowledged
    s.wait(lambda runs: runs[first]["status"] == "succeeded", 120, "the run to end")
    redis_server.start()
    (second,) = s.submit(*TINY, data=synthetic_data, epochs=2, sweep="second")
    s.wait_finished(120)
    assert_succeeded_once(s, second, epochs=2, attempts=1)


def test_a_run_longer_than_the_visibility_timeout_runs_once(pg_redis, synthetic_data):
    s = pg_redis
    short = {"SEGBENCH_VISIBILITY_TIMEOUT": "2"}
    (run_id,) = s.submit(*TINY, data=synthetic_data, epochs=20)
    first = s.start_worker(env=short)
    s.wait(lambda runs: runs[run_id]["epoch"] >= 1, 180, "epoch 1")
    second = s.start_worker(env=short)  # Redis hands it the message again
    s.wait_finished(180)
    assert_succeeded_once(s, run_id, epochs=20, attempts=1)
    s.wait(lambda _: NOT_CLAIMED in first.log() + second.log(), 30, "the redelivery to be dropped")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["docker-stop", "ctrl-c"])
def test_shutdown_hands_the_run_back_and_another_worker_resumes_it(embedded, synthetic_data, sig):
    s = embedded
    (run_id,) = s.submit(*TINY, data=synthetic_data, epochs=10)
    first = s.start_worker()
    s.wait(lambda runs: runs[run_id]["epoch"] >= 2, 180, "epoch 2")
    first.terminate(sig, timeout=60)
    run = s.runs()[run_id]
    assert (run["status"], run["attempts"]) == ("queued", 0)
    assert run["epoch"] < 10
    assert "handed back to the queue" in first.log()
    if sig == signal.SIGINT:
        return
    s.start_worker()
    s.wait_finished(180)
    run = assert_succeeded_once(s, run_id, epochs=10, attempts=1)
    assert run["resumed_from"] >= 2
