"""Helpers for the job-queue tests: real databases (SQLite file, fresh PostgreSQL database),
real brokers (Redis on 127.0.0.1:6379, or the embedded SQLite broker) and real
`segbench worker` processes, with leases and intervals shortened to seconds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import select
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST = "127.0.0.1"

# Short timings so that leases expire and the reaper acts within seconds.
FAST = {
    "SEGBENCH_LEASE_SECONDS": "5",
    "SEGBENCH_REAPER_INTERVAL": "1",
    "SEGBENCH_SOFT_SHUTDOWN_TIMEOUT": "30",
    "SEGBENCH_VISIBILITY_TIMEOUT": "3600",
    "SEGBENCH_MAX_ATTEMPTS": "3",
    "SEGBENCH_DEVICE": "cpu",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}
TINY = ["-x", "lung-segmentation", "-a", "pspnet", "-e", "resnet18", "-i", "random"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((REDIS_HOST, 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server of one test's own, on a free port, keeping nothing on disk.

    A test may stop it (every message is lost, as in a broker crash) and start it
    again on the same port without touching any other test: the shared Redis on
    6379 is never stopped, and tests with Redis can run in parallel."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(REDIS_HOST, self.port, socket_connect_timeout=2)

    def up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def start(self) -> RedisServer:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / f"redis-{self.port}.log"
        self.process = subprocess.Popen(
            ["redis-server", "--bind", REDIS_HOST, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.home), "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.up():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGKILL: nothing is saved, every message is gone; returns once the port is
        closed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Worker:
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """SIGKILL the worker and its pool processes: the machine died."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the worker's main process (SIGTERM: docker stop, SIGINT: Ctrl-C) and
        wait for it to exit."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@dataclass
class Stack:
    """One deployment under test: database + broker URLs, environment, workers."""

    db_url: str
    broker_url: str
    home: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True):
        """Run `segbench ARGS --db ... [--broker ...]` in this process."""
        from worker.cli import load_commands

        argv = [*args, "--db", self.db_url]
        if args[0] in ("submit", "retry"):
            argv += ["--broker", self.broker_url]
        result = CliRunner().invoke(load_commands(), argv, env=self.env, catch_exceptions=False)
        if check:
            assert result.exit_code == 0, result.output
        return result

    def submit(self, *args: str, data: Path, epochs: int = 2, sweep: str = "test") -> list[int]:
        result = self.cli(
            "submit", *args, "--epochs", str(epochs), "--image-size", "64",
            "--data", str(data), "--sweep", sweep, "--format", "json",
        )  # fmt: skip
        return json.loads(result.stdout)["runs"]

    def start_worker(
        self,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> Worker:
        log_path = self.home / f"worker-{len(self.workers)}.log"
        process = subprocess.Popen(
            command or [
                sys.executable, "-m", "worker.cli", "worker", "--db", self.db_url,
                "--broker", self.broker_url, "--concurrency", str(concurrency), "--gpu", "none",
            ],
            env={**self.env, **(env or {})},
            cwd=self.home,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        worker = Worker(process, log_path)
        self.workers.append(worker)
        return worker

    def runs(self) -> dict[int, dict]:
        from db.models import Run
        from db.session import session_scope

        with session_scope(self.db_url) as session:
            rows = session.execute(select(Run)).scalars().all()
            return {
                r.id: {
                    "status": r.status,
                    "attempts": r.attempts,
                    "epoch": r.epoch,
                    "epochs": r.epochs,
                    "error": r.error,
                    "resumed_from": (r.config or {}).get("resumed_from"),
                    "worker": r.worker,
                    "uid": r.uid,
                    "note": r.note,
                }
                for r in rows
            }

    def epochs(self, run_id: int) -> list[int]:
        from db.models import Epoch
        from db.session import session_scope

        with session_scope(self.db_url) as session:
            return list(
                session.scalars(
                    select(Epoch.epoch).where(Epoch.run_id == run_id).order_by(Epoch.epoch)
                )
            )

    def wait(self, predicate: Callable[[dict[int, dict]], bool], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        runs = {}
        while time.monotonic() < deadline:
            runs = self.runs()
            if predicate(runs):
                return runs
            time.sleep(0.5)
        logs = "\n".join(f"--- {w.log_path.name}\n{w.log()[-4000:]}" for w in self.workers)
        raise AssertionError(f"timed out waiting for {what}; runs: {runs}\n{logs}")

    def wait_finished(self, timeout: float = 180) -> dict[int, dict]:
        return self.wait(
            lambda runs: (
                runs and all(r["status"] not in ("queued", "running") for r in runs.values())
            ),
            timeout,
            "every run to finish",
        )

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.process.poll() is None:
                w.kill_all()


def stack_env(db_url: str, broker_url: str, home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        **FAST,
        "SEGBENCH_DATABASE_URL": db_url,
        "SEGBENCH_BROKER_URL": broker_url,
        "SEGBENCH_ARTIFACTS_DIR": str(home / "artifacts"),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@contextlib.contextmanager
def running_stack(stack: Stack, migrate: bool = True) -> Iterator[Stack]:
    """Upgrade the stack's database, and stop its workers and engine at the end."""
    from db import migrate as alembic
    from db.session import dispose_engine

    if migrate:
        alembic.upgrade(stack.db_url)
    try:
        yield stack
    finally:
        stack.stop_workers()
        dispose_engine(stack.db_url)


def damage(data: Path) -> None:
    """Break the lesion masks file of a dataset folder (its manifest still lists it)."""
    damaged = data / "tr_mask.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:200] + b"\0" * 64)
