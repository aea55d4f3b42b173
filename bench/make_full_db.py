"""Build, once, a database holding the whole 600-run benchmark at the paper's scale.

Sweep "bench-synthetic": every run of db.grid.expand(), 200 epochs each (120k
epoch rows), 829 test slices each (~490k slice rows), test summaries, checkpoints,
one gallery mask per run and first-layer filters of the Unet-resnet18 runs. The
numbers are random but plausible (the paper's means per experiment and
architecture plus noise); the dataset is labelled synthetic, as it is.
Most runs succeeded; a few are running and a few failed, so the live pages have
something to show.

The schema comes from Alembic; the rows go in by executemany (SQLite) or COPY
(PostgreSQL). A complete database is reused; an incomplete one is rebuilt.

    python bench/make_full_db.py [--sqlite PATH] [--pg-server URL] [--no-pg]
"""

from __future__ import annotations

import argparse
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from sqlalchemy import bindparam, func, insert, select, update

from db import jobs, migrate
from db.engine import make_engine, stamped_revision
from db.grid import expand
from db.models import Artifact, Epoch, Run, SliceResult, Sweep, TestSummary
from db.protocol import Protocol
from db.session import dispose_engine, session_scope

ROOT = Path(__file__).resolve().parent.parent
SQLITE_PATH = ROOT / ".bench-cache" / "segbench-bench.db"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
PG_DATABASE = "segbench_bench"
SWEEP = "bench-synthetic"
EPOCHS = 200
VOLUME_SLICES = (45, 39, 418, 39, 66, 42, 42, 93, 45)  # 9 test volumes, 829 slices
TEST_SLICES = sum(VOLUME_SLICES)
IMAGE_SIZE = 512
RUNNING = 4  # runs still training, at epoch RUNNING_EPOCH
RUNNING_EPOCH = 120
FAILED = 2  # runs that failed at epoch FAILED_EPOCH
FAILED_EPOCH = 37
DATASET = {
    "name": "bench-synthetic (generated stand-in)",
    "kind": "synthetic",
    "synthetic": True,
    "manifest_hash": "0" * 16,
}
# Paper: mean Dice per experiment, and per architecture (lung / lesion A / lesion B).
EXPERIMENT_DICE = {
    "lung-segmentation": 93.18,
    "lesion-segmentation-a": 85.47,
    "lesion-segmentation-b": 86.44,
}
ARCHITECTURE_DICE = {
    "unet": (93.77, 85.84, 86.86),
    "linknet": (93.96, 86.14, 86.5),
    "fpn": (92.9, 85.29, 86.52),
    "pspnet": (92.09, 84.61, 85.86),
}


def pg_url(server: str = PG_SERVER) -> str:
    return server.rsplit("/", 1)[0] + f"/{PG_DATABASE}"


def expected_counts() -> dict[str, int]:
    runs = len(expand())
    done = runs - RUNNING - FAILED
    return {
        "runs": runs,
        "epochs": done * EPOCHS + RUNNING * RUNNING_EPOCH + FAILED * FAILED_EPOCH,
        "slice_results": done * TEST_SLICES,
    }


def counts(url: str) -> dict[str, int]:
    with session_scope(url) as session:
        return {
            "runs": session.scalar(select(func.count(Run.id))),
            "epochs": session.scalar(select(func.count()).select_from(Epoch)),
            "slice_results": session.scalar(select(func.count()).select_from(SliceResult)),
        }


def is_complete(url: str) -> bool:
    try:
        if stamped_revision(url) != migrate.head_revision():
            return False
        return counts(url) == expected_counts()
    except Exception:
        return False


def _reset(url: str, server: str) -> None:
    dispose_engine(url)
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{PG_DATABASE}"')


def _dice(rng: np.random.Generator, experiment: str, architecture: str) -> float:
    column = list(EXPERIMENT_DICE).index(experiment)
    return float(ARCHITECTURE_DICE[architecture][column] + rng.normal(0, 1.2))


