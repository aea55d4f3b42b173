"""ImageNet weights on the queue, end to end: real `segbench worker` processes, a real
database and broker, and a local Hub (tests/support/fake_hub.py) reached through HF_ENDPOINT.
Nothing reaches huggingface.co: every test sets HF_ENDPOINT or forbids downloads."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from db.models import Run
from db.session import session_scope
from db.settings import get_settings
from tests.support.fake_hub import FakeHub
from worker.cli import load_commands

IMAGENET = ["-a", "pspnet", "-e", "resnet18", "-i", "imagenet"]


@pytest.fixture
def hub():
    served = FakeHub().start()
    yield served
    served.stop()


@pytest.fixture
def weights_env(tmp_path, monkeypatch):
    """An empty weights cache of this test; HF_ENDPOINT set to a closed port, so that
    nothing here can reach the real Hub (tests that serve weights override it)."""
    env = {
        "SEGBENCH_WEIGHTS_DIR": str(tmp_path / "weights"),
        "HF_ENDPOINT": "http://127.0.0.1:1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SEGBENCH_WEIGHTS_OFFLINE", raising=False)
    get_settings.cache_clear()  # the stack's fixture may have read them already
    yield env
    get_settings.cache_clear()


def _use(stack, env: dict) -> None:
    stack.env.update(env)
    for key in ("HF_HUB_OFFLINE", "SEGBENCH_WEIGHTS_OFFLINE"):
        if key not in env:
            stack.env.pop(key, None)
    get_settings.cache_clear()


def _notes(url: str) -> dict[int, str | None]:
    with session_scope(url) as session:
        return dict(session.execute(select(Run.id, Run.note)).all())


def test_offline_submit_refuses_missing_weights_in_one_sentence_and_queues_nothing(
    embedded, synthetic_data, weights_env
):
    _use(embedded, {**weights_env, "HF_HUB_OFFLINE": "1"})
    args = ["submit", "-x", "lung-segmentation", *IMAGENET, "-e", "vgg11", "--epochs", "1",
            "--image-size", "64", "--data", str(synthetic_data)]  # fmt: skip
    result = embedded.cli(*args, check=False)
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("error: ImageNet weights for encoder(s) vgg11, resnet18")
    assert "segbench weights fetch --encoder vgg11 --encoder resnet18" in message
    assert "HF_HUB_OFFLINE=1" in message and "--allow-missing-weights" in message
    assert message.count("\n") == 0 and message.count(". ") == 0  # one sentence
    assert embedded.runs() == {}

    queued = embedded.cli(*args, "--allow-missing-weights")
    assert "not cached: vgg11, resnet18" in queued.output
    assert len(embedded.runs()) == 2


def test_without_network_submit_refuses_missing_weights_and_queues_nothing(
    embedded, synthetic_data, weights_env
):
    """A fresh machine with an empty cache and no network (the Hub does not answer):
    refused at once, instead of runs that could only fail at claim time."""
    _use(embedded, weights_env)  # HF_ENDPOINT: a closed port
    result = embedded.cli(
        "submit", "-x", "lung-segmentation", *IMAGENET, "--epochs", "1", "--image-size", "64",
        "--data", str(synthetic_data), check=False,
    )  # fmt: skip
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("error: ImageNet weights for encoder(s) resnet18 are not in")
    assert "the Hub at http://127.0.0.1:1 cannot be reached" in message
    assert "segbench weights fetch --encoder resnet18" in message and "\n" not in message
    assert embedded.runs() == {}


def test_first_use_downloads_once_for_two_workers_and_the_runs_succeed(
    embedded, synthetic_data, weights_env, hub, tmp_path
):
    hub.serve_encoder("resnet18")
    _use(embedded, {**weights_env, "HF_ENDPOINT": hub.endpoint})
    result = embedded.cli(
        "submit", "-x", "lung-segmentation", "-x", "lesion-segmentation-a", *IMAGENET,
        "--epochs", "1", "--image-size", "64", "--data", str(synthetic_data),
    )  # fmt: skip
    assert "not cached: resnet18 (the workers download them on first use)" in result.output
    # two workers start together, each takes one of the two runs
    embedded.start_worker()
    embedded.start_worker()
    runs = embedded.wait_finished(timeout=240)
    assert {r["status"] for r in runs.values()} == {"succeeded"}, runs
    assert hub.downloads() == 1
    notes = [n or "" for n in _notes(embedded.db_url).values()]
    assert sum(n.startswith("downloaded ImageNet weights for resnet18") for n in notes) == 1
    logs = "\n".join(w.log() for w in embedded.workers)
    assert logs.count("downloading ImageNet weights for resnet18") >= 1
    cache = tmp_path / "weights"
    assert len(list(cache.glob("models--smp-hub--resnet18.imagenet/blobs/*"))) == 1

    # the weights are cached now: `segbench weights status` says so, and a new
    # run on a fresh worker does not download again
    status = CliRunner().invoke(
        load_commands(), ["weights", "status", "-e", "resnet18", "--format", "json"],
        env=embedded.env,
    )  # fmt: skip
    assert json.loads(status.stdout)["encoders"][0]["cached"] is True
    embedded.cli("submit", "-x", "lesion-segmentation-b", *IMAGENET, "--epochs", "1",
                 "--image-size", "64", "--data", str(synthetic_data))  # fmt: skip
    embedded.stop_workers()
    embedded.start_worker()
    runs = embedded.wait_finished(timeout=240)
    assert {r["status"] for r in runs.values()} == {"succeeded"}, runs
    assert hub.downloads() == 1


def test_corrupt_download_fails_the_run_in_one_sentence_and_leaves_nothing_cached(
    embedded, synthetic_data, weights_env, hub, tmp_path
):
    hub.serve_encoder("resnet18", corrupt=True)
    _use(embedded, {**weights_env, "HF_ENDPOINT": hub.endpoint})
    (run_id,) = embedded.submit("-x", "lung-segmentation", *IMAGENET, data=synthetic_data,
                                epochs=1)  # fmt: skip
    embedded.start_worker()
    runs = embedded.wait_finished(timeout=180)
    run = runs[run_id]
    assert run["status"] == "failed"
    assert run["error"].startswith(
        "The ImageNet weights downloaded for encoder 'resnet18' from "
        f"{hub.endpoint} are corrupt (its sha256 differs from the one the Hub announced)"
    )
    assert "\n" not in run["error"] and "Traceback" not in run["error"]
    cache = tmp_path / "weights"
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"
                and p.name != "CACHEDIR.TAG"]  # fmt: skip
    assert _notes(embedded.db_url)[run_id] is None
