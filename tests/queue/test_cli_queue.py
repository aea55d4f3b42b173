"""`segbench submit / cancel / retry` against a real database and broker, no worker."""

from __future__ import annotations

import json

from db import jobs
from db.protocol import Protocol
from db.session import session_scope
from tests.support.queue_stack import TINY
from worker.queue import broker


def depth(stack) -> int:
    broker.configure(stack.db_url, stack.broker_url)
    return broker.queue_depth()


def test_submit_prints_sweep_and_run_ids_and_sends_them(embedded, synthetic_data):
    result = embedded.cli(
        "submit", "-x", "lung-segmentation", "-a", "unet", "-a", "fpn", "-e", "resnet18",
        "-i", "random", "--epochs", "2", "--image-size", "64", "--data", str(synthetic_data),
        "--sweep", "s1", "--format", "json",
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert set(document) == {"sweep", "runs", "protocol"}
    assert document["sweep"] == "s1" and len(document["runs"]) == 2
    assert document["protocol"] == Protocol(epochs=2, image_size=64).shared_dict()
    runs = embedded.runs()
    assert {r["status"] for r in runs.values()} == {"queued"}
    assert depth(embedded) == 2


def test_submitting_twice_adds_nothing_and_sends_nothing_again(embedded, synthetic_data):
    first = embedded.submit("-x", "lung-segmentation", "-a", "unet", "-e", "resnet18",
                            "-e", "mobilenet_v2", "-i", "random", data=synthetic_data)  # fmt: skip
    with session_scope(embedded.db_url) as session:
        jobs.cancel(session, run_ids=[first[0]])
    second = embedded.submit("-x", "lung-segmentation", "-a", "unet", "-e", "resnet18",
                             "-e", "mobilenet_v2", "-i", "random", data=synthetic_data)  # fmt: skip
    assert second == first
    assert len(embedded.runs()) == 2
    # only the runs a submit creates get a message: four identical submits at once
    # send one per run, not four (a queued run whose message was lost is the reaper's)
    assert depth(embedded) == 2


def test_default_sweep_name_is_stable(embedded, synthetic_data):
    args = ["submit", *TINY, "--epochs", "2", "--image-size", "64", "--data", str(synthetic_data)]
    one = json.loads(embedded.cli(*args, "--format", "json").stdout)
    two = json.loads(embedded.cli(*args, "--format", "json").stdout)
    assert one == two and one["sweep"].startswith("medseg-synthetic-")


def test_bad_name_fails_in_one_sentence_and_writes_nothing(embedded, synthetic_data):
    result = embedded.cli("submit", "-a", "segnet", "--data", str(synthetic_data), check=False)
    assert result.exit_code == 1
    assert "Unknown architecture 'segnet'" in result.output
    assert embedded.runs() == {}


def test_missing_data_folder_fails_clearly(embedded, tmp_path):
    result = embedded.cli(*["submit", *TINY], "--data", str(tmp_path / "nope"), check=False)
    assert result.exit_code == 1
    assert "nope" in result.output
    assert embedded.runs() == {}


def test_unreachable_broker_fails_before_writing_rows(embedded, synthetic_data):
    embedded.broker_url = "redis://127.0.0.1:1/0"
    result = embedded.cli(
        *["submit", *TINY], "--image-size", "64", "--data", str(synthetic_data), check=False
    )
    assert result.exit_code == 1
    assert "Cannot reach the broker at redis://127.0.0.1:1/0" in result.output
    assert embedded.runs() == {}


def test_cancel_queued_runs_by_id_and_by_sweep(embedded, synthetic_data):
    ids = embedded.submit("-x", "lung-segmentation", "-a", "unet", "-a", "fpn", "-e",
                          "resnet18", "-i", "random", data=synthetic_data, sweep="c")  # fmt: skip
    one = json.loads(embedded.cli("cancel", str(ids[0]), "--format", "json").stdout)
    assert one == {"cancelled": [ids[0]], "requested": []}
    rest = json.loads(embedded.cli("cancel", "--sweep", "c", "--format", "json").stdout)
    assert rest == {"cancelled": [ids[1]], "requested": []}
    assert {r["status"] for r in embedded.runs().values()} == {"cancelled"}
    missing = embedded.cli("cancel", "9999", check=False)
    assert missing.exit_code == 1 and "No run with id 9999" in missing.output


def test_retry_requeues_failed_runs_keeping_nothing_of_the_failure(embedded, synthetic_data):
    ids = embedded.submit(*TINY, data=synthetic_data, sweep="r")
    with session_scope(embedded.db_url) as session:
        jobs.claim(session, run_id=ids[0], worker="w/1")
        jobs.fail(session, run_id=ids[0], reason="boom")
    assert embedded.runs()[ids[0]]["error"] == "boom"
    before = depth(embedded)
    result = json.loads(embedded.cli("retry", "--sweep", "r", "--format", "json").stdout)
    assert result == {"runs": ids}
    run = embedded.runs()[ids[0]]
    assert run["status"] == "queued" and run["attempts"] == 0 and run["error"] is None
    assert depth(embedded) == before + 1


def test_worker_without_a_broker_for_a_server_database_says_what_to_set(embedded):
    from typer.testing import CliRunner

    from worker.cli import load_commands

    env = {**embedded.env, "SEGBENCH_BROKER_URL": "", "REMAP_SIGTERM": "SIGQUIT"}
    result = CliRunner().invoke(
        load_commands(),
        ["worker", "--db", "postgresql://nobody@127.0.0.1:1/none", "--gpu", "none"],
        env=env,
    )
    assert result.exit_code == 1
    assert "set SEGBENCH_BROKER_URL or --broker" in result.output


def test_worker_refuses_slots_below_one_in_one_sentence(embedded):
    for value in ("0", "-1", "two"):
        result = embedded.cli("worker", "--concurrency", value, check=False)
        assert result.exit_code == 1
        assert f"--slots takes auto or a whole number from 1, got '{value}'." in result.output
