"""The reaper, one tick at a time, against a real database and broker."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from db import jobs
from db.models import Run
from db.session import session_scope
from tests.support.queue_stack import TINY
from worker.queue import broker
from worker.queue.reaper import Reaper


@pytest.fixture(params=["embedded", "pg_redis"])
def stack(request):
    stack = request.getfixturevalue(request.param)
    broker.configure(stack.db_url, stack.broker_url)
    return stack


def purge() -> None:
    with broker.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(broker.QUEUE)


def claim_expired(stack, run_id: int, attempts: int | None = None) -> None:
    with session_scope(stack.db_url) as session:
        assert jobs.claim(session, run_id=run_id, worker="dead@host/1", lease_seconds=-1)
        if attempts is not None:
            session.execute(update(Run).where(Run.id == run_id).values(attempts=attempts))


def test_expired_lease_is_requeued_and_published(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data)
    purge()
    claim_expired(stack, run_id)
    result = Reaper(stack.db_url).tick()
    assert result["requeued"] == [run_id]
    assert stack.runs()[run_id]["status"] == "queued"
    assert broker.queue_depth() == 1


def test_run_whose_last_attempt_expired_fails_with_a_reason(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data)
    purge()
    claim_expired(stack, run_id, attempts=3)
    result = Reaper(stack.db_url).tick()
    assert result["failed"] == [run_id]
    run = stack.runs()[run_id]
    assert run["status"] == "failed"
    assert "gave up after 3 attempts" in run["error"]
    assert broker.queue_depth() == 0


def test_expired_run_with_a_cancel_request_ends_cancelled(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data)
    purge()
    claim_expired(stack, run_id)
    with session_scope(stack.db_url) as session:
        jobs.cancel(session, run_ids=[run_id])
    Reaper(stack.db_url).tick()
    assert stack.runs()[run_id]["status"] == "cancelled"
    assert broker.queue_depth() == 0


def test_queued_runs_without_a_message_are_republished_on_the_second_empty_tick(
    stack, synthetic_data
):
    ids = stack.submit("-x", "lung-segmentation", "-a", "unet", "-a", "fpn", "-e", "resnet18",
                       "-i", "random", data=synthetic_data)  # fmt: skip
    reaper = Reaper(stack.db_url)
    assert reaper.tick()["republished"] == []  # messages are there
    purge()  # as if the broker restarted without persistence
    assert reaper.tick()["republished"] == []  # maybe a worker has just taken them
    assert reaper.tick()["republished"] == ids
    assert broker.queue_depth() == 2
    assert reaper.tick()["republished"] == []


def test_delivered_messages_are_deleted_from_the_embedded_broker(embedded, synthetic_data):
    from sqlalchemy import create_engine, text

    from worker.queue.broker import compact_embedded_broker

    broker.configure(embedded.db_url, embedded.broker_url)
    ids = embedded.submit(*TINY, data=synthetic_data)
    engine = create_engine(embedded.broker_url.removeprefix("sqla+"))
    with engine.begin() as connection:
        connection.execute(text("UPDATE kombu_message SET visible = 0"))  # delivered
    broker.publish(ids)  # sent again (as the reaper does): one visible message
    assert compact_embedded_broker() == 1
    with engine.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM kombu_message")).scalar() == 1
    engine.dispose()
    assert broker.queue_depth() == 1
