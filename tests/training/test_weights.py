"""`segbench weights status / fetch` against a local Hub (tests/support/fake_hub.py) reached
through HF_ENDPOINT, and the weights cache's checks. Nothing reaches huggingface.co."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from db.settings import get_settings
from tests.support.fake_hub import FakeHub
from worker.cli import load_commands
from worker.training import weights


@pytest.fixture
def hub(tmp_path, monkeypatch):
    served = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", served.endpoint)
    monkeypatch.setenv("SEGBENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SEGBENCH_WEIGHTS_OFFLINE", raising=False)
    get_settings.cache_clear()
    yield served
    served.stop()


def cli(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def test_fetch_downloads_with_a_progress_bar_then_status_says_cached(hub, monkeypatch):
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub: bars also without a TTY
    hub.serve_encoder("resnet18")
    before = json.loads(cli("weights", "status", "-e", "resnet18", "--format", "json").stdout)
    assert before["encoders"][0]["cached"] is False and before["downloads"] is True
    fetched = cli("weights", "fetch", "--encoder", "resnet18")
    assert fetched.exit_code == 0, fetched.output
    assert "resnet18: downloaded, 44.8 MB" in fetched.output
    assert "resnet18 ImageNet weights: 100%" in fetched.output  # the progress bar
    assert hub.downloads() == 1
    again = cli("weights", "fetch", "--encoder", "resnet18")
    assert "resnet18: already cached" in again.output and hub.downloads() == 1
    table = cli("weights", "status", "-e", "resnet18", "-e", "vgg11")
    assert "resnet18 │ yes" in table.output and "44.8 MB" in table.output
    assert "vgg11    │ no" in table.output and "1 of 2 cached" in table.output


def test_fetch_needs_a_choice_and_offline_is_one_sentence(hub, monkeypatch):
    assert cli("weights", "fetch").exit_code == 1
    monkeypatch.setenv("SEGBENCH_WEIGHTS_OFFLINE", "1")
    get_settings.cache_clear()
    result = cli("weights", "fetch", "--encoder", "vgg11")
    assert result.exit_code == 1
    assert "downloads are forbidden (SEGBENCH_WEIGHTS_OFFLINE=1)" in result.output
    assert hub.requests == []


def test_missing_file_on_the_hub_is_one_sentence(hub):
    result = cli("weights", "fetch", "--encoder", "resnet34")
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: Downloading the ImageNet weights for encoder 'resnet34'"
    )
    assert hub.endpoint in result.output


def test_threads_fetching_together_download_once(hub):
    hub.serve_encoder("mobilenet_v2")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(weights.fetch("mobilenet_v2")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(downloaded for _, downloaded in results) == [False, False, True]
    assert hub.downloads() == 1
