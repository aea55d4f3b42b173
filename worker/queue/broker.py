"""The Celery app and the broker: the broker carries run ids, the database the rest.

Configured for long GPU jobs: a message is acknowledged only after its run ended
(acks_late) and is put back when the worker process running it dies
(reject_on_worker_lost); each worker process reserves one message at a time; there
is no result backend (the database is the truth). The logic lives in worker.queue.runner.

Two deployments, one code path: ``SEGBENCH_BROKER_URL=redis://...`` for many
machines, or, with no broker configured and a SQLite database, kombu's SQLAlchemy
transport on a SQLite file next to the database (no server). That transport keeps
unacknowledged messages only in the worker's memory, so a killed worker's message
is lost with it; the reaper (worker.queue.reaper) republishes such runs from the database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis import exceptions as redis_errors
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from db.engine import is_sqlite, redact
from db.errors import SegbenchError
from db.settings import get_settings

log = logging.getLogger(__name__)

QUEUE = "segbench"
TASK = "segbench.run"


class BrokerError(SegbenchError):
    """The broker is not configured or does not answer (message: one sentence)."""


def embedded_broker_url(database_url: str) -> str:
    """kombu's SQLAlchemy transport on a SQLite file beside the SQLite database."""
    database = make_url(database_url).database if is_sqlite(database_url) else None
    if not database or database == ":memory:":
        raise BrokerError(
            f"No broker is configured for the database {redact(database_url)}; set "
            "SEGBENCH_BROKER_URL or --broker (e.g. redis://127.0.0.1:6379/0). Only a "
            "SQLite database file gets the embedded broker."
        )
    path = Path(database).resolve()
    return f"sqla+sqlite:///{path.with_name(path.stem + '-broker.sqlite')}"


class ForgivingRedisQoS(kombu_redis.QoS):
    """An acknowledgement that cannot reach Redis (it is restarting) is dropped with a
    warning. kombu would otherwise keep the message as unacknowledged in memory, the
    prefetch window stays full and the worker never takes another message. At worst
    the message is delivered again later, and the claim makes that a no-op."""

    def ack(self, delivery_tag):
        try:
            super().ack(delivery_tag)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
            log.warning("could not acknowledge message %s (%s); dropping it", delivery_tag, error)
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue=requeue)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
            log.warning("could not reject message %s (%s); dropping it", delivery_tag, error)
            virtual.QoS.ack(self, delivery_tag)


class ForgivingRedisChannel(kombu_redis.Channel):
    QoS = ForgivingRedisQoS


class ForgivingRedisTransport(kombu_redis.Transport):
    Channel = ForgivingRedisChannel


class SegbenchCelery(Celery):
    @cached_property
    def Worker(self):  # noqa: N802 - Celery's name
        return self.subclass_with_self("worker.queue.soft_stop:SoftStopWorker")


app = SegbenchCelery("segbench", set_as_current=False, include=["worker.queue.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    task_ignore_result=True,
    task_store_errors_even_if_ignored=False,
    result_backend=None,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    worker_send_task_events=False,
    worker_enable_remote_control=False,
    # A broker that restarts must not kill hours of training: the run goes on and
    # records its results in the database.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
)

_configured: dict[str, str] = {}


def configure(database_url: str | None = None, broker_url: str | None = None) -> str:
    """Point the app at a database and a broker (default: the settings); returns the
    broker URL. Raises BrokerError when no broker can be chosen."""
    settings = get_settings()
    database_url = database_url or settings.database_url
    broker = broker_url or settings.broker_url or embedded_broker_url(database_url)
    timeout = settings.visibility_timeout
    options = {
        "visibility_timeout": timeout,
        # Look for messages of dead consumers a few times per visibility timeout.
        "unacked_restore_interval": max(1, min(60, timeout // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 10,
    }
    if broker.startswith("sqla+"):
        options = {}  # the SQLAlchemy transport hands every option to create_engine
    redis = broker.startswith("redis://")
    app.conf.update(
        broker_url=broker,
        broker_transport="worker.queue.broker:ForgivingRedisTransport" if redis else None,
        broker_transport_options=options,
        worker_soft_shutdown_timeout=float(settings.soft_shutdown_timeout),
    )
    _configured.update(database_url=database_url, broker_url=broker)
    return broker


def database_url() -> str:
    return _configured.get("database_url") or get_settings().database_url


def check_broker(timeout: float = 5.0) -> None:
    """Raise BrokerError unless the broker answers."""
    broker = app.conf.broker_url
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            connection.default_channel  # noqa: B018 - opens (and creates) the queue store
    except Exception as error:
        shown = broker.split("@")[-1] if "@" in broker else broker
        raise BrokerError(
            f"Cannot reach the broker at {shown} ({str(error).strip() or type(error).__name__}); "
            "check that it is running and that SEGBENCH_BROKER_URL / --broker is right."
        ) from None


def publish(
    run_ids: Iterable[int], *, database_url: str | None = None, broker_url: str | None = None
) -> int:
    """Send one message per run id; returns how many were sent.

    With `database_url` / `broker_url` the app is first pointed at them (the
    embedded broker of a SQLite database sits next to its file).
    """
    ids = [int(i) for i in run_ids]
    if not ids:
        return 0
    if database_url or broker_url:
        configure(database_url or _configured.get("database_url"), broker_url)
    with app.connection_for_write() as connection:
        # Declare queue and binding first: a broker that no worker has used yet
        # would otherwise drop the messages.
        app.amqp.queues[QUEUE](connection.default_channel).declare()
        for run_id in ids:
            app.send_task(TASK, args=[run_id], connection=connection, retry=True)
    return len(ids)


def queue_depth() -> int:
    """Messages waiting in the broker's queue (0 when the queue does not exist yet)."""
    with app.connection_for_write() as connection:
        try:
            _, count, _ = connection.default_channel.queue_declare(queue=QUEUE, passive=True)
        except connection.channel_errors:
            return 0
    return int(count)


def compact_embedded_broker() -> int:
    """kombu's SQLAlchemy transport only hides the messages it delivered: delete them.
    (A message a worker holds unacknowledged lives in that worker's memory, which is
    what kombu puts back, so deleting its row loses nothing.)"""
    url = str(app.conf.broker_url or "")
    if not url.startswith("sqla+"):
        return 0
    engine = create_engine(url.removeprefix("sqla+"), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            return connection.execute(text("DELETE FROM kombu_message WHERE visible = 0")).rowcount
    finally:
        engine.dispose()


# `celery -A worker.queue.tasks worker` reads everything from SEGBENCH_* variables.
with contextlib.suppress(BrokerError):
    configure()