def _bulk(url: str, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Insert many rows fast: executemany on SQLite, COPY on PostgreSQL."""
    raw = make_engine(url).raw_connection()
    try:
        cursor = raw.cursor()
        if url.startswith("sqlite"):
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        else:
            _skip_foreign_key_checks(raw)
            buffer = io.StringIO()
            for row in rows:
                buffer.write("\t".join(_copy_text(v) for v in row))
                buffer.write("\n")
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                copy.write(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()


def _skip_foreign_key_checks(raw) -> None:
    """The generated rows are consistent by construction; checking 500k foreign keys
    one by one would triple the build time. For this transaction only; needs a
    superuser, skipped otherwise."""
    try:
        raw.cursor().execute("SET LOCAL session_replication_role = replica")
    except psycopg.Error:
        raw.rollback()


def _copy_text(value: object) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _stamp(url: str, when: datetime) -> str:
    # what SQLAlchemy's UTC type stores: SQLite keeps naive UTC text
    if url.startswith("sqlite"):
        return when.strftime("%Y-%m-%d %H:%M:%S.%f")
    return when.isoformat()


def build(url: str, *, server: str = PG_SERVER, force: bool = False) -> float:
    """Make `url` hold the full benchmark; returns the seconds spent (0 when cached)."""
    if not force and is_complete(url):
        return 0.0
    started = time.perf_counter()
    _reset(url, server)
    migrate.upgrade(url)
    specs = expand()
    protocol = Protocol(epochs=EPOCHS)
    with session_scope(url) as session:
        ids = jobs.submit(
            session, specs=specs, protocol=protocol, sweep=SWEEP, data_dir="data", dataset=DATASET
        )
    rng = np.random.default_rng(2020)
    n = len(ids)
    running = set(ids[3 : 3 + RUNNING])
    failed = set(ids[-FAILED:])
    now = datetime.now(UTC)

    # epochs: exponential-ish decay with noise, val a little above train
    epoch_rows = []
    recorded = _stamp(url, now)
    for run_id in ids:
        last = RUNNING_EPOCH if run_id in running else FAILED_EPOCH if run_id in failed else EPOCHS
        e = np.arange(1, last + 1)
        tau = rng.uniform(10, 40)
        train = 0.05 + 0.9 * np.exp(-e / tau) + rng.normal(0, 0.01, last)
        val = train + 0.03 + rng.normal(0, 0.02, last)
        best = np.minimum.accumulate(val) == val
        seconds = rng.uniform(5, 60)
        epoch_rows += [
            (run_id, int(k), float(t), float(v), seconds, seconds / 5, bool(b), recorded)
            for k, t, v, b in zip(e, train, val, best, strict=True)
        ]
    _bulk(
        url,
        "epochs",
        [
            "run_id",
            "epoch",
            "train_loss",
            "val_loss",
            "train_seconds",
            "val_seconds",
            "is_best",
            "recorded_at",
        ],
        [(*r[:6], int(r[6]) if url.startswith("sqlite") else r[6], r[7]) for r in epoch_rows],
    )

    done = [run_id for run_id in ids if run_id not in running and run_id not in failed]
    volume = np.repeat(np.arange(len(VOLUME_SLICES)), VOLUME_SLICES)
    within = np.concatenate([np.arange(k) for k in VOLUME_SLICES])
    pixels = IMAGE_SIZE * IMAGE_SIZE
    slice_rows = []
    for run_id in done:
        tp = rng.integers(0, 30000, TEST_SLICES)
        fp = rng.integers(0, 2000, TEST_SLICES)
        fn = rng.integers(0, 2000, TEST_SLICES)
        tn = pixels - tp - fp - fn
        slice_rows += zip(
            [run_id] * TEST_SLICES,
            range(TEST_SLICES),
            volume.tolist(),
            within.tolist(),
            tp.tolist(),
            fp.tolist(),
            fn.tolist(),
            tn.tolist(),
            strict=True,
        )
    _bulk(
        url,
        "slice_results",
        ["run_id", "idx", "volume", "slice", "tp", "fp", "fn", "tn"],
        slice_rows,
    )

    by_id = dict(zip(ids, specs, strict=True))
    summaries, run_updates, artifacts = [], [], []
    mask = np.packbits(rng.random((IMAGE_SIZE, IMAGE_SIZE)) < 0.2).tobytes()
    for run_id in ids:
        spec = by_id[run_id]
        params = float(rng.uniform(2, 70))
        state = "running" if run_id in running else "failed" if run_id in failed else "succeeded"
        last = {"running": RUNNING_EPOCH, "failed": FAILED_EPOCH, "succeeded": EPOCHS}[state]
        run_updates.append(
            {
                "rid": run_id,
                "status": state,
                "attempts": 1,
                "epoch": last,
                "parameters_m": params,
                "best_epoch": int(rng.integers(1, last + 1)),
                "best_val_loss": float(rng.uniform(0.05, 0.3)),
                "train_seconds_per_epoch": float(rng.uniform(5, 60)),
                "val_seconds_per_epoch": float(rng.uniform(1, 12)),
                "worker": f"gpu-{run_id % 8}:{1000 + run_id}",
                "started_at": now - timedelta(hours=3),
                "heartbeat_at": now - timedelta(seconds=30),
                "lease_expires_at": now + timedelta(minutes=9) if state == "running" else None,
                "finished_at": None if state == "running" else now - timedelta(minutes=run_id),
                "error": "CUDA out of memory (generated)" if state == "failed" else None,
            }
        )
        if state != "succeeded":
            continue
        dice = _dice(rng, spec.experiment, spec.architecture)
        summaries.append(
            {
                "run_id": run_id,
                "metric_mode": "standard",
                "sensitivity": float(min(dice + rng.normal(1, 1), 100)),
                "specificity": float(rng.uniform(99, 100)),
                "dice": dice,
                "dice_std": float(rng.uniform(5, 20)),
                "pooled_dice": float(min(dice + rng.normal(0.5, 0.5), 100)),
                "seconds": float(rng.uniform(20, 90)),
            }
        )
        artifact = {"run_id": run_id, "created_at": now, "sha256": None, "data": None}
        artifacts.append(
            {
                **artifact,
                "kind": "checkpoint",
                "key": "best",
                "path": f"artifacts/{SWEEP}/{run_id}/checkpoint_best",
                "shape": None,
            }
        )
        artifacts.append(
            {
                **artifact,
                "kind": "gallery_mask",
                "key": "300",
                "path": None,
                "data": mask,
                "shape": [IMAGE_SIZE, IMAGE_SIZE],
            }
        )
        if (spec.architecture, spec.encoder) == ("unet", "resnet18"):
            for kind in ("first_layer_before", "first_layer_after"):
                weights = rng.normal(0, 0.1, (64, 1, 7, 7)).astype(np.float32)
                artifacts.append(
                    {
                        **artifact,
                        "kind": kind,
                        "key": "",
                        "path": None,
                        "data": weights.tobytes(),
                        "shape": [64, 1, 7, 7],
                    }
                )
    with session_scope(url) as session:
        session.execute(
            update(Run.__table__).where(Run.__table__.c.id == bindparam("rid")),
            run_updates,
        )
        session.execute(insert(TestSummary.__table__), summaries)
        session.execute(insert(Artifact.__table__), artifacts)
    with make_engine(url).connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    assert n == len(expand())
    return time.perf_counter() - started


def sweep_run_ids(url: str) -> list[int]:
    with session_scope(url) as session:
        sweep_id = session.scalar(select(Sweep.id).where(Sweep.name == SWEEP))
        return list(
            session.scalars(select(Run.id).where(Run.sweep_id == sweep_id).order_by(Run.id))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", default=str(SQLITE_PATH), help="SQLite file to build")
    parser.add_argument("--pg-server", default=PG_SERVER, help="a PostgreSQL URL to create from")
    parser.add_argument("--no-pg", action="store_true", help="build the SQLite file only")
    parser.add_argument("--force", action="store_true", help="rebuild even when complete")
    args = parser.parse_args()
    urls = [f"sqlite:///{args.sqlite}"] + ([] if args.no_pg else [pg_url(args.pg_server)])
    for url in urls:
        seconds = build(url, server=args.pg_server, force=args.force)
        state = f"built in {seconds:.1f} s" if seconds else "cached"
        print(f"{url}: {state}, {counts(url)}")


if __name__ == "__main__":
    main()
