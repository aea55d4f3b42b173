"""Run identity (a uid no recreated database can repeat) and a note per run; per-volume
test metrics with boundary metrics; the live workers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("uid", sa.String))
    connection = op.get_bind()
    for (run_id,) in connection.execute(sa.select(runs.c.id)).all():
        connection.execute(runs.update().where(runs.c.id == run_id).values(uid=uuid.uuid4().hex))
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("uid", existing_type=sa.String(length=32), nullable=False)
        batch.create_unique_constraint(batch.f("uq_runs_uid"), ["uid"])
    with op.batch_alter_table("test_summaries") as batch:
        batch.add_column(sa.Column("nsd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("hd95", sa.Float(), nullable=True))
    op.create_table(
        "volume_results",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("volume", sa.SmallInteger(), nullable=False),
        sa.Column("slices", sa.Integer(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=False),
        sa.Column("nsd", sa.Float(), nullable=True),
        sa.Column("hd95", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_volume_results_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "volume", name=op.f("pk_volume_results")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("gpu_name", sa.String(length=128), nullable=True),
        sa.Column("gpu_memory_mb", sa.Integer(), nullable=True),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_runs", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint("name", name=op.f("uq_workers_name")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("volume_results")
    with op.batch_alter_table("test_summaries") as batch:
        batch.drop_column("hd95")
        batch.drop_column("nsd")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_uid", type_="unique")
        batch.drop_column("note")
        batch.drop_column("uid")
