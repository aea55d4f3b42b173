"""Fixtures for the job queue: real databases (SQLite file, fresh PostgreSQL database),
real brokers (a redis-server of each test's own, or the embedded SQLite broker) and real
`segbench worker` processes, with leases and intervals shortened to seconds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg_databases import create_database, drop_database
from tests.support.queue_stack import (
    RedisServer,
    Stack,
    running_stack,
    stack_env,
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_database("segbench_queue")
    yield url
    drop_database(url)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A Redis of this test's own (a free port, nothing on disk), killed at the end."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def pg_redis(pg_url, redis_url, tmp_path) -> Iterator[Stack]:
    """PostgreSQL + Redis: the scale-out deployment."""
    with running_stack(
        Stack(pg_url, redis_url, tmp_path, stack_env(pg_url, redis_url, tmp_path))
    ) as s:
        yield s


@pytest.fixture
def embedded(tmp_path) -> Iterator[Stack]:
    """SQLite + the serverless SQLite broker: the one-laptop deployment."""
    from worker.queue.broker import embedded_broker_url

    db_url = f"sqlite:///{tmp_path / 'segbench.db'}"
    broker_url = embedded_broker_url(db_url)
    with running_stack(
        Stack(db_url, broker_url, tmp_path, stack_env(db_url, broker_url, tmp_path))
    ) as s:
        yield s


@pytest.fixture
def corrupt_data(synthetic_data, tmp_path) -> Path:
    """A copy of the synthetic data; queue_stack.damage breaks its lesion masks file
    after the runs are submitted (submit verifies the data, so the worker's check
    must catch what broke since)."""
    target = tmp_path / "corrupt-data"
    shutil.copytree(synthetic_data, target)
    return target
