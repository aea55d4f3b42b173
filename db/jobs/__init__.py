"""Every state change of a run: the run state machine.

queued -> running -> succeeded | failed | cancelled; running -> queued when the lease
expires (the worker died); failed after `max_attempts` claims.

Attempts count claims: every successful claim adds one, so `attempts` is the number
of times a worker started the run. A lease that expires does not add another one
(the claim that started the dead attempt already counted it); a run is claimable
only while attempts < max_attempts, and requeue_expired fails a run whose expired
attempt was its last. retry() resets attempts to 0; release() (a worker shutting
down) gives a run back without counting the interrupted attempt.

Each function takes the caller's session and does not commit: the caller's
session_scope makes the whole call one transaction. Every check-then-act is a
single conditional UPDATE, so two processes cannot both win.

db.jobs.lifecycle holds the queue side (submit, claim, heartbeat, release, fail,
cancel, retry, requeue); db.jobs.records what a running run writes (start, epochs,
results); db.jobs.workers what a worker writes about itself (register, heartbeat,
deregister) and a run's note. All are offered here under one name.
"""

from db.jobs.affinity import claim_from_queue
from db.jobs.leases import (
    expire_lease_of_dead_process,
    expire_leases_of_dead_processes,
    holder_host,
    process_alive,
)
from db.jobs.lifecycle import (
    RUN_IDENTITY,
    ClaimedRun,
    SubmittedRuns,
    cancel,
    check_sweep_name,
    claim,
    fail,
    heartbeat,
    mark_cancelled,
    release,
    requeue_expired,
    retry,
    submit,
    sweep_name_from,
)
from db.jobs.records import (
    finish,
    finite_or_none,
    is_cancel_requested,
    record_epoch,
    record_failure,
    record_start,
)
from db.jobs.workers import (
    deregister,
    prune_workers,
    register,
    set_note,
    worker_heartbeat,
)

__all__ = [
    "RUN_IDENTITY",
    "ClaimedRun",
    "SubmittedRuns",
    "cancel",
    "check_sweep_name",
    "deregister",
    "claim",
    "claim_from_queue",
    "expire_lease_of_dead_process",
    "expire_leases_of_dead_processes",
    "holder_host",
    "fail",
    "finish",
    "finite_or_none",
    "heartbeat",
    "is_cancel_requested",
    "mark_cancelled",
    "process_alive",
    "prune_workers",
    "record_epoch",
    "record_failure",
    "record_start",
    "register",
    "release",
    "requeue_expired",
    "retry",
    "set_note",
    "submit",
    "sweep_name_from",
    "worker_heartbeat",
]
