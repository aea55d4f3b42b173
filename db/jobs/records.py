"""What a running run writes: its start configuration, every epoch, its results.

Each function takes the caller's session and does not commit.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.orm import Session

from db.jobs._shared import NO_SYNC, lease_until, require_run, unknown_run, upsert_insert
from db.models import (
    ARTIFACT_KINDS,
    Artifact,
    Epoch,
    Run,
    SliceResult,
    TestSummary,
    VolumeResult,
    utcnow,
)
from db.protocol import EpochRecord, RunOutcome, environment_key


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def record_start(session: Session, *, run_id: int, config: dict[str, Any]) -> None:
    """Store what the run really trains with (config from worker.training.trainer.fit).

    Reads: library_versions (or versions), git_commit, device, parameters_m and
    dataset {name, kind, synthetic, manifest_hash}; the whole config is kept as JSON.
    """
    require_run(session, run_id)
    config = _jsonable(config)
    values: dict[str, Any] = {
        "config": config,
        "library_versions": config.get("library_versions") or config.get("versions"),
        "git_commit": config.get("git_commit"),
        "device": config.get("device"),
        "parameters_m": config.get("parameters_m"),
        "environment_key": config.get("environment_key"),
        "heartbeat_at": utcnow(),
    }
    if config.get("resume_note"):  # else keep what the run said so far (a download, say)
        values["note"] = config["resume_note"]
    dataset = config.get("dataset") or {}
    if dataset.get("name"):
        values["dataset_name"] = dataset["name"]
    if dataset.get("manifest_hash"):
        values["manifest_hash"] = dataset["manifest_hash"]
    if dataset.get("synthetic") is not None:
        values["synthetic"] = bool(dataset["synthetic"])
    session.execute(
        update(Run).where(Run.id == run_id).values(**values).execution_options(**NO_SYNC)
    )


def finite_or_none(value: float | None) -> float | None:
    """A diverged loss (NaN/inf) is stored as NULL, the same on SQLite and PostgreSQL."""
    return value if value is not None and math.isfinite(value) else None


def record_epoch(
    session: Session, *, run_id: int, record: EpochRecord, lease_seconds: int | None = None
) -> bool:
    """Upsert one epoch (a repeated epoch overwrites its row) and heartbeat the run.

    Returns the run's cancel flag, read in the same statement, so a worker needs no
    second transaction per epoch to learn that it should stop.
    """
    now = utcnow()
    run_values: dict[str, Any] = {
        "epoch": record.epoch,
        "heartbeat_at": now,
        "lease_expires_at": case(
            (Run.status == "running", lease_until(lease_seconds, now)), else_=Run.lease_expires_at
        ),
    }
    if record.is_best:
        run_values.update(best_epoch=record.epoch, best_val_loss=finite_or_none(record.val_loss))
    cancel = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(**run_values)
        .returning(Run.cancel_requested)
        .execution_options(**NO_SYNC)
    ).scalar_one_or_none()
    if cancel is None:
        raise unknown_run(run_id)
    values = {
        "train_loss": finite_or_none(record.train_loss),
        "val_loss": finite_or_none(record.val_loss),
        "train_seconds": record.train_seconds,
        "val_seconds": record.val_seconds,
        "is_best": bool(record.is_best),
        "recorded_at": now,
    }
    stmt = upsert_insert(session, Epoch.__table__).values(
        run_id=run_id, epoch=record.epoch, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "epoch"], set_={k: stmt.excluded[k] for k in values}
    )
    session.execute(stmt)
    return bool(cancel)


def is_cancel_requested(session: Session, *, run_id: int) -> bool:
    flag = session.scalar(select(Run.cancel_requested).where(Run.id == run_id))
    if flag is None:
        raise unknown_run(run_id)
    return bool(flag)


def _artifact_rows(run_id: int, outcome: RunOutcome, now: datetime) -> list[dict[str, Any]]:
    rows = [
        {
            "kind": "checkpoint",
            "key": "best",
            "path": outcome.checkpoint_dir,
            "sha256": outcome.checkpoint_sha256,
        }
    ]
    for index, bits in sorted(outcome.gallery.items()):
        rows.append(
            {
                "kind": "gallery_mask",
                "key": str(index),
                "data": bits,
                "shape": list(outcome.gallery_shape),
            }
        )
    for kind in ("first_layer_before", "first_layer_after"):
        data = getattr(outcome, kind)
        if data is not None:
            rows.append({"kind": kind, "key": "", "data": data})
            rows[-1]["shape"] = list(outcome.first_layer_shape)
    full = {"path": None, "sha256": None, "data": None, "shape": None}
    for row in rows:
        if row.get("data") is not None:
            row["sha256"] = hashlib.sha256(row["data"]).hexdigest()
    return [{**full, **row, "run_id": run_id, "created_at": now} for row in rows]


def _replace_rows(session: Session, model, run_id: int, rows: list[dict[str, Any]]) -> None:
    """The run's rows of `model` replaced by `rows` (each without its run_id)."""
    session.execute(delete(model).where(model.run_id == run_id).execution_options(**NO_SYNC))
    if rows:
        session.execute(insert(model.__table__), [{**row, "run_id": run_id} for row in rows])


