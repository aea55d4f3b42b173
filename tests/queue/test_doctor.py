"""`segbench doctor` as a user runs it (a subprocess): its rows and its exit code, with a
real SQLite or PostgreSQL database, the embedded broker or an unreachable Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from db import migrate
from db.session import dispose_engine
from tests.support.pg_databases import create_database, drop_database
from tests.support.queue_stack import damage


@pytest.fixture
def healthy(tmp_path, synthetic_data):
    """A database at head, the embedded broker, verified data, an empty weights cache
    with downloads forbidden, no worker."""
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    migrate.upgrade(url)
    dispose_engine(url)
    env = {
        **os.environ,
        "SEGBENCH_DATABASE_URL": url,
        "SEGBENCH_DATA_DIR": str(synthetic_data),
        "SEGBENCH_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "SEGBENCH_WEIGHTS_DIR": str(tmp_path / "weights"),
        "HF_HUB_OFFLINE": "1",
    }
    for key in ("SEGBENCH_BROKER_URL", "SEGBENCH_DASHBOARD_PASSWORD", "CUDA_VISIBLE_DEVICES"):
        env.pop(key, None)
    return env


def doctor(env: dict, *args: str) -> tuple[int, dict[str, dict]]:
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "doctor", "--format", "json", *args],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    document = json.loads(out.stdout)
    assert document["exit_code"] == out.returncode, out.stderr
    return out.returncode, {row["name"]: row for row in document["checks"]}


def test_a_ready_machine_exits_0_with_missing_weights_and_no_worker_as_warnings(healthy):
    code, rows = doctor(healthy, "--dashboard-address", "0.0.0.0")
    assert code == 0
    assert rows["database"]["status"] == "ok" and "(head)" in rows["database"]["detail"]
    assert rows["broker"]["status"] == "ok" and "0 message(s) waiting" in rows["broker"]["detail"]
    assert rows["dataset"]["status"] == "ok" and "verified" in rows["dataset"]["detail"]
    weights = rows["ImageNet weights"]
    assert weights["status"] == "missing" and not weights["fatal"]
    assert "0 of 25" in weights["detail"] and "HF_HUB_OFFLINE=1" in weights["detail"]
    assert "segbench weights fetch --all" in weights["fix"]
    assert rows["workers"]["status"] == "warning" and "segbench worker" in rows["workers"]["fix"]
    assert rows["dashboard"]["status"] == "warning"
    assert "SEGBENCH_DASHBOARD_PASSWORD" in rows["dashboard"]["fix"]
    assert "600-model sweep keeps about" in rows["disk"]["detail"]
    assert {"Python", "torch / CUDA", "GPUs"} <= set(rows)

    table = subprocess.run(
        [sys.executable, "-m", "worker.cli", "doctor"], capture_output=True, text=True,
        env={**healthy, "COLUMNS": "120"}, timeout=180,
    )  # fmt: skip
    assert table.returncode == 0 and "segbench doctor" in table.stdout
    assert "Runs can start" in table.stdout


def test_a_missing_database_exits_1(healthy, tmp_path):
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'segbench.db'}"
    code, rows = doctor({**healthy, "SEGBENCH_DATABASE_URL": missing})
    assert code == 1
    assert rows["database"]["status"] == "missing" and rows["database"]["fatal"]
    assert "segbench db upgrade" in rows["database"]["fix"]
    assert not (tmp_path / "nowhere" / "segbench.db").exists()  # doctor creates nothing


def test_a_database_behind_the_schema_head_exits_1(healthy):
    url = create_database("segbench_doctor")
    try:
        code, rows = doctor(healthy, "--db", url)
    finally:
        drop_database(url)
    assert code == 1 and rows["database"]["fatal"]
    assert "schema none, the code needs" in rows["database"]["detail"]


def test_an_unreachable_broker_exits_1(healthy):
    code, rows = doctor(healthy, "--broker", "redis://127.0.0.1:1/0")
    assert code == 1
    assert rows["broker"]["status"] == "missing" and rows["broker"]["fatal"]
    assert "127.0.0.1:1" in rows["broker"]["detail"]


def test_a_dataset_that_fails_verification_exits_1(healthy, corrupt_data):
    damage(corrupt_data)
    code, rows = doctor(healthy, "--data", str(corrupt_data))
    assert code == 1 and rows["dataset"]["fatal"]
    assert "tr_mask.nii.gz" in rows["dataset"]["detail"]
