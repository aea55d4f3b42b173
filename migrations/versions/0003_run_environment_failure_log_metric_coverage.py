"""What this round added to a run, in one revision:

- `runs.environment_key`: a hash of everything beyond the protocol that may change a
  run's numbers (device model, thread count, torch version, math mode, kernel
  switches); runs are pooled only within one key.
- `runs.traceback` and `runs.log_tail`: a failed run keeps its traceback and the last
  lines its worker logged while it ran, so the dashboard's run page can show why it
  failed without the worker's log file.
- `test_summaries.test_volumes / nsd_volumes / hd95_volumes`: how many test volumes
  the NSD and HD95 means of a run cover, and `extra`: the metrics of the registry
  (db.metrics) that have no column of their own. Runs stored before this revision
  get their counts from their per-volume rows: an HD95 that was left undefined then
  (one mask empty in that volume) is not covered, so the mean shows which volumes it
  leaves out.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("environment_key", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("traceback", sa.Text(), nullable=True))
        batch.add_column(sa.Column("log_tail", sa.Text(), nullable=True))
    with op.batch_alter_table("test_summaries") as batch:
        batch.add_column(sa.Column("test_volumes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("nsd_volumes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("hd95_volumes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("extra", sa.JSON(), nullable=True))
    summaries = sa.table(
        "test_summaries",
        sa.column("run_id", sa.Integer),
        sa.column("test_volumes", sa.Integer),
        sa.column("nsd_volumes", sa.Integer),
        sa.column("hd95_volumes", sa.Integer),
    )
    volumes = sa.table(
        "volume_results",
        sa.column("run_id", sa.Integer),
        sa.column("nsd", sa.Float),
        sa.column("hd95", sa.Float),
    )
    counts = sa.select(
        volumes.c.run_id,
        sa.func.count().label("n"),
        sa.func.count(volumes.c.nsd).label("nsd"),
        sa.func.count(volumes.c.hd95).label("hd95"),
    ).group_by(volumes.c.run_id)
    connection = op.get_bind()
    for run_id, n, nsd, hd95 in connection.execute(counts).all():
        connection.execute(
            summaries.update()
            .where(summaries.c.run_id == run_id)
            .values(test_volumes=n, nsd_volumes=nsd, hd95_volumes=hd95)
        )


def downgrade() -> None:
    with op.batch_alter_table("test_summaries") as batch:
        batch.drop_column("extra")
        batch.drop_column("hd95_volumes")
        batch.drop_column("nsd_volumes")
        batch.drop_column("test_volumes")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("log_tail")
        batch.drop_column("traceback")
        batch.drop_column("environment_key")
