"""db.jobs.workers and db.queries.workers on SQLite and PostgreSQL: a worker's row
(register, heartbeat with its runs, stale, pruned, deregistered), a run's note and a
sweep's ETA; and `segbench status` readable at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from sqlalchemy import update

from db import jobs, queries
from db.models import Run, Worker, utcnow
from db.session import session_scope
from tests.support.runs import epoch_record, submit_runs


def _register(session, name: str, concurrency: int = 1) -> None:
    jobs.register(
        session, name=name, host="node-a", pid=123, device="gpu 0", concurrency=concurrency,
        gpu_name="NVIDIA H200", gpu_memory_mb=143771,
    )  # fmt: skip


def test_worker_lifecycle_heartbeat_lists_its_runs_and_stale_ones_drop_off(db_url):
    ids = submit_runs(db_url, 3)
    with session_scope(db_url) as session:
        _register(session, "segbench-1@node-a", concurrency=2)
        _register(session, "segbench-2@node-b")
        jobs.claim(session, run_id=ids[0], worker="segbench-1@node-a/77")
        jobs.claim(session, run_id=ids[1], worker="segbench-1@node-a/78")
        jobs.claim(session, run_id=ids[2], worker="segbench-2@node-b/90")
    with session_scope(db_url) as session:
        assert jobs.worker_heartbeat(session, name="segbench-1@node-a") == ids[:2]
        assert jobs.worker_heartbeat(session, name="nobody@nowhere") is None
        live = {w["name"]: w for w in queries.live_workers(session)}
    assert set(live) == {"segbench-1@node-a", "segbench-2@node-b"}
    one = live["segbench-1@node-a"]
    assert one["current_runs"] == ids[:2] and one["concurrency"] == 2
    assert one["gpu_name"] == "NVIDIA H200" and one["gpu_memory_mb"] == 143771
    assert 0 <= one["heartbeat_age_s"] < 30

    with session_scope(db_url) as session:  # node-b stops beating
        session.execute(
            update(Worker)
            .where(Worker.name == "segbench-2@node-b")
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
    with session_scope(db_url) as session:
        assert [w["name"] for w in queries.live_workers(session, stale_after_s=60)] == [
            "segbench-1@node-a"
        ]
        assert jobs.prune_workers(session, older_than_s=60) == 1
        _register(session, "segbench-1@node-a", concurrency=4)  # restarted: same row
        assert [w["concurrency"] for w in queries.live_workers(session)] == [4]
        jobs.deregister(session, name="segbench-1@node-a")
        assert queries.live_workers(session) == []


def test_a_note_is_written_only_by_the_worker_that_runs_the_run(db_url):
    (run_id,) = submit_runs(db_url, 1)
    with session_scope(db_url) as session:
        jobs.claim(session, run_id=run_id, worker="w@h/1")
        assert not jobs.set_note(session, run_id=run_id, worker="other@h/2", note="x")
        assert jobs.set_note(session, run_id=run_id, worker="w@h/1", note="downloading")
        assert queries.run_detail(session, run_id=run_id)["note"] == "downloading"
        assert queries.running_runs(session)[0]["note"] == "downloading"


def test_sweep_eta_from_measured_epochs_and_live_slots(db_url):
    ids = submit_runs(db_url, 3)  # 4 epochs each
    submit_runs(db_url, 2, sweep="other")
    with session_scope(db_url) as session:
        assert queries.sweep_eta(session, sweep="test-sweep")["eta_seconds"] is None
        jobs.claim(session, run_id=ids[0], worker="w@h/1")
        jobs.record_epoch(session, run_id=ids[0], record=epoch_record(1))  # 2.5 s
        no_worker = queries.sweep_eta(session, sweep="test-sweep")
        assert no_worker["remaining_epochs"] == 11 and no_worker["workers"] == 0
        assert no_worker["eta_seconds"] is None and no_worker["seconds_per_epoch"] == 2.5
        _register(session, "w@h", concurrency=2)
        eta = queries.sweep_eta(session, sweep="test-sweep")
        assert eta["slots"] == 2 and eta["eta_seconds"] == 11 * 2.5 / 2
        assert queries.sweep_eta(session)["remaining_epochs"] == 11 + 8
        session.execute(update(Run).where(Run.id.in_(ids[1:])).values(status="cancelled"))
        _register(session, "v@h", concurrency=4)  # 6 slots, but 1 run left: 1 slot used
        progress = queries.sweep_eta(session, sweep="test-sweep")
        assert progress["eta_seconds"] == 3 * 2.5
        # cancelled runs will not train: neither done nor part of the total
        assert (progress["done"], progress["total"], progress["cancelled"]) == (0, 1, 2)


def test_status_is_readable_at_80_columns_and_wide_shows_everything(db_url):
    submit_runs(db_url, sweep="long", experiments=["lesion-segmentation-a"],
                encoders=["efficientnet-b0", "resnext50_32x4d"], inits=["imagenet"])  # fmt: skip
    env = {**os.environ, "COLUMNS": "80"}
    command = [sys.executable, "-m", "worker.cli", "status", "--db", db_url, "--sweep", "long"]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out.stdout
    for word in ("lesion-a", "efficientnet-b0", "resnext50_32x4d", "imagenet", "queued", "0/4"):
        assert word in out.stdout, word
    assert "epoch(s) left" in out.stdout and "`segbench worker`" in out.stdout

    wide = subprocess.run(
        [*command, "--wide"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert "lesion-segmentation-a" in wide.stdout and "Spec %" in wide.stdout
