"""Every read the dashboard, `segbench status`, the reaper and the exports make.

Aggregations run in SQL; results are plain lists of dicts (pandas.DataFrame(rows)
turns one into a frame). Filters take one value or a list of values.
db.queries.runs reads runs and the queue, db.queries.results reads results,
db.queries.summaries a run's test metrics as the registry names them,
db.queries.workers the live workers and a sweep's ETA, db.queries.report what
`segbench report` reads (with per-volume test metrics); all are offered here under
one name.
"""

from db.queries.artifacts import (
    gallery_slice_indexes,
    run_artifacts,
    runs_with_first_layer,
    stored_gallery_masks,
)
from db.queries.report import VOLUME_COLUMNS, report_runs, sweep_row, volume_rows
from db.queries.results import (
    EPOCH_COLUMNS,
    GROUPS,
    LEADERBOARD_COLUMNS,
    LEADERBOARD_KEYS,
    METRICS,
    SUCCEEDED_COLUMNS,
    aggregates,
    epoch_curves,
    leaderboard,
    loss_bands,
    slice_results,
    succeeded_runs,
)
from db.queries.runs import (
    RUN_LIST_KEYS,
    RUN_PROGRESS_COLUMNS,
    STATUS_KEYS,
    environments,
    failed_runs,
    queue_counts,
    queued_run_ids,
    run_cells,
    run_detail,
    run_list,
    running_on_node,
    running_runs,
    status_rows,
    sweeps,
)
from db.queries.summaries import summary_metrics, with_extra_metrics
from db.queries.workers import (
    WORKER_COLUMNS,
    cell_seconds,
    live_workers,
    longest_cells_first,
    measured_epoch_seconds,
    sweep_eta,
    sweep_order,
    time_estimate,
)

__all__ = [
    "EPOCH_COLUMNS",
    "GROUPS",
    "LEADERBOARD_COLUMNS",
    "LEADERBOARD_KEYS",
    "METRICS",
    "RUN_LIST_KEYS",
    "RUN_PROGRESS_COLUMNS",
    "STATUS_KEYS",
    "SUCCEEDED_COLUMNS",
    "VOLUME_COLUMNS",
    "WORKER_COLUMNS",
    "aggregates",
    "epoch_curves",
    "environments",
    "failed_runs",
    "gallery_slice_indexes",
    "leaderboard",
    "live_workers",
    "loss_bands",
    "cell_seconds",
    "longest_cells_first",
    "measured_epoch_seconds",
    "sweep_order",
    "queue_counts",
    "queued_run_ids",
    "report_runs",
    "run_artifacts",
    "run_cells",
    "run_detail",
    "run_list",
    "running_on_node",
    "running_runs",
    "runs_with_first_layer",
    "slice_results",
    "status_rows",
    "stored_gallery_masks",
    "succeeded_runs",
    "summary_metrics",
    "sweep_eta",
    "sweep_row",
    "sweeps",
    "time_estimate",
    "volume_rows",
    "with_extra_metrics",
]
