"""Runs made through db.jobs, as a worker makes them, with made-up numbers: submitted
sweeps, finished runs (finished_run), epoch records and run outcomes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db import jobs
from db.grid import RunSpec, expand
from db.protocol import (
    EpochRecord,
    Protocol,
    RunOutcome,
    SliceCounts,
    TestResult,
    VolumeMetrics,
    environment_key,
)
from db.session import session_scope
from worker.training import metrics

DATASET = {"name": "synthetic-test", "kind": "synthetic", "synthetic": True, "manifest_hash": "m1"}
PROTOCOL = Protocol(epochs=4, image_size=64)
SWEEP = "test-sweep"
# what a RunOutcome holds besides its test results, when a test reads only those
RUN_FIELDS = {
    "best_epoch": 1,
    "best_val_loss": 0.2,
    "parameters_m": 1.0,
    "train_seconds_per_epoch": 1.0,
    "val_seconds_per_epoch": 0.1,
    "checkpoint_dir": "x",
    "checkpoint_sha256": "0" * 64,
}


def submit_runs(url: str, n: int | None = None, sweep: str = SWEEP, **filters) -> list[int]:
    specs = expand(**filters)[:n]
    with session_scope(url) as session:
        return jobs.submit(
            session, specs=specs, protocol=PROTOCOL, sweep=sweep, data_dir="data", dataset=DATASET
        )


def finished_run(
    session: Session,
    run: RunSpec | int,
    outcome: RunOutcome | None = None,
    *,
    epochs: Iterable[EpochRecord] = (),
    config: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
    worker: str = "pytest",
    protocol: Protocol = PROTOCOL,
    sweep: str = SWEEP,
    dataset: dict[str, Any] = DATASET,
    data_dir: str = "data",
    seed: int | None = None,
) -> int:
    """A run taken the whole way as a worker takes it, in the caller's transaction:
    submitted (unless `run` is the id of a submitted run; `protocol`, `sweep`,
    `dataset`, `data_dir` and `seed` are for the submit), claimed by `worker`,
    started with `config` (record_start, when given), its `epochs` recorded, and
    finished with `outcome` (make_outcome() by default). `environment`: where it
    trained, kept in its start config and its outcome as a worker keeps it. Returns
    the run's id."""
    if not isinstance(run, int):
        seeds = None if seed is None else [seed]
        (run,) = jobs.submit(
            session, specs=[run], protocol=protocol, sweep=sweep, data_dir=data_dir,
            dataset=dataset, seeds=seeds,
        )  # fmt: skip
    claimed = jobs.claim(session, run_id=run, worker=worker)
    assert claimed is not None, f"run {run} is not claimable"
    if outcome is None:
        outcome = make_outcome()
    if environment is not None:
        key = environment_key(environment)
        config = {**(config or {}), "environment": environment, "environment_key": key}
        outcome = replace(outcome, environment=environment)
    if config is not None:
        jobs.record_start(session, run_id=run, config=config)
    for record in epochs:
        jobs.record_epoch(session, run_id=run, record=record)
    jobs.finish(session, run_id=run, outcome=outcome)
    return run


def outcome_of(test: TestResult, **fields: Any) -> RunOutcome:
    """`test` as a finished run's outcome: RUN_FIELDS, `fields` overriding them."""
    return RunOutcome(test=test, **{**RUN_FIELDS, **fields})


def counted_result(counts: np.ndarray, per_volume: int, mode: str = "standard") -> TestResult:
    """Test results as evaluate builds them from per-slice counts (rows tp, fp, fn, tn),
    the slices `per_volume` to a test volume; a metric of the registry without a field
    of TestResult goes to its `extra`."""
    slices = [
        SliceCounts(i, i // per_volume, i % per_volume, *map(int, row))
        for i, row in enumerate(counts)
    ]
    fields = metrics.result_fields(metrics.summarize(counts, mode))
    return TestResult(slices=slices, metric_mode=mode, **fields)


def epoch_record(epoch: int, val_loss: float = 0.5, is_best: bool = True) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        train_loss=val_loss + 0.1,
        val_loss=val_loss,
        train_seconds=2.0,
        val_seconds=0.5,
        is_best=is_best,
    )


def make_outcome(n_slices: int = 12, dice: float | None = 90.0) -> RunOutcome:
    slices = [
        SliceCounts(i, i // 4, i % 4, tp=10 + i, fp=i, fn=2, tn=1000) for i in range(n_slices)
    ]
    test = TestResult(
        slices=slices,
        sensitivity=91.0,
        specificity=99.0,
        dice=dice,
        dice_std=2.0,
        pooled_dice=89.0,
        metric_mode="standard",
        seconds=3.0,
        # volume v: NSD 80 + v %, HD95 2 + v mm; the last volume's HD95 undefined (NaN)
        volumes=[
            VolumeMetrics(v, min(4, n_slices - 4 * v), 85.0 + v, 80.0 + v, 2.0 + v)
            for v in range((n_slices + 3) // 4)
        ],
        nsd=81.0,
        hd95=2.5,
    )
    test.volumes[-1].hd95 = float("nan")
    return RunOutcome(
        test=test,
        best_epoch=3,
        best_val_loss=0.2,
        parameters_m=14.3,
        train_seconds_per_epoch=2.0,
        val_seconds_per_epoch=0.5,
        checkpoint_dir="artifacts/run-1/checkpoint_best",
        checkpoint_sha256="ab" * 32,
        gallery={5: b"\x0f" * 8, 7: b"\xf0" * 8},
        gallery_shape=(8, 8),
        first_layer_before=b"\x00" * 16,
        first_layer_after=b"\x01" * 16,
        first_layer_shape=(1, 1, 2, 2),
    )
