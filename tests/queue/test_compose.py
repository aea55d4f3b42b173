"""The compose files cannot run here (no Docker engine): check their structure, with
the variables interpolated as `docker compose` does, and that every SEGBENCH_*
variable they set is a field of the settings object. docker-compose.yml is one host;
docker-compose.hub.yml publishes its PostgreSQL and Redis to worker hosts, which run
docker-compose.worker.yml (docs/scale-out.md). Where the docker compose plugin is
installed, `docker compose config` must accept every combination too.

All of it takes well under a second (the `docker compose config` part is skipped
where the plugin is missing, as on the development VM)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from db.settings import Settings as QueueSettings

ROOT = Path(__file__).resolve().parents[2]
SEGBENCH_SERVICES = ("migrate", "worker", "dashboard")
HUB = {"HUB_ADDRESS": "10.0.0.1", "POSTGRES_PASSWORD": "pg0123abcd", "REDIS_PASSWORD": "rd4567ef"}
VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


class Missing(Exception):
    """A required variable (${NAME:?message}) is not set."""


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution on every string of a loaded file: ${NAME},
    ${NAME:-default} / ${NAME-default}, ${NAME:?error} / ${NAME?error}, $$ for $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        given = env.get(name)
        unset = given is None or (op is not None and op.startswith(":") and given == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise Missing(f"{name}: {arg}")
        return given or ""

    return VARIABLE.sub(one, value)


def load(name: str, env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load((ROOT / name).read_text()), env or {})


def merged(base: dict, override: dict) -> dict:
    """`docker compose -f base -f override`: maps merge key by key, `ports` (and other
    sequences of a service) add up, `command` is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        elif key in ("ports", "volumes") and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """Container path -> (source, options) of a service's volumes."""
    found = {}
    for v in service["volumes"]:
        source, target, *options = v.split(":")
        found[target] = (source, options[0] if options else "rw")
    return found


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("docker-compose.yml")


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


def test_one_host_publishes_nothing_but_the_dashboard_on_localhost(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "migrate", "worker"):
        assert "ports" not in services[name], name
    assert services["dashboard"]["ports"] == ["127.0.0.1:8501:8501"]


