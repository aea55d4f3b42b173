"""docker-compose.yml cannot run here (no Docker engine): check its structure, and
that every SEGBENCH_* variable it sets is a field of the settings object."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from db.settings import Settings as QueueSettings

ROOT = Path(__file__).resolve().parents[2]
SEGBENCH_SERVICES = ("migrate", "worker", "dashboard")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def seconds(value: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value))
    assert m and any(m.groups()), f"not a duration: {value}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_services_and_health_checks(compose):
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "worker", "dashboard"} <= set(services)
    for name in ("postgres", "redis", "dashboard"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["command"] == ["segbench", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"


def test_dependents_wait_for_healthy_services_and_migrations(compose):
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "dashboard"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_worker_gets_gpus_volumes_and_a_grace_period_longer_than_soft_shutdown(compose):
    worker = compose["services"]["worker"]
    assert worker["command"][:2] == ["segbench", "worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    mounts = {v.split(":")[1] for v in worker["volumes"]}
    env = worker["environment"]
    assert {env["SEGBENCH_DATA_DIR"], env["SEGBENCH_ARTIFACTS_DIR"]} <= mounts
    assert env["SEGBENCH_GPU_LOCK_DIR"] in mounts
    soft = float(env["SEGBENCH_SOFT_SHUTDOWN_TIMEOUT"])
    assert seconds(worker["stop_grace_period"]) > soft
    assert int(env["SEGBENCH_VISIBILITY_TIMEOUT"]) > int(env["SEGBENCH_LEASE_SECONDS"])


def test_environment_names_are_settings_fields(compose):
    fields = {f"SEGBENCH_{name.upper()}" for name in QueueSettings.model_fields}
    for name in SEGBENCH_SERVICES:
        env = compose["services"][name]["environment"]
        used = {k for k in env if k.startswith("SEGBENCH_")}
        assert used, name
        assert used <= fields, f"{name}: unknown settings {sorted(used - fields)}"
        assert env["SEGBENCH_DATABASE_URL"].startswith("postgresql://")
        assert env["SEGBENCH_BROKER_URL"].startswith("redis://")


def test_dockerfile_installs_the_package_and_remaps_sigterm():
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in text
    assert "REMAP_SIGTERM=SIGQUIT" in text
    for folder in ("worker", "db", "dashboard", "migrations"):
        assert f"COPY {folder} ./{folder}" in text


def test_every_segbench_service_shares_one_weights_cache(compose):
    services = compose["services"]
    for name in SEGBENCH_SERVICES:
        service = services[name]
        mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
        cache = service["environment"]["SEGBENCH_WEIGHTS_DIR"]
        inside = [m for m in mounts if cache == m or cache.startswith(m.rstrip("/") + "/")]
        assert inside and mounts[inside[0]] == "weights", name
    assert "weights" in compose["volumes"]
