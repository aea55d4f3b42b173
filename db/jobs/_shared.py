"""Helpers shared by the state changes of db.jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.errors import DatabaseError, UnknownRun
from db.models import Run
from db.settings import get_settings

NO_SYNC = {"synchronize_session": False}


def upsert_insert(session: Session, table: Any):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise DatabaseError(
        f"Unsupported database '{dialect}'; segbench supports SQLite and PostgreSQL."
    )


def unknown_run(run_id: int) -> UnknownRun:
    return UnknownRun(f"No run with id {run_id} in the database; `segbench status` lists the runs.")


def require_run(session: Session, run_id: int) -> None:
    if session.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise unknown_run(run_id)


def lease_until(lease_seconds: int | None, now: datetime) -> datetime:
    seconds = get_settings().lease_seconds if lease_seconds is None else lease_seconds
    return now + timedelta(seconds=seconds)


def submit_config(spec, protocol, sweep: str, models: dict | None, seed: int) -> dict[str, Any]:
    """A queued run's config: its spec, protocol (with the run's own seed), sweep,
    whether it is one of the paper's cells, and a user model's provenance (by
    reference, from `models`)."""
    config = {
        "spec": spec.to_dict(),
        "protocol": {**protocol.to_dict(), "seed": seed},
        "sweep": sweep,
        "paper": spec.paper,
    }
    if spec.custom and models:
        config["model"] = models[spec.encoder]
    return config
