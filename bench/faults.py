"""Faults the queue must survive, against real `segbench worker` processes.

Each scenario starts a fresh deployment (the embedded default: SQLite + the SQLite
broker; with --postgres also PostgreSQL + a Redis server this script starts on a
free port, without persistence), trains tiny runs on GENERATED stand-in data with
the DEFAULT lease, heartbeat and reaper settings, injects one fault and waits for
the sweep to end. Per scenario it prints the seconds from the fault to the
affected run's next epoch row (or to the expected end), epoch rows lost (an epoch
of a succeeded run without its row), runs or rows present twice, and the final
statuses. Last line:

    faults survived: N/N, rows lost: 0, duplicated: 0, worst recovery: S s

    python bench/faults.py [--quick | --smoke] [--postgres] [--outage 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from db.models import Epoch, Run  # noqa: E402
from worker.data.synth import synth  # noqa: E402

PG_SERVER = os.environ.get("SEGBENCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CLI = [sys.executable, "-m", "worker.cli"]
RUN = ["-x", "lung-segmentation", "-a", "pspnet", "-e", "resnet18", "-i", "random"]
TIMEOUT_S = 300


@dataclass
class Deployment:
    name: str
    db_url: str
    broker_url: str
    home: Path
    env: dict[str, str]
    workers: list[subprocess.Popen] = field(default_factory=list)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def engine(self):
        return create_engine(self.db_url.replace("postgresql://", "postgresql+psycopg://"))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*CLI, *args], env=self.env, cwd=self.home, capture_output=True, text=True
        )
        if check and done.returncode:
            raise RuntimeError(f"segbench {' '.join(args)}: {done.stderr.strip()}")
        return done

    def submit(self, data: Path, epochs: int, sweep: str = "faults", extra=()) -> None:
        self.cli("submit", *RUN, *extra, "--epochs", str(epochs), "--image-size", "64",
                 "--data", str(data), "--sweep", sweep)  # fmt: skip

    def start_worker(self, **env: str) -> subprocess.Popen:
        log = open(self.home / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [*CLI, "worker", "--gpu", "none"], env={**self.env, **env}, cwd=self.home,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.workers.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def runs(self) -> list[dict]:
        engine = self.engine()
        try:
            with engine.connect() as c:
                rows = c.execute(
                    select(
                        Run.id,
                        Run.status,
                        Run.epoch,
                        Run.epochs,
                        Run.attempts,
                        Run.note,
                        Run.error,
                        Run.uid,
                        Run.worker,
                    )  # fmt: skip
                ).mappings()
                return [dict(r) for r in rows]
        finally:
            engine.dispose()

    def epochs(self) -> dict[int, set[int]]:
        engine = self.engine()
        try:
            with engine.connect() as c:
                out: dict[int, set[int]] = {}
                for run_id, epoch in c.execute(select(Epoch.run_id, Epoch.epoch)):
                    out.setdefault(run_id, set()).add(epoch)
                return out
        finally:
            engine.dispose()

    def duplicates(self) -> int:
        engine = self.engine()
        try:
            with engine.connect() as c:
                identity = (Run.sweep_id, Run.experiment, Run.architecture, Run.encoder, Run.init,
                            Run.seed, Run.protocol_hash)  # fmt: skip
                groups = (
                    select(func.count().label("n")).select_from(Run).group_by(*identity).subquery()
                )
                extra_runs = c.scalar(select(func.coalesce(func.sum(groups.c.n - 1), 0)))
                rows = c.scalar(select(func.count()).select_from(Epoch))
                distinct = c.scalar(
                    select(func.count()).select_from(
                        select(Epoch.run_id, Epoch.epoch).distinct().subquery()
                    )
                )
                return int(extra_runs) + int(rows - distinct)
        finally:
            engine.dispose()

    def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.25)
        raise TimeoutError("timed out")

    def finished(self) -> bool:
        return all(r["status"] not in ("queued", "running") for r in self.runs())

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                self.kill(process)
        for step in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                step()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def deploy(kind: str, home: Path) -> Deployment:
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBENCH_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SEGBENCH_DEVICE="cpu",
               SEGBENCH_ARTIFACTS_DIR=str(home / "artifacts"))  # fmt: skip
    cleanup: list[Callable[[], None]] = []
    if kind == "embedded":
        db_url = f"sqlite:///{home / 'segbench.db'}"
        broker_url = f"sqla+sqlite:///{home / 'segbench-broker.sqlite'}"
    else:
        name = f"segbench_faults_{uuid.uuid4().hex[:8]}"
        server = create_engine(PG_SERVER.replace("postgresql://", "postgresql+psycopg://"),
                               isolation_level="AUTOCOMMIT")  # fmt: skip
        with server.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            with server.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()

        cleanup.append(drop)
        db_url = PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
        port = free_port()
        redis = redis_server(port)
        cleanup.append(lambda: (redis.kill(), redis.wait(10)))
        broker_url = f"redis://127.0.0.1:{port}/0"
        env["SEGBENCH_REDIS_PORT"] = str(port)
    env.update(SEGBENCH_DATABASE_URL=db_url, SEGBENCH_BROKER_URL=broker_url)
    d = Deployment(kind, db_url, broker_url, home, env, cleanup=cleanup)
    d.cli("db", "upgrade")
    return d


# ---------------------------------------------------------------- scenarios
# Each takes (deployment, data, options) and returns the seconds from the fault to
# the affected run's next epoch row (or to the expected end).


def _next_epoch_after(d: Deployment, run_id: int, last: int) -> float:
    return d.wait(lambda: max(d.epochs().get(run_id, {0})) > last)


def _at_epoch(d: Deployment, n: int) -> dict:
    d.wait(lambda: any(r["epoch"] >= n for r in d.runs()))
    return next(r for r in d.runs() if r["epoch"] >= n)


def sigkill_worker(d, data, opts):
    d.submit(data, opts.epochs)
    first = d.start_worker()
    run = _at_epoch(d, 2)
    d.kill(first)
    started = time.monotonic()
    last = max(d.epochs()[run["id"]])
    d.start_worker()
    _next_epoch_after(d, run["id"], last)
    return time.monotonic() - started


def sigkill_pool_child(d, data, opts):
    d.submit(data, opts.epochs)
    worker = d.start_worker()
    run = _at_epoch(d, 2)
    child = int(run["worker"].rpartition("/")[2])
    os.kill(child, signal.SIGKILL)  # the main process lives on and starts a new child
    started = time.monotonic()
    last = max(d.epochs()[run["id"]])
    _next_epoch_after(d, run["id"], last)
    assert worker.poll() is None
    return time.monotonic() - started


def sigkill_in_checkpoint_write(d, data, opts):
    d.submit(data, opts.epochs)
    first = d.start_worker()
    _at_epoch(d, 1)
    folder_glob = d.home / "artifacts"
    deadline = time.monotonic() + TIMEOUT_S
    while not any(".tmp" in p.name for p in folder_glob.glob("*/*")):  # a write under way
        if time.monotonic() > deadline:
            raise TimeoutError("no checkpoint write seen")
        time.sleep(0.002)
    d.kill(first)
    started = time.monotonic()
    run = d.runs()[0]
    last = max(d.epochs()[run["id"]])
    d.start_worker()
    _next_epoch_after(d, run["id"], last)
    return time.monotonic() - started


def sigkill_at_a_random_point(d, data, opts):
    d.submit(data, opts.epochs)
    first = d.start_worker()
    _at_epoch(d, 1)
    time.sleep(random.Random(opts.seed).uniform(0.0, 3.0))
    d.kill(first)
    started = time.monotonic()
    d.start_worker()
    d.wait(d.finished)
    return time.monotonic() - started


def sigkill_during_results(d, data, opts):
    d.submit(data, opts.epochs)
    first = d.start_worker()
    _at_epoch(d, opts.epochs)  # the last epoch is recorded: testing and results follow
    d.kill(first)
    started = time.monotonic()
    d.start_worker()
    d.wait(d.finished)
    return time.monotonic() - started


def corrupt_latest_checkpoint(d, data, opts):
    d.submit(data, opts.epochs)
    first = d.start_worker()
    run = _at_epoch(d, 3)
    d.kill(first)
    # the newest checkpoint (a kill during its rotation leaves only the previous one)
    folder = next((d.home / "artifacts").glob("*/checkpoint_previous.pt")).parent
    newest = folder / "checkpoint_latest.pt"
    newest = newest if newest.exists() else folder / "checkpoint_previous.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
    last = max(d.epochs()[run["id"]])
    d.start_worker()
    recovery = d.wait(lambda: max(d.epochs().get(run["id"], {0})) > last)
    d.wait(d.finished)
    note = d.runs()[0]["note"] or ""
    assert "could not be read" in note, note
    return recovery


def database_outage(d, data, opts):
    d.submit(data, opts.epochs + 6)
    d.start_worker()
    _at_epoch(d, 1)
    started = time.monotonic()
    if d.name == "embedded":  # another writer holds the SQLite file's lock
        path = d.db_url.removeprefix("sqlite:///")
        locker = subprocess.Popen([sys.executable, "-c", (
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], timeout=60); "
            "c.execute('BEGIN EXCLUSIVE'); time.sleep(float(sys.argv[2])); c.rollback()"
        ), path, str(opts.outage)])  # fmt: skip
        locker.wait(opts.outage + 60)
    else:  # nobody may connect, and every connection is dropped
        name = d.db_url.rsplit("/", 1)[1]
        server = create_engine(PG_SERVER.replace("postgresql://", "postgresql+psycopg://"),
                               isolation_level="AUTOCOMMIT")  # fmt: skip
        with server.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           f"WHERE datname = '{name}'"))  # fmt: skip
            time.sleep(opts.outage)
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        server.dispose()
    d.wait(d.finished)
    run = d.runs()[0]
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    return time.monotonic() - started - opts.outage


def broker_restart(d, data, opts):
    d.submit(data, opts.epochs, extra=("-e", "mobilenet_v2"))
    d.start_worker()
    _at_epoch(d, 1)
    port = int(d.env["SEGBENCH_REDIS_PORT"])
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    started = time.monotonic()
    redis = redis_server(port)  # every message is gone
    d.cleanup.append(lambda: (redis.kill(), redis.wait(10)))
    d.wait(d.finished)
    return time.monotonic() - started


def concurrent_submits(d, data, opts):
    args = [*CLI, "submit", "-x", "lung-segmentation", "-a", "unet", "-a", "fpn", "--family",
            "resnet", "-i", "random", "--epochs", "1", "--image-size", "64", "--data", str(data),
            "--sweep", "same"]  # fmt: skip
    procs = [subprocess.Popen(args, env=d.env, cwd=d.home, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    errors = [p.stderr.read() for p in procs if p.wait(120)]
    assert not errors, errors
    runs = d.runs()
    assert len(runs) == 10 and {r["status"] for r in runs} == {"queued"}, runs
    return None  # nothing to recover from: no duplicate and no error is the result


def cancel_queued_and_running(d, data, opts):
    d.submit(data, opts.epochs + 40, extra=("-e", "mobilenet_v2"))  # outlasts a slow cancel
    d.start_worker()
    _at_epoch(d, 1)
    started = time.monotonic()
    d.cli("cancel", "--sweep", "faults")
    asked = {r["id"]: r["epoch"] for r in d.runs()}
    d.wait(d.finished)
    ended = {r["id"]: r for r in d.runs()}
    assert {r["status"] for r in ended.values()} == {"cancelled"}, ended
    for run_id, epoch in asked.items():  # stopped after the epoch it was in
        assert ended[run_id]["epoch"] <= epoch + 1, (asked, ended)
    return time.monotonic() - started


# The scenarios no test of tests/queue plays against a real worker: what --smoke runs
# (the test suite's check of this script; the full runs stay outside the default run).
SMOKE = ("SIGKILL inside a checkpoint write", "database unreachable (outage)",
         "same sweep submitted by 4 processes")  # fmt: skip

SCENARIOS = {
    "SIGKILL worker (main + pool)": (sigkill_worker, True),
    "SIGKILL pool process only": (sigkill_pool_child, True),
    "SIGKILL inside a checkpoint write": (sigkill_in_checkpoint_write, True),
    "SIGKILL at a random point": (sigkill_at_a_random_point, False),
    "SIGKILL while testing / writing results": (sigkill_during_results, False),
    "truncated latest checkpoint": (corrupt_latest_checkpoint, True),
    "database unreachable (outage)": (database_outage, True),
    "broker restarted, messages lost": (broker_restart, False),
    "same sweep submitted by 4 processes": (concurrent_submits, True),
    "cancel queued and running runs": (cancel_queued_and_running, True),
}


def run_scenario(kind: str, name: str, scenario, data: Path, opts, root: Path) -> dict:
    d = deploy(kind, root / f"{kind}-{len(list(root.iterdir()))}")
    row = {"deployment": kind, "fault": name, "recovery": None, "lost": 0, "dup": 0}
    try:
        row["recovery"] = scenario(d, data, opts)
        if scenario is not concurrent_submits:
            d.wait(d.finished)
        runs, epochs = d.runs(), d.epochs()
        row["lost"] = sum(
            len(set(range(1, r["epochs"] + 1)) - epochs.get(r["id"], set()))
            for r in runs
            if r["status"] == "succeeded"
        )
        row["dup"] = d.duplicates()
        row["status"] = ", ".join(sorted({r["status"] for r in runs}))
        row["ok"] = row["lost"] == 0 and row["dup"] == 0 and "failed" not in row["status"]
    except Exception as error:  # the scenario's expectation did not hold
        row.update(status=f"FAILED: {type(error).__name__}: {error}"[:160], ok=False)
    finally:
        d.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenarios, short outage")
    parser.add_argument(
        "--smoke", action="store_true", help="the 3 scenarios no queue test covers, 6 s outage"
    )
    parser.add_argument("--postgres", action="store_true", help="also PostgreSQL + Redis")
    parser.add_argument("--outage", type=float, default=None, help="database outage seconds")
    parser.add_argument("--epochs", type=int, default=None, help="per run (default 6, smoke 3)")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    default_outage = 6.0 if opts.smoke else 12.0 if opts.quick else 30.0
    opts.epochs = opts.epochs or (3 if opts.smoke else 6)
    opts.outage = opts.outage if opts.outage is not None else default_outage
    kinds = ["embedded"] + (["pg_redis"] if opts.postgres else [])
    root = Path(tempfile.mkdtemp(prefix="segbench-faults-"))
    try:
        data = synth(root / "data", image_size=64, train_slices=20, test_volumes=2,
                     slices_per_volume=6, seed=0)  # SYNTHETIC stand-in data  # fmt: skip
        (root / "runs").mkdir()
        rows = []
        for kind in kinds:
            for name, (scenario, in_quick) in SCENARIOS.items():
                if (opts.quick and not in_quick) or (opts.smoke and name not in SMOKE):
                    continue
                if scenario is broker_restart and kind == "embedded":
                    continue  # the embedded broker is a file of the database's machine
                rows.append(run_scenario(kind, name, scenario, data, opts, root / "runs"))
                r = rows[-1]
                rec = "-" if r["recovery"] is None else f"{r['recovery']:.1f}"
                print(f"| {r['deployment']} | {r['fault']} | {rec} | {r['lost']} | {r['dup']} "
                      f"| {r['status']} |", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    survived = sum(r["ok"] for r in rows)
    worst = max((r["recovery"] or 0.0) for r in rows)
    print(
        f"faults survived: {survived}/{len(rows)}, rows lost: {sum(r['lost'] for r in rows)}, "
        f"duplicated: {sum(r['dup'] for r in rows)}, worst recovery: {worst:.1f} s"
    )
    sys.exit(0 if survived == len(rows) else 1)


if __name__ == "__main__":
    print("Fault scenarios on GENERATED stand-in data (synthetic), default queue timings")
    print("| deployment | fault | recovery s | rows lost | duplicated | final status |")
    print("| --- | --- | --- | --- | --- | --- |")
    main()
