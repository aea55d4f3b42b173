"""A worker you can see: every `segbench worker` records itself in the `workers` table
(host, pid, device, GPU name and memory, concurrency, started) and stamps a heartbeat
with the runs it trains every ``worker_heartbeat`` seconds, from a thread of its main
process. It removes its row when it stops; a worker killed outright stops beating and
drops off the list of live workers after ``worker_stale_after`` seconds (and the live
workers delete such rows later).

Like the reaper, the thread uses its own engine without a connection pool: no database
connection is open while the pool forks.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import threading

from sqlalchemy.orm import Session

from db import jobs
from db.engine import create_fresh_engine
from db.settings import get_settings

log = logging.getLogger(__name__)

PRUNE_FACTOR = 20  # rows silent for 20 x worker_stale_after are deleted

_configured: dict = {"device": "cpu", "concurrency": 1}
_presence: Presence | None = None


def configure(*, device: str, concurrency: int) -> None:
    """What `segbench worker` chose, recorded when the worker is ready."""
    _configured.update(device=device, concurrency=concurrency)


def node() -> str:
    """The worker's Celery node name, as `segbench worker` sets it."""
    return f"segbench-{os.getpid()}@{platform.node()}"


def gpu_details(device: str) -> tuple[str | None, int | None]:
    """(GPU name, memory in MB) of the worker's GPU from nvidia-smi, or (None, None).

    Not torch: the worker's main process must not initialise CUDA before its pool forks."""
    if device == "cpu":
        return None, None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    command = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    if visible:
        command.append(f"--id={visible}")
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
        name, memory = out.stdout.strip().splitlines()[0].rsplit(",", 1)
        return name.strip(), int(float(memory))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None, None


class Presence(threading.Thread):
    """Registers worker `name`, beats every `interval` seconds, deregisters on stop."""

    def __init__(self, database_url: str, *, name: str, device: str, concurrency: int) -> None:
        super().__init__(name="segbench-presence", daemon=True)
        settings = get_settings()
        self.database_url = database_url
        self.worker = name
        self.device = device
        self.concurrency = concurrency
        self.interval = float(settings.worker_heartbeat)
        self.prune_after = float(settings.worker_stale_after) * PRUNE_FACTOR
        self._stopped = threading.Event()
        self._engine = create_fresh_engine(database_url, pooled=False)
        self.gpu_name, self.gpu_memory_mb = gpu_details(device)

    def register(self) -> None:
        with Session(self._engine) as session, session.begin():
            jobs.register(
                session,
                name=self.worker,
                host=platform.node(),
                pid=os.getpid(),
                device=self.device,
                concurrency=self.concurrency,
                gpu_name=self.gpu_name,
                gpu_memory_mb=self.gpu_memory_mb,
            )

    def beat(self) -> None:
        with Session(self._engine) as session, session.begin():
            alive = jobs.worker_heartbeat(session, name=self.worker)
            jobs.prune_workers(session, older_than_s=self.prune_after)
        if alive is None and not self._stopped.is_set():
            self.register()

    def run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as error:  # a database blip: try again next beat
                log.warning("presence: %s: %s", type(error).__name__, error)
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=10)  # no beat may re-register after the row is gone
        try:
            with Session(self._engine) as session, session.begin():
                jobs.deregister(session, name=self.worker)
        except Exception as error:
            log.warning("presence: could not remove this worker's row: %s", error)
        finally:
            self._engine.dispose()


def start(database_url: str, *, name: str) -> Presence | None:
    """Register this worker and start its heartbeat thread (a failure is logged: the
    worker trains all the same)."""
    global _presence
    try:
        _presence = Presence(database_url, name=name, **_configured)
        _presence.register()
        _presence.start()
        log.info("registered as worker %s (%s)", name, _configured["device"])
    except Exception as error:
        log.warning("presence: could not register this worker: %s", error)
        _presence = None
    return _presence


def stop() -> None:
    if _presence is not None:
        _presence.stop()
