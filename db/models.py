"""The schema, as SQLAlchemy 2.0 typed models. Alembic (migrations/) creates it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision these models correspond to (tests check it is the head), so
# that checking a database's schema needs no Alembic import.
SCHEMA_REVISION = "0003"

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
ARTIFACT_KINDS = ("checkpoint", "gallery_mask", "first_layer_before", "first_layer_after")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_uid() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every back end (SQLite stores it without zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; segbench stores UTC-aware times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Sweep(Base):
    """A named set of runs sharing one protocol and one dataset."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    protocol: Mapped[dict[str, Any]]
    protocol_hash: Mapped[str] = mapped_column(String(16))
    data_dir: Mapped[str] = mapped_column(Text)
    dataset_name: Mapped[str] = mapped_column(String(200))
    dataset_kind: Mapped[str | None] = mapped_column(String(64))
    manifest_hash: Mapped[str | None] = mapped_column(String(64))
    synthetic: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One training run: a grid cell under a sweep's protocol, and its state."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint(
            "sweep_id",
            "experiment",
            "architecture",
            "encoder",
            "init",
            "seed",
            "protocol_hash",
            name="uq_runs_identity",
        ),
        CheckConstraint(f"status IN {RUN_STATUSES}", name="status"),
        Index("ix_runs_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_runs_sweep_id_status", "sweep_id", "status"),
        Index("ix_runs_experiment_architecture", "experiment", "architecture"),
        Index("ix_runs_encoder", "encoder"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A random id no recreated database can repeat: names the run's artifact folder
    # and is written into its checkpoints, so a checkpoint is never resumed by another run.
    uid: Mapped[str] = mapped_column(String(32), unique=True, default=new_uid)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    experiment: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(32))
    encoder: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(32))
    init: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer)
    protocol_hash: Mapped[str] = mapped_column(String(16))

    config: Mapped[dict[str, Any]]
    library_versions: Mapped[dict[str, Any] | None]
    git_commit: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(128))
    # db.protocol.environment_key of the run's environment: runs pool only within one
    environment_key: Mapped[str | None] = mapped_column(String(16))
    dataset_name: Mapped[str] = mapped_column(String(200))
    manifest_hash: Mapped[str | None] = mapped_column(String(64))
    synthetic: Mapped[bool] = mapped_column(Boolean)
    parameters_m: Mapped[float | None] = mapped_column(Float)

    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa.false()
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    # What happened to the run that a user should know (how it resumed, what it ignored).
    note: Mapped[str | None] = mapped_column(Text)
    # Of a failed run: the exception's traceback and the last lines logged while it ran.
    traceback: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)

    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    epochs: Mapped[int] = mapped_column(Integer)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    best_val_loss: Mapped[float | None] = mapped_column(Float)
    train_seconds_per_epoch: Mapped[float | None] = mapped_column(Float)
    val_seconds_per_epoch: Mapped[float | None] = mapped_column(Float)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Epoch(Base):
    """One finished epoch of a run (upserted: a repeated epoch overwrites)."""

    __tablename__ = "epochs"
    __table_args__ = {"sqlite_with_rowid": False}  # clustered by (run_id, epoch)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL when the loss diverged (NaN/inf)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    train_seconds: Mapped[float] = mapped_column(Float)
    val_seconds: Mapped[float] = mapped_column(Float)
    is_best: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class SliceResult(Base):
    """Confusion counts of one test slice, so any metric can be recomputed. Lean on
    purpose: 600 runs x 829 slices."""

    __tablename__ = "slice_results"
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    volume: Mapped[int] = mapped_column(SmallInteger)
    slice: Mapped[int] = mapped_column(SmallInteger)
    tp: Mapped[int] = mapped_column(Integer)
    fp: Mapped[int] = mapped_column(Integer)
    fn: Mapped[int] = mapped_column(Integer)
    tn: Mapped[int] = mapped_column(Integer)


class TestSummary(Base):
    """Mean test metrics of a run's best model, in percent."""

    __tablename__ = "test_summaries"
    __test__ = False  # not a pytest test class

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    metric_mode: Mapped[str] = mapped_column(String(32))
    sensitivity: Mapped[float] = mapped_column(Float)
    specificity: Mapped[float] = mapped_column(Float)
    dice: Mapped[float] = mapped_column(Float)
    dice_std: Mapped[float] = mapped_column(Float)
    pooled_dice: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    nsd: Mapped[float | None] = mapped_column(Float)  # mean over test volumes, percent
    hd95: Mapped[float | None] = mapped_column(Float)  # mean over test volumes, mm
    test_volumes: Mapped[int | None] = mapped_column(Integer)  # volumes scored
    nsd_volumes: Mapped[int | None] = mapped_column(Integer)  # volumes the NSD mean covers
    hd95_volumes: Mapped[int | None] = mapped_column(Integer)  # volumes the HD95 mean covers
    # metrics of db.metrics without a column of their own: {name: value}
    extra: Mapped[dict | None] = mapped_column(JSON)


class VolumeResult(Base):
    """Test metrics of one test volume (3-D Dice, NSD, HD95), per run."""

    __tablename__ = "volume_results"
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    volume: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    slices: Mapped[int] = mapped_column(Integer)
    dice: Mapped[float] = mapped_column(Float)  # percent
    nsd: Mapped[float | None] = mapped_column(Float)  # percent
    hd95: Mapped[float | None] = mapped_column(Float)  # mm


class Worker(Base):
    """A live `segbench worker` process: what it runs on and when it last said so."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(128))
    gpu_name: Mapped[str | None] = mapped_column(String(128))
    gpu_memory_mb: Mapped[int | None] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    current_runs: Mapped[list[int] | None] = mapped_column(JSON)


class Artifact(Base):
    """A file or small blob of a run: checkpoint path, gallery masks (packed bits),
    first-layer filters (float32)."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("run_id", "kind", "key"),
        CheckConstraint(f"kind IN {ARTIFACT_KINDS}", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    shape: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
