"""What the job queue's database work costs for the whole 600-run benchmark.

On a fresh database (SQLite file; PostgreSQL at 127.0.0.1:5432 too with
--postgres): submit all 600 runs of the grid in one call, claim each of them
(one conditional UPDATE each), then for a representative subset of runs do what
a worker's DbRecorder does for a run: start (config row), every epoch an epoch
row + lease heartbeat and a cancel check, and finish (829 per-slice rows, the
summary, 4 gallery masks of 512x512, first-layer filters). Epochs and starts /
finishes of the subset are scaled up to 600 runs x 200 epochs (the subset's
per-call cost times the full count; said in the table).

Shows the queue is negligible against training: the 6-hour goal leaves each run
36 s of one GPU. Last line: `seconds per run: S` (largest over back ends).

    python bench/queue_costs.py [--quick] [--postgres] [--runs 30] [--epochs 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from db import jobs, migrate  # noqa: E402
from db.grid import expand  # noqa: E402
from db.protocol import (  # noqa: E402
    EpochRecord,
    Protocol,
    RunOutcome,
    SliceCounts,
    TestResult,
)
from db.session import dispose_engine, session_scope  # noqa: E402
from worker.queue.lease import DbRecorder  # noqa: E402

PG_SERVER = os.environ.get("SEGBENCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
FULL_RUNS, FULL_EPOCHS, TEST_SLICES, GOAL_SECONDS_PER_RUN = 600, 200, 829, 6 * 3600 / 600
DATASET = {"name": "queue-bench", "kind": "synthetic", "synthetic": True, "manifest_hash": "q"}


def outcome(rng: np.random.Generator) -> RunOutcome:
    """A finished run of the paper's size (829 test slices at 512 px)."""
    slices = [
        SliceCounts(i, i // 100, i % 100, *map(int, rng.integers(0, 5000, 3)), 250_000)
        for i in range(TEST_SLICES)
    ]
    mask = np.packbits(rng.random(512 * 512) < 0.2).tobytes()
    filters = rng.standard_normal(64 * 49).astype(np.float32).tobytes()
    return RunOutcome(
        test=TestResult(slices, 90.0, 99.0, 85.0, 10.0, 86.0, "standard", 12.0),
        best_epoch=150,
        best_val_loss=0.1,
        parameters_m=14.3,
        train_seconds_per_epoch=10.0,
        val_seconds_per_epoch=1.0,
        checkpoint_dir="artifacts/1/checkpoint_best",
        checkpoint_sha256="0" * 64,
        gallery={i: mask for i in (10, 200, 400, 600)},
        gallery_shape=(512, 512),
        first_layer_before=filters,
        first_layer_after=filters,
        first_layer_shape=(64, 1, 7, 7),
    )


def measure(url: str, runs: int, epochs: int) -> dict[str, tuple[int, float, int]]:
    """operation -> (calls measured, seconds, calls in the full benchmark)."""
    migrate.upgrade(url)
    specs = expand()
    started = time.perf_counter()
    with session_scope(url) as session:
        ids = jobs.submit(
            session,
            specs=specs,
            protocol=Protocol(epochs=FULL_EPOCHS),
            sweep="queue-bench",
            data_dir="data",
            dataset=DATASET,
        )
    submit = time.perf_counter() - started
    started = time.perf_counter()
    for run_id in ids:
        with session_scope(url) as session:
            assert jobs.claim(session, run_id=run_id, worker="bench") is not None
    claim = time.perf_counter() - started

    rng = np.random.default_rng(0)
    spent = {"start": 0.0, "epoch": 0.0, "finish": 0.0}
    chosen = ids[:: max(1, len(ids) // runs)][:runs]
    config = {"run": {}, "protocol": {}, "device": "bench", "parameters_m": 14.3}
    for run_id in chosen:
        recorder = DbRecorder(url, run_id)
        t = time.perf_counter()
        recorder.start(config | {"dataset": DATASET})
        spent["start"] += time.perf_counter() - t
        t = time.perf_counter()
        for epoch in range(1, epochs + 1):
            recorder.epoch(EpochRecord(epoch, 0.3, 0.2, 10.0, 1.0, epoch % 7 == 0))
            recorder.cancelled()
        spent["epoch"] += time.perf_counter() - t
        done = outcome(rng)
        t = time.perf_counter()
        recorder.finish(done)
        spent["finish"] += time.perf_counter() - t
    dispose_engine(url)
    n = len(chosen)
    return {
        "submit 600 runs (one call)": (1, submit, 1),
        "claim": (len(ids), claim, FULL_RUNS),
        "start (config row)": (n, spent["start"], FULL_RUNS),
        "epoch row + heartbeat + cancel check": (
            n * epochs,
            spent["epoch"],
            FULL_RUNS * FULL_EPOCHS,
        ),
        "finish (829 slice rows, masks, filters)": (n, spent["finish"], FULL_RUNS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 runs x 20 epochs recorded")
    parser.add_argument("--postgres", action="store_true", help=f"also on {PG_SERVER}")
    parser.add_argument("--runs", type=int, help="runs recorded end to end (default 30)")
    parser.add_argument("--epochs", type=int, help="epochs recorded per run (default 200)")
    args = parser.parse_args()
    runs = args.runs or (6 if args.quick else 30)
    epochs = args.epochs or (20 if args.quick else FULL_EPOCHS)

    results = {}
    with tempfile.TemporaryDirectory(prefix="segbench-queue-") as tmp:
        results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'queue.db'}", runs, epochs)
    if args.postgres:
        import psycopg

        name = f"segbench_bench_queue_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_SERVER, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
        try:
            results["postgresql"] = measure(url, runs, epochs)
        finally:
            dispose_engine(url)
            with psycopg.connect(PG_SERVER, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"600 runs submitted and claimed; {runs} of them recorded end to end with {epochs} "
        f"epochs each, scaled to 600 runs x {FULL_EPOCHS} epochs; CPU ({os.cpu_count()} "
        f"cores, load average {load})"
    )
    per_run = {}
    for backend, rows in results.items():
        header = f"{backend + ': operation':<44}{'calls':>8}{'ms/call':>9}{'full bench s':>14}"
        print(header)
        print("-" * len(header))
        total = 0.0
        for name, (calls, seconds, full_calls) in rows.items():
            full = seconds / calls * full_calls
            total += full
            print(f"{name:<44}{calls:>8}{1000 * seconds / calls:>9.2f}{full:>14.1f}")
        per_run[backend] = total / FULL_RUNS
        print(
            f"{'total':<61}{total:>14.1f}  = {per_run[backend]:.2f} s per run, "
            f"{100 * per_run[backend] / GOAL_SECONDS_PER_RUN:.2f}% of the "
            f"{GOAL_SECONDS_PER_RUN:.0f} s a run gets in the 6 h goal"
        )
    print(f"seconds per run: {max(per_run.values()):.3f}")


if __name__ == "__main__":
    main()
