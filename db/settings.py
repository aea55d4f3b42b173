"""The one settings object of segbench, read once from `SEGBENCH_*` environment variables."""

from __future__ import annotations

import platform
from functools import lru_cache

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where segbench keeps its state and how long a worker may stay silent.

    Every field can be set by an environment variable of the same name prefixed with
    ``SEGBENCH_`` (``SEGBENCH_DATABASE_URL=postgresql://...``).
    """

    model_config = SettingsConfigDict(env_prefix="SEGBENCH_", extra="ignore")

    database_url: str = "sqlite:///segbench.db"
    broker_url: str | None = None  # None: the embedded broker, no server needed
    artifacts_dir: str = "./artifacts"
    data_dir: str = "./data"
    # A run's lease: a worker that sends no heartbeat for this long is taken for dead
    # and its run is requeued. Heartbeats go every heartbeat_seconds from a thread of
    # their own, whatever the epoch length, so the lease is sized for detection.
    lease_seconds: int = 40
    heartbeat_seconds: float = 10.0
    # How long a worker keeps trying a write the database does not take (a restart,
    # a lock held by another writer) before the run's attempt ends.
    db_retry_seconds: float = 60.0
    max_attempts: int = 3
    dashboard_password: SecretStr | None = None
    # Where the dashboard listens, as `segbench doctor` judges it (a password is
    # expected beyond localhost); `segbench dashboard --address` sets the real one.
    dashboard_address: str = "127.0.0.1"
    # Queue timings (worker.queue). Redis hands an unacknowledged message to
    # another worker after visibility_timeout seconds: keep it longer than the
    # longest run (the claim in the database protects anyway).
    visibility_timeout: int = 2 * 24 * 3600
    # How often each worker's reaper requeues runs whose lease expired or whose
    # holder, a process of this host, no longer exists.
    reaper_interval: float = 5.0
    # On SIGTERM a worker lets running runs finish their epoch for this long, then
    # requeues them; compose's stop_grace_period must be longer.
    soft_shutdown_timeout: float = 60.0
    device: str = "auto"  # auto: cuda when visible, else cpu
    # The host name a worker records in its leases (default: this machine's). Runs
    # held by dead processes of the same host are requeued at once; another host's
    # must wait for their lease.
    worker_host: str | None = None
    gpu_lock_dir: str = "/tmp/segbench-gpus"
    # A cell table of bench/gpu_session.sh (peak memory per architecture x encoder on
    # this GPU model): `segbench worker --slots auto` fits as many runs per GPU as it
    # allows (worker.queue.slots); unset, one run per GPU.
    cell_table: str | None = None
    # ImageNet encoder weights (worker.training.weights): the Hugging Face cache folder
    # the workers read and fill (None: huggingface_hub's own, HF_HUB_CACHE / HF_HOME),
    # and whether a worker may download missing weights (HF_HUB_OFFLINE=1 forbids it too).
    weights_dir: str | None = None
    # Where `segbench data fetch` asks Google Drive for a file by id.
    drive_url: str = "https://drive.google.com/uc"
    weights_offline: bool = False
    # A worker records itself every worker_heartbeat seconds (the `workers` table); one
    # silent for worker_stale_after seconds is no longer listed as alive.
    worker_heartbeat: float = 10.0
    worker_stale_after: float = 45.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings, read from the environment on first use and cached."""
    return Settings()


def worker_host() -> str:
    """This machine's name as workers record it in their leases."""
    return get_settings().worker_host or platform.node()
