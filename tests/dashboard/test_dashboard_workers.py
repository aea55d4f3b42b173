"""Live and Launch with a real `segbench worker` process: Launch warns while no worker
is alive, Live lists the worker once it has registered; and with weight downloads
forbidden Launch refuses ImageNet runs whose weights are missing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from db import queries
from db.session import session_scope
from tests.dashboard.dashboard_fixtures import clear_settings, open_page, texts

NO_WORKER = "the runs will wait until a worker starts: `segbench worker`"


@pytest.fixture
def worker(empty_url, tmp_path):
    """A real worker on the test's database (embedded broker), beating every 0.5 s."""
    env = {
        **os.environ,
        "SEGBENCH_DATABASE_URL": empty_url,
        "SEGBENCH_WORKER_HEARTBEAT": "0.5",
        "SEGBENCH_REAPER_INTERVAL": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SEGBENCH_BROKER_URL", None)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--gpu", "none", "--concurrency", "2"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with session_scope(empty_url) as session:
                if queries.live_workers(session):
                    break
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.3)
        else:
            raise AssertionError((tmp_path / "worker.log").read_text())
        clear_settings()
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()


def test_launch_warns_without_a_worker(empty_url):
    at = open_page("views/launch.py")
    assert not at.exception
    assert any(NO_WORKER in w.value for w in at.warning), texts(at)


def test_live_and_launch_see_a_real_worker(empty_url, worker):
    live = open_page()
    assert not live.exception, [e.value for e in live.exception]
    assert "Workers (1)" in [s.value for s in live.subheader]
    (table,) = [d.value for d in live.dataframe if "worker" in d.value.columns]
    assert list(table["pid"]) == [worker.pid]
    assert list(table["slots"]) == [2] and list(table["device"]) == ["cpu"]
    assert list(table["training"]) == ["idle"]

    launch = open_page("views/launch.py")
    assert not any(NO_WORKER in w.value for w in launch.warning), texts(launch)
    assert "1 live worker(s), 2 run(s) at once" in texts(launch)


def test_live_and_segbench_workers_say_the_same_time_left(empty_url, worker):
    """One time left, from db.queries.sweep_eta: 3 runs of 4 epochs, one cancelled, one
    epoch of 2.5 s measured: 7 epochs left on the worker's 2 slots, 7 x 2.5 / 2 = 8.75 s
    (by hand), on the Live page and in `segbench workers` alike."""
    from db import jobs
    from db.grid import expand
    from db.protocol import EpochRecord, Protocol

    with session_scope(empty_url) as session:
        ids = jobs.submit(
            session, specs=expand(encoders=["resnet18"])[:3], protocol=Protocol(epochs=4),
            sweep="eta", data_dir="data",
            dataset={"name": "d", "kind": "medseg", "synthetic": True, "manifest_hash": None},
        )  # fmt: skip
        jobs.claim(session, run_id=ids[0], worker="elsewhere@h/1")  # not this worker's
        jobs.record_epoch(session, run_id=ids[0], record=EpochRecord(1, 0.6, 0.5, 2.0, 0.5, True))
        jobs.cancel(session, run_ids=[ids[2]])
    live = open_page()
    caption = next(c for c in texts(live).splitlines() if c.startswith("Time left"))
    assert "about **9 s**" in caption and "7 epochs of the queued and running runs" in caption
    assert (
        "0 of 2 runs done (succeeded or failed); 1 cancelled" in live.get("progress")[0].proto.text
    )
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "workers", "--db", empty_url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "All sweeps: 0 of 2 run(s) done (succeeded or failed); 1 cancelled" in out
    assert "7 epoch(s) left at 2.50 s per epoch on 1 live worker(s)" in out
    assert "about 9 s left" in out


def test_launch_refuses_missing_weights_when_downloads_are_forbidden(
    empty_url, synthetic_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SEGBENCH_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    clear_settings()
    at = open_page("views/launch.py")
    at.text_input(key="launch_data_dir").set_value(str(synthetic_data)).run()
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    at.multiselect(key="launch_inits").set_value(["imagenet"]).run()
    assert not at.exception
    assert any("not in the weights cache" in e.value for e in at.error), texts(at)
    assert "not cached: resnet18 (downloads are forbidden" in texts(at)
    assert at.button(key="launch_enqueue").disabled
    at.checkbox(key="launch_allow_missing_weights").check().run()
    assert not at.button(key="launch_enqueue").disabled