def test_dependents_wait_for_healthy_services_and_migrations(compose):
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "dashboard"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def check_worker(worker: dict) -> None:
    """What a GPU worker service needs, on any host."""
    assert worker["command"] == ["segbench", "worker", "--slots", "auto"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    env = worker["environment"]
    inside = mounts(worker)
    for key in ("SEGBENCH_DATA_DIR", "SEGBENCH_ARTIFACTS_DIR", "SEGBENCH_GPU_LOCK_DIR"):
        assert env[key] in inside, key
    assert inside[env["SEGBENCH_ARTIFACTS_DIR"]][1] == "rw"
    soft = float(env["SEGBENCH_SOFT_SHUTDOWN_TIMEOUT"])
    assert seconds(worker["stop_grace_period"]) > soft
    assert int(env["SEGBENCH_VISIBILITY_TIMEOUT"]) > int(env["SEGBENCH_LEASE_SECONDS"])
    assert worker["init"] is True and worker["stop_signal"] == "SIGTERM"
    assert "hostname" not in worker  # scaled containers must not share a host name


def test_worker_gets_gpus_volumes_and_a_grace_period_longer_than_soft_shutdown(compose):
    check_worker(compose["services"]["worker"])


def test_environment_names_are_settings_fields(compose):
    fields = {f"SEGBENCH_{name.upper()}" for name in QueueSettings.model_fields}
    worker_host = load("docker-compose.worker.yml", HUB)["services"]
    for services in (compose["services"], worker_host):
        for name in SEGBENCH_SERVICES:
            if name not in services:
                continue
            env = services[name]["environment"]
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
        inside = mounts(service)
        cache = service["environment"]["SEGBENCH_WEIGHTS_DIR"]
        found = [m for m in inside if cache == m or cache.startswith(m.rstrip("/") + "/")]
        assert found and inside[found[0]][0] == "weights", name
    assert "weights" in compose["volumes"]


def test_data_and_artifacts_are_volumes_or_host_folders(compose):
    for name in ("migrate", "worker", "dashboard"):
        inside = mounts(compose["services"][name])
        assert inside["/data"][0] == "data" and inside["/artifacts"][0] == "artifacts"
    assert {"data", "artifacts"} <= set(compose["volumes"])
    own = load("docker-compose.yml", {"DATA_VOLUME": "/srv/ct", "ARTIFACTS_VOLUME": "/srv/a"})
    for name in ("migrate", "worker", "dashboard"):
        inside = mounts(own["services"][name])
        assert inside["/data"][0] == "/srv/ct" and inside["/artifacts"][0] == "/srv/a"


def test_the_hub_publishes_postgres_and_redis_on_its_private_address_behind_passwords():
    base = load("docker-compose.yml", HUB)
    hub = merged(base, load("docker-compose.hub.yml", HUB))["services"]
    assert hub["postgres"]["ports"] == ["10.0.0.1:5432:5432"]
    assert hub["redis"]["ports"] == ["10.0.0.1:6379:6379"]
    assert hub["dashboard"]["ports"] == ["127.0.0.1:8501:8501"]  # still this host only
    assert hub["postgres"]["environment"]["POSTGRES_PASSWORD"] == HUB["POSTGRES_PASSWORD"]
    command = hub["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == HUB["REDIS_PASSWORD"]
    assert "--appendonly" in command
    # the base health check (redis-cli ping) authenticates through REDISCLI_AUTH
    assert hub["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert hub["redis"]["environment"]["REDISCLI_AUTH"] == HUB["REDIS_PASSWORD"]
    for name in SEGBENCH_SERVICES:
        env = hub[name]["environment"]
        assert env["SEGBENCH_BROKER_URL"] == f"redis://:{HUB['REDIS_PASSWORD']}@redis:6379/0"
        assert f":{HUB['POSTGRES_PASSWORD']}@postgres:5432/" in env["SEGBENCH_DATABASE_URL"]


@pytest.mark.parametrize("unset", sorted(HUB))
def test_the_hub_and_worker_hosts_refuse_to_start_without_their_variables(unset):
    env = {k: v for k, v in HUB.items() if k != unset}
    for name in ("docker-compose.hub.yml", "docker-compose.worker.yml"):
        with pytest.raises(Missing, match=unset):
            load(name, env)


def test_a_worker_host_runs_only_workers_against_the_hub(compose):
    spec = load("docker-compose.worker.yml", HUB)
    (worker,) = spec["services"].values()
    check_worker(worker)
    assert "depends_on" not in worker and "ports" not in worker
    env = worker["environment"]
    assert env["SEGBENCH_DATABASE_URL"] == "postgresql://segbench:pg0123abcd@10.0.0.1:5432/segbench"
    assert env["SEGBENCH_BROKER_URL"] == "redis://:rd4567ef@10.0.0.1:6379/0"
    inside = mounts(worker)
    assert inside["/data"] == ("data", "ro")  # workers only read the dataset
    assert inside["/gpu-locks"][0] == "gpu-locks"  # locks of this host's GPUs only
    assert inside["/home/segbench/.cache/huggingface"][0] == "weights"
    assert worker["healthcheck"]["test"][:3] == ["CMD", "segbench", "workers"]
    assert {"data", "artifacts", "weights", "gpu-locks"} <= set(spec["volumes"])
    own = load("docker-compose.worker.yml", {**HUB, "DATA_VOLUME": "/srv/ct"})
    assert mounts(own["services"]["worker"])["/data"] == ("/srv/ct", "ro")


def test_worker_hosts_use_the_hubs_queue_timings(compose):
    """A lease, a reaper interval, a soft shutdown mean the same on every host."""
    hub = compose["services"]["worker"]["environment"]
    host = load("docker-compose.worker.yml", HUB)["services"]["worker"]["environment"]
    urls = {"SEGBENCH_DATABASE_URL", "SEGBENCH_BROKER_URL"}
    assert set(hub) - urls == set(host) - urls
    for key in set(hub) - urls:
        assert host[key] == hub[key], key
    base = compose["services"]["worker"]
    worker = load("docker-compose.worker.yml", HUB)["services"]["worker"]
    for key in ("command", "stop_grace_period", "shm_size", "deploy", "init"):
        assert worker[key] == base[key], key


def docker_compose() -> list[str] | None:
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return ["docker", "compose"] if probe.returncode == 0 else None


@pytest.mark.parametrize(
    "files",
    [
        ("docker-compose.yml",),
        ("docker-compose.yml", "docker-compose.hub.yml"),
        ("docker-compose.worker.yml",),
    ],
    ids=["one-host", "hub", "worker-host"],
)
def test_docker_compose_config_accepts_the_files(files, tmp_path):
    command = docker_compose()
    if command is None:
        pytest.skip("the docker compose plugin is not installed here")
    args = [*command, "--project-directory", str(ROOT)]
    for name in files:
        args += ["-f", str(ROOT / name)]
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path), **HUB}
    result = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["worker"]["command"][:2] == ["segbench", "worker"]
    if "docker-compose.hub.yml" in files:
        published = {(p["host_ip"], p["published"]) for p in services["redis"]["ports"]}
        assert published == {("10.0.0.1", "6379")}
