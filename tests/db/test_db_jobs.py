"""The run state machine (db.jobs) on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db import jobs
from db.errors import SweepConflict, UnknownRun, UnknownSweep
from db.grid import expand
from db.models import Artifact, Epoch, Run, SliceResult, Sweep, TestSummary, VolumeResult, utcnow
from db.protocol import Protocol
from db.session import session_scope
from tests.support.runs import DATASET, PROTOCOL, epoch_record, make_outcome, submit_runs
from worker.queue.lease import DbRecorder


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def run_row(url: str, run_id: int) -> Run:
    with session_scope(url) as session:
        return session.get(Run, run_id)


def claim(url: str, run_id: int, worker: str = "w1", **kwargs):
    with session_scope(url) as session:
        return jobs.claim(session, run_id=run_id, worker=worker, **kwargs)


def expire_leases(url: str) -> None:
    with session_scope(url) as session:
        session.execute(update(Run).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_submit_is_idempotent(db_url):
    ids = submit_runs(db_url, 10)
    assert len(set(ids)) == 10
    assert submit_runs(db_url, 10) == ids
    assert submit_runs(db_url, 4) == ids[:4]
    with session_scope(db_url) as session:
        assert count(session, Run) == 10
        assert count(session, Sweep) == 1
        run = session.get(Run, ids[0])
        spec = expand()[0]
        assert (run.experiment, run.architecture, run.encoder, run.init) == (
            spec.experiment,
            spec.architecture,
            spec.encoder,
            spec.init,
        )
        assert (run.status, run.attempts, run.epoch, run.epochs) == ("queued", 0, 0, 4)
        assert run.family == spec.family and run.synthetic and run.dataset_name == "synthetic-test"


def test_submit_with_another_protocol_under_the_same_sweep_is_refused(db_url):
    submit_runs(db_url, 2)
    with session_scope(db_url) as session, pytest.raises(SweepConflict, match="test-sweep"):
        jobs.submit(
            session,
            specs=expand()[:2],
            protocol=Protocol(epochs=5, image_size=64),
            sweep="test-sweep",
            data_dir="data",
            dataset=DATASET,
        )


def test_claim_once_then_nothing(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claimed = claim(db_url, run_id, lease_seconds=60)
    assert claimed.run_id == run_id and claimed.attempts == 1 and claimed.epoch == 0
    assert claimed.protocol == PROTOCOL and claimed.spec == expand()[0]
    assert claimed.sweep == "test-sweep" and claimed.synthetic
    assert claim(db_url, run_id, worker="w2") is None
    run = run_row(db_url, run_id)
    assert (run.status, run.worker, run.attempts) == ("running", "w1", 1)
    assert run.lease_expires_at > utcnow() + timedelta(seconds=50)


def test_expired_lease_is_claimable_and_counts_an_attempt(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id, lease_seconds=0)
    time.sleep(0.01)
    again = claim(db_url, run_id, worker="w2", lease_seconds=60, max_attempts=3)
    assert again is not None and again.attempts == 2 and again.worker == "w2"
    assert claim(db_url, run_id, worker="w3") is None


def test_heartbeat_extends_the_lease_of_its_worker_only(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id, lease_seconds=1)
    with session_scope(db_url) as session:
        assert jobs.heartbeat(session, run_id=run_id, worker="w1", lease_seconds=300)
        assert not jobs.heartbeat(session, run_id=run_id, worker="other", lease_seconds=300)
    assert run_row(db_url, run_id).lease_expires_at > utcnow() + timedelta(seconds=250)


def test_requeue_expired_and_max_attempts(db_url):
    a, b, c = submit_runs(db_url, 3)
    for run_id in (a, b, c):
        claim(db_url, run_id, lease_seconds=600)
    with session_scope(db_url) as session:
        session.execute(
            update(Run).where(Run.id == b).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        assert jobs.requeue_expired(session, max_attempts=2) == ([b], [])
    assert run_row(db_url, b).status == "queued" and run_row(db_url, b).attempts == 1
    assert run_row(db_url, a).status == "running"
    claim(db_url, b, lease_seconds=600, max_attempts=2)
    expire_leases(db_url)
    # out of attempts: not claimable, and requeue_expired gives up on it
    assert claim(db_url, b, worker="w9", max_attempts=2) is None
    with session_scope(db_url) as session:
        requeued, failed = jobs.requeue_expired(session, max_attempts=2)
    assert (requeued, failed) == ([a, c], [b])
    run = run_row(db_url, b)
    assert run.status == "failed" and run.error.startswith("gave up after 2 attempts")
    assert run.lease_expires_at is None


def test_cancel_queued_at_once_and_running_at_epoch_end(db_url):
    queued, running = submit_runs(db_url, 2)
    claim(db_url, running)
    with session_scope(db_url) as session:
        result = jobs.cancel(session, run_ids=[queued, running])
    assert result == {"cancelled": [queued], "requested": [running]}
    assert run_row(db_url, queued).status == "cancelled"
    assert claim(db_url, queued) is None
    recorder = DbRecorder(db_url, running)
    assert recorder.cancelled()
    assert run_row(db_url, running).status == "running"
    with session_scope(db_url) as session:
        assert jobs.mark_cancelled(session, run_id=running)
    assert run_row(db_url, running).status == "cancelled"


def test_retry_requeues_failed_and_cancelled_with_attempts_reset(db_url):
    failed, cancelled, succeeded = submit_runs(db_url, 3)
    for run_id in (failed, succeeded):
        claim(db_url, run_id)
    with session_scope(db_url) as session:
        assert jobs.fail(session, run_id=failed, reason="CUDA out of memory")
        jobs.cancel(session, run_ids=[cancelled])
        jobs.finish(session, run_id=succeeded, outcome=make_outcome())
    failed_run = run_row(db_url, failed)
    assert failed_run.status == "failed" and failed_run.error == "CUDA out of memory"
    with session_scope(db_url) as session:
        assert jobs.retry(session, sweep="test-sweep") == [failed, cancelled]
    for run_id in (failed, cancelled):
        run = run_row(db_url, run_id)
        assert (run.status, run.attempts, run.cancel_requested, run.error) == (
            "queued",
            0,
            False,
            None,
        )
        assert claim(db_url, run_id) is not None
    assert run_row(db_url, succeeded).status == "succeeded"


def test_epoch_upsert_and_run_progress(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id, lease_seconds=1)
    recorder = DbRecorder(db_url, run_id, lease_seconds=500)
    recorder.epoch(epoch_record(1, 0.5))
    recorder.epoch(epoch_record(2, 0.6, is_best=False))
    recorder.epoch(epoch_record(2, 0.4, is_best=True))  # repeated after a resume
    with session_scope(db_url) as session:
        rows = session.scalars(select(Epoch).order_by(Epoch.epoch)).all()
        assert [(r.epoch, r.val_loss, r.is_best) for r in rows] == [(1, 0.5, True), (2, 0.4, True)]
    run = run_row(db_url, run_id)
    assert (run.epoch, run.best_epoch, run.best_val_loss) == (2, 2, 0.4)
    assert run.lease_expires_at > utcnow() + timedelta(seconds=400)


def test_record_start_keeps_the_config(db_url):
    (run_id,) = submit_runs(db_url, 1)
    config = {
        "spec": expand()[0].to_dict(),
        "library_versions": {"torch": "2.14.1"},
        "git_commit": "abc123",
        "device": "cpu",
        "parameters_m": 14.3,
        "dataset": {"name": "medseg", "kind": "real", "synthetic": False, "manifest_hash": "f00"},
        "resumed_from": None,
    }
    DbRecorder(db_url, run_id).start(config)
    run = run_row(db_url, run_id)
    assert run.config == config and run.library_versions == {"torch": "2.14.1"}
    assert (run.git_commit, run.device, run.parameters_m) == ("abc123", "cpu", 14.3)
    assert (run.dataset_name, run.synthetic, run.manifest_hash) == ("medseg", False, "f00")


def test_finish_writes_everything_and_replaces_earlier_results(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id)
    DbRecorder(db_url, run_id).finish(make_outcome(n_slices=12))
    DbRecorder(db_url, run_id).finish(make_outcome(n_slices=10))
    with session_scope(db_url) as session:
        assert count(session, SliceResult) == 10
        summary = session.get(TestSummary, run_id)
        assert (summary.dice, summary.nsd, summary.hd95) == (90.0, 81.0, 2.5)
        volumes = session.execute(
            select(VolumeResult.volume, VolumeResult.slices, VolumeResult.dice)
            .add_columns(VolumeResult.nsd, VolumeResult.hd95)
            .order_by(VolumeResult.volume)
        ).all()
        # 3 volumes of the second outcome (12 slices gave 3 too, replaced); NaN -> NULL
        assert [tuple(v) for v in volumes] == [
            (0, 4, 85.0, 80.0, 2.0),
            (1, 4, 86.0, 81.0, 3.0),
            (2, 2, 87.0, 82.0, None),
        ]
        kinds = session.execute(select(Artifact.kind, Artifact.key, Artifact.data)).all()
        assert sorted((k, key) for k, key, _ in kinds) == [
            ("checkpoint", "best"),
            ("first_layer_after", ""),
            ("first_layer_before", ""),
            ("gallery_mask", "5"),
            ("gallery_mask", "7"),
        ]
    run = run_row(db_url, run_id)
    assert (run.status, run.best_epoch, run.parameters_m) == ("succeeded", 3, 14.3)
    assert run.finished_at is not None and run.lease_expires_at is None


def test_a_failure_inside_finish_leaves_no_partial_rows(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id)
    with pytest.raises(Exception):  # noqa: B017 - NOT NULL violation, driver-specific class
        DbRecorder(db_url, run_id).finish(make_outcome(dice=None))
    with session_scope(db_url) as session:
        assert count(session, SliceResult) == 0
        assert count(session, TestSummary) == 0
        assert count(session, VolumeResult) == 0
        assert count(session, Artifact) == 0
    assert run_row(db_url, run_id).status == "running"


def test_unknown_run_ids_and_sweeps_are_one_clear_sentence(db_url):
    submit_runs(db_url, 1)
    calls = [
        lambda s: jobs.claim(s, run_id=424242, worker="w"),
        lambda s: jobs.heartbeat(s, run_id=424242),
        lambda s: jobs.record_epoch(s, run_id=424242, record=epoch_record(1)),
        lambda s: jobs.is_cancel_requested(s, run_id=424242),
        lambda s: jobs.record_start(s, run_id=424242, config={}),
        lambda s: jobs.finish(s, run_id=424242, outcome=make_outcome()),
        lambda s: jobs.fail(s, run_id=424242, reason="x"),
        lambda s: jobs.cancel(s, run_ids=[424242]),
        lambda s: jobs.retry(s, run_ids=[424242]),
    ]
    for call in calls:
        with session_scope(db_url) as session, pytest.raises(UnknownRun, match="424242"):
            call(session)
    with session_scope(db_url) as session, pytest.raises(UnknownSweep, match="test-sweep"):
        jobs.cancel(session, sweep="no-such-sweep")


def test_a_diverged_loss_is_stored_as_null_on_every_backend(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id, lease_seconds=60)
    recorder = DbRecorder(db_url, run_id)
    nan = float("nan")
    recorder.epoch(epoch_record(1, 0.5))
    recorder.epoch(epoch_record(2, nan, is_best=False))
    with session_scope(db_url) as session:
        rows = session.scalars(select(Epoch).order_by(Epoch.epoch)).all()
        assert [(r.epoch, r.val_loss) for r in rows] == [(1, 0.5), (2, None)]
        assert rows[1].train_loss is None  # NaN + 0.1 is NaN too


def test_the_epoch_write_carries_the_cancel_flag(db_url):
    (run_id,) = submit_runs(db_url, 1)
    claim(db_url, run_id, lease_seconds=60)
    recorder = DbRecorder(db_url, run_id)
    recorder.epoch(epoch_record(1))
    assert recorder.cancelled() is False
    with session_scope(db_url) as session:
        jobs.cancel(session, run_ids=[run_id])
    assert recorder.cancelled() is True  # no epoch in between: read from the database
    recorder.epoch(epoch_record(2))
    assert recorder.cancelled() is True  # read by the epoch's own write
    with session_scope(db_url) as session, pytest.raises(UnknownRun):
        jobs.record_epoch(session, run_id=run_id + 999, record=epoch_record(1))