def _environment_values(session: Session, run_id: int, environment: dict | None) -> dict:
    """The environment a run really trained in, as it ended (a CUDA graph that fell
    back to eager steps, ops without a deterministic kernel): into its config and key."""
    if environment is None:
        return {}
    config = dict(session.scalar(select(Run.config).where(Run.id == run_id)) or {})
    config["environment"] = _jsonable(environment)
    config["environment_key"] = environment_key(environment)
    return {"config": config, "environment_key": config["environment_key"]}


def finish(session: Session, *, run_id: int, outcome: RunOutcome) -> None:
    """Write the test results and artifacts of a run and mark it succeeded.

    Earlier results of the run are replaced; everything happens in the caller's one
    transaction, so a failure part-way leaves no partial rows.
    """
    require_run(session, run_id)
    now = utcnow()
    test = outcome.test
    slices = [
        {"idx": c.index, "volume": c.volume, "slice": c.slice, "tp": c.tp, "fp": c.fp,
         "fn": c.fn, "tn": c.tn}
        for c in test.slices
    ]  # fmt: skip
    summary = {
        "metric_mode": test.metric_mode,
        "sensitivity": test.sensitivity,
        "specificity": test.specificity,
        "dice": test.dice,
        "dice_std": test.dice_std,
        "pooled_dice": test.pooled_dice,
        "seconds": test.seconds,
        "nsd": finite_or_none(test.nsd),
        "hd95": finite_or_none(test.hd95),
        "test_volumes": len(test.volumes),
        "nsd_volumes": test.nsd_volumes,
        "hd95_volumes": test.hd95_volumes,
        "extra": {k: finite_or_none(v) for k, v in test.extra.items()} or None,
    }
    volumes = [
        {"volume": v.volume, "slices": v.slices, "dice": v.dice,
         "nsd": finite_or_none(v.nsd), "hd95": finite_or_none(v.hd95)}
        for v in test.volumes
    ]  # fmt: skip
    for model, rows in ((SliceResult, slices), (TestSummary, [summary]), (VolumeResult, volumes)):
        _replace_rows(session, model, run_id, rows)
    session.execute(
        delete(Artifact)
        .where(Artifact.run_id == run_id, Artifact.kind.in_(ARTIFACT_KINDS))
        .execution_options(**NO_SYNC)
    )
    session.execute(insert(Artifact.__table__), _artifact_rows(run_id, outcome, now))
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(
            **_environment_values(session, run_id, outcome.environment),
            status="succeeded",
            finished_at=now,
            heartbeat_at=now,
            lease_expires_at=None,
            error=None,
            traceback=None,
            log_tail=None,
            best_epoch=outcome.best_epoch,
            best_val_loss=finite_or_none(outcome.best_val_loss),
            parameters_m=outcome.parameters_m,
            train_seconds_per_epoch=outcome.train_seconds_per_epoch,
            val_seconds_per_epoch=outcome.val_seconds_per_epoch,
        )
        .execution_options(**NO_SYNC)
    )


LOG_TAIL_LINES = 50  # the last lines of a failed run's log that are stored with it


def record_failure(
    session: Session, *, run_id: int, traceback: str | None, log_tail: str | None
) -> None:
    """Keep why a run failed beside it: the exception's traceback and the last
    LOG_TAIL_LINES lines its worker logged while it ran. Call in the transaction that
    marks it failed (db.jobs.fail)."""
    require_run(session, run_id)
    if log_tail is not None:
        log_tail = "\n".join(log_tail.splitlines()[-LOG_TAIL_LINES:])
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(traceback=traceback, log_tail=log_tail)
        .execution_options(**NO_SYNC)
    )
