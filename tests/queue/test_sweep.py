"""Done when: a 12-run sweep (4 architectures x 3 encoders, 2 epochs, 64 px, generated
data) submitted with `segbench submit` and trained by two `segbench worker`
processes ends with 12 succeeded runs, on PostgreSQL + Redis (with the commands and
settings of docker-compose.yml) and on the embedded default (SQLite + serverless
broker, no URL given anywhere). And `segbench up --demo` shows live training and
stops every process it started on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.support.queue_stack import FAST, ROOT, Stack, running_stack

pytestmark = pytest.mark.slow

SWEEP = [
    "-x", "lung-segmentation",
    "-a", "unet", "-a", "linknet", "-a", "fpn", "-a", "pspnet",
    "-e", "resnet18", "-e", "mobilenet_v2", "-e", "efficientnet-b0",
    "-i", "random",
]  # fmt: skip


def assert_twelve_succeeded(stack: Stack, ids: list[int]) -> None:
    assert len(ids) == 12
    runs = stack.wait_finished(400)
    assert sorted(runs) == sorted(ids)
    failed = {i: r["error"] for i, r in runs.items() if r["status"] != "succeeded"}
    assert not failed
    assert all(stack.epochs(i) == [1, 2] for i in ids)
    workers = {r["worker"].rpartition("/")[0] for r in runs.values()}
    assert len(workers) == 2, "both workers took runs"


def compose_service(name: str) -> dict:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"][name]


def local_command(command: list[str]) -> list[str]:
    """The compose command, run with this Python instead of the image's `segbench`."""
    assert command[0] == "segbench"
    expanded = [
        os.path.expandvars(a).replace("${SEGBENCH_RUNS_PER_GPU:-auto}", "1") for a in command
    ]
    return [sys.executable, "-m", "worker.cli", *expanded[1:]]


def test_twelve_runs_on_postgres_and_redis_as_in_docker_compose(
    pg_url, redis_url, tmp_path, synthetic_data
):
    env = dict(compose_service("worker")["environment"])
    env.update(  # the compose services' addresses and volumes, on this machine
        SEGBENCH_DATABASE_URL=pg_url,
        SEGBENCH_BROKER_URL=redis_url,
        SEGBENCH_DATA_DIR=str(synthetic_data),
        SEGBENCH_ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        SEGBENCH_GPU_LOCK_DIR=str(tmp_path / "gpu-locks"),
    )
    env = {**os.environ, **{k: v for k, v in FAST.items() if not k.startswith("SEGBENCH_")}, **env}
    migrate = local_command(compose_service("migrate")["command"])
    subprocess.run(migrate, env=env, check=True, capture_output=True, timeout=120)
    with running_stack(Stack(pg_url, redis_url, tmp_path, env), migrate=False) as stack:
        ids = stack.submit(*SWEEP, data=synthetic_data, sweep="twelve")
        for _ in range(2):
            stack.start_worker(command=local_command(compose_service("worker")["command"]))
        assert_twelve_succeeded(stack, ids)


def test_twelve_runs_on_the_embedded_default(tmp_path, synthetic_data, monkeypatch):
    from db.session import dispose_engine
    from db.settings import get_settings
    from worker.cli import load_commands

    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBENCH_")}
    env.update(FAST, SEGBENCH_ARTIFACTS_DIR=str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)  # the default database is ./segbench.db
    for key in [k for k in os.environ if k.startswith("SEGBENCH_")]:
        monkeypatch.delenv(key)
    get_settings.cache_clear()
    stack = Stack(f"sqlite:///{tmp_path / 'segbench.db'}", "", tmp_path, env)
    try:
        result = CliRunner().invoke(
            load_commands(),
            [
                "submit",
                *SWEEP,
                "--epochs",
                "2",
                "--image-size",
                "64",
                "--data",
                str(synthetic_data),
                "--format",
                "json",
            ],  # fmt: skip
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        ids = json.loads(result.stdout)["runs"]
        assert (tmp_path / "segbench-broker.sqlite").exists()
        worker = [sys.executable, "-m", "worker.cli", "worker"]
        for _ in range(2):
            stack.start_worker(command=worker)
        assert_twelve_succeeded(stack, ids)
    finally:
        stack.stop_workers()
        dispose_engine(stack.db_url)
        get_settings.cache_clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_up_demo_trains_live_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBENCH_")}
    env.update(FAST)
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "up",
            "--demo",
            "--dir",
            str(tmp_path),
            "--port",
            str(port),
        ],  # fmt: skip
        env=env,
        stdout=(tmp_path / "up.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    stack = Stack(f"sqlite:///{tmp_path / 'segbench.db'}", "", tmp_path, env)
    try:
        stack.wait(
            lambda runs: len(runs) == 8 and any(r["epoch"] >= 1 for r in runs.values()),
            120,
            "live training of the demo sweep",
        )
        children = children_of(up.pid)
        assert len(children) == 2, (tmp_path / "up.out").read_text()
        # `segbench doctor --short` came before anything started: nothing stops the runs
        assert "runs can start" in (tmp_path / "up.out").read_text()
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"http://127.0.0.1:{port}/_stcore/health"
                assert urllib.request.urlopen(url, timeout=5).read() == b"ok"
                break
            except OSError:
                assert time.monotonic() < deadline, (
                    tmp_path / "logs" / "dashboard.log"
                ).read_text()
                time.sleep(1)
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=60) == 0, (tmp_path / "up.out").read_text()
        assert not [pid for pid in children if alive(pid)]
        runs = stack.runs()
        assert "running" not in {r["status"] for r in runs.values()}
        assert all(r["attempts"] in (0, 1) for r in runs.values())
        assert "SYNTHETIC" in (tmp_path / "up.out").read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
