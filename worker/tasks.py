"""The Celery app and its one thin task: the broker carries run ids, the database the rest.

Configured for long GPU jobs: a message is acknowledged only after its run ended
(acks_late) and is put back when the worker process running it dies
(reject_on_worker_lost); each worker process reserves one message at a time; there
is no result backend (the database is the truth). The logic lives in worker.runner.

Two deployments, one code path: ``SEGBENCH_BROKER_URL=redis://...`` for many
machines, or, with no broker configured and a SQLite database, kombu's SQLAlchemy
transport on a SQLite file next to the database (no server). That transport keeps
unacknowledged messages only in the worker's memory, so a killed worker's message
is lost with it; the reaper (worker.reaper) republishes such runs from the database.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable
from functools import cached_property, lru_cache
from pathlib import Path

from celery import Celery, signals
from celery.exceptions import Reject
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis import exceptions as redis_errors

from db.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "segbench"
TASK = "segbench.run"


# The queue reads the one settings object; kept as a name for its callers.
QueueSettings = Settings


@lru_cache(maxsize=1)
def queue_settings() -> QueueSettings:
    return QueueSettings()


class BrokerError(RuntimeError):
    """The broker is not configured or does not answer (message: one sentence)."""


def embedded_broker_url(database_url: str) -> str:
    """kombu's SQLAlchemy transport on a SQLite file beside the SQLite database."""
    from sqlalchemy import make_url

    from db.session import is_sqlite

    database = make_url(database_url).database if is_sqlite(database_url) else None
    if not database or database == ":memory:":
        raise BrokerError(
            f"No broker is configured for the database {_redact(database_url)}; set "
            "SEGBENCH_BROKER_URL or --broker (e.g. redis://127.0.0.1:6379/0). Only a "
            "SQLite database file gets the embedded broker."
        )
    path = Path(database).resolve()
    return f"sqla+sqlite:///{path.with_name(path.stem + '-broker.sqlite')}"


def _redact(url: str) -> str:
    from db.session import redact

    return redact(url)


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
        return self.subclass_with_self("worker.tasks:SoftStopWorker")


app = SegbenchCelery("segbench", set_as_current=False)
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

# Shared with the pool's processes (created before they fork): set when the worker
# shuts down, so runs stop at the end of their epoch and are requeued. A lock-free
# byte: it is set from a signal handler, and a pool process may die at any moment.
_stopping = multiprocessing.RawValue("b", 0)


def stopping() -> bool:
    return bool(_stopping.value)


def stop_runs() -> None:
    _stopping.value = 1


_configured: dict[str, str] = {}


def configure(database_url: str | None = None, broker_url: str | None = None) -> str:
    """Point the app at a database and a broker (default: the settings); returns the
    broker URL. Raises BrokerError when no broker can be chosen."""
    settings = queue_settings()
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
        broker_transport="worker.tasks:ForgivingRedisTransport" if redis else None,
        broker_transport_options=options,
        worker_soft_shutdown_timeout=float(settings.soft_shutdown_timeout),
    )
    _configured.update(database_url=database_url, broker_url=broker)
    return broker


def database_url() -> str:
    return _configured.get("database_url") or queue_settings().database_url


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
            run.apply_async(args=[run_id], connection=connection, retry=True)
    return len(ids)


def queue_depth() -> int:
    """Messages waiting in the broker's queue (0 when the queue does not exist yet)."""
    with app.connection_for_write() as connection:
        try:
            _, count, _ = connection.default_channel.queue_declare(queue=QUEUE, passive=True)
        except connection.channel_errors:
            return 0
    return int(count)


@app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run(self, run_id: int) -> str:
    """Claim run `run_id`, train it and record how it ended (see worker.runner)."""
    from worker import runner

    if stopping():  # taken while this worker shuts down: leave it to another one
        raise Reject("worker shutting down", requeue=True)

    outcome = runner.execute(
        int(run_id),
        worker=f"{self.request.hostname}/{os.getpid()}",
        database_url=database_url(),
        should_stop=stopping,
    )
    if outcome == runner.RELEASED:
        publish([run_id])
    return outcome


def _soft_stop_worker_cls():
    from celery.apps.worker import Worker

    class SoftStopWorker(Worker):
        """Asks running runs to stop after their epoch, then waits for them (at most
        worker_soft_shutdown_timeout seconds) before Celery cancels what is left."""

        def wait_for_soft_shutdown(self):
            from worker.reaper import wait_until_released

            begin_shutdown(self.consumer)
            timeout = self.app.conf.worker_soft_shutdown_timeout
            if timeout > 0:
                wait_until_released(database_url(), node=self.hostname, timeout=timeout)

    return SoftStopWorker


def __getattr__(name: str):
    # Celery imports "worker.tasks:SoftStopWorker" only when a worker starts, so that
    # importing this module does not import celery.apps.worker (and billiard's
    # REMAP_SIGTERM is read after `segbench worker` has set it).
    if name == "SoftStopWorker":
        return _soft_stop_worker_cls()
    raise AttributeError(f"module 'worker.tasks' has no attribute '{name}'")


def begin_shutdown(consumer) -> None:
    """Stop taking messages (a run handed back must go to another worker) and ask the
    running runs to stop after their epoch."""
    stop_runs()
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        with contextlib.suppress(Exception):
            task_consumer.cancel()


@signals.worker_shutting_down.connect
def _warm_shutdown_stops_runs_too(sender=None, **_kwargs) -> None:
    # Ctrl-C (warm shutdown) would wait for every run to end, hours on a GPU: the
    # runs rather stop after their epoch and go back to the queue.
    begin_shutdown(_consumer)


@signals.worker_process_init.connect
def _share_cpu_threads(**_kwargs) -> None:
    # torch may have been imported before the pool forked; apply the thread budget
    # `segbench worker` chose for each of its pool processes.
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


@signals.worker_process_init.connect
def _forget_inherited_connections(**_kwargs) -> None:
    # The SQLAlchemy broker transport caches its engine per process; a pool process
    # must not share the parent's SQLite connections.
    transport = sys.modules.get("kombu.transport.sqlalchemy")
    if transport is not None:
        for engine, _ in list(transport.Channel._engines.values()):
            engine.dispose(close=False)
        transport.Channel._engines.clear()


_reaper = None
_consumer = None


@signals.worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    global _reaper, _consumer
    _consumer = sender
    from worker.reaper import Reaper

    _reaper = Reaper(database_url(), interval=queue_settings().reaper_interval)
    _reaper.start()


@signals.worker_shutdown.connect
def _stop_reaper(sender=None, **_kwargs) -> None:
    if _reaper is not None:
        _reaper.stop()


# `celery -A worker.tasks worker` reads everything from SEGBENCH_* variables.
with contextlib.suppress(BrokerError):
    configure()
