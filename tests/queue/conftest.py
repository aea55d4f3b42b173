"""Fixtures for the job queue: real databases (SQLite file, fresh PostgreSQL database),
real brokers (Redis on 127.0.0.1:6379, or the embedded SQLite broker) and real
`segbench worker` processes, with leases and intervals shortened to seconds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_databases import create_database, drop_database
from queue_stack import (
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    Stack,
    ensure_redis,
    redis_client,
    running_stack,
    stack_env,
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_database("segbench_queue")
    yield url
    drop_database(url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    ensure_redis()
    redis_client().flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    ensure_redis()
    redis_client().flushdb()


@pytest.fixture(scope="session", autouse=True)
def _redis_is_restarted_whatever_happens() -> Iterator[None]:
    yield
    ensure_redis()


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
