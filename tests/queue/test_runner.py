"""worker.queue.runner.execute in this process: the logic of one delivery, without Celery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from sqlalchemy import update

from db import jobs
from db.models import Run
from db.session import session_scope
from tests.support.queue_stack import FAST, TINY, damage
from worker.queue import runner


@pytest.fixture
def stack(embedded, monkeypatch):
    from db.settings import get_settings

    for key, value in embedded.env.items():
        if key.startswith("SEGBENCH_") or key in FAST:
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield embedded
    get_settings.cache_clear()


def execute(stack, run_id: int, worker: str = "node@host/1", **kwargs) -> str:
    return runner.execute(run_id, worker=worker, database_url=stack.db_url, **kwargs)


def in_thread(stack, run_id: int, **kwargs):
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(execute(stack, run_id, **kwargs)))
    thread.start()
    stack.wait(lambda runs: runs[run_id]["epoch"] >= 1, 120, "the first epoch")
    return thread, result


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_claims_trains_records_and_ignores_a_second_delivery(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=2)
    assert execute(stack, run_id) == runner.SUCCEEDED
    run = stack.runs()[run_id]
    assert (run["status"], run["attempts"], run["error"]) == ("succeeded", 1, None)
    assert stack.epochs(run_id) == [1, 2]
    (folder,) = (stack.home / "artifacts").iterdir()
    assert folder.name == f"{run_id}-{run['uid']}"
    assert (folder / "checkpoint_best" / "model.safetensors").exists()
    assert not (folder / "checkpoint_latest.pt").exists()  # a finished run keeps its model only
    assert execute(stack, run_id, worker="node@host/2") == runner.SKIPPED


@pytest.mark.slow
def test_cancel_takes_effect_at_the_end_of_the_epoch(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=200)
    thread, result = in_thread(stack, run_id)
    with session_scope(stack.db_url) as session:
        assert jobs.cancel(session, run_ids=[run_id])["requested"] == [run_id]
    thread.join(timeout=60)
    assert result == [runner.CANCELLED]
    run = stack.runs()[run_id]
    assert run["status"] == "cancelled" and run["epoch"] < 200


@pytest.mark.slow
def test_a_stopping_worker_hands_the_run_back_and_it_resumes(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=3)
    assert execute(stack, run_id, should_stop=lambda: True) == runner.RELEASED
    run = stack.runs()[run_id]
    assert (run["status"], run["attempts"], run["epoch"]) == ("queued", 0, 1)
    assert execute(stack, run_id, worker="node@host/2") == runner.SUCCEEDED
    run = stack.runs()[run_id]
    assert (run["status"], run["attempts"], run["resumed_from"]) == ("succeeded", 1, 1)
    assert stack.epochs(run_id) == [1, 2, 3]


def test_data_that_fails_its_check_fails_the_run_with_the_reason(stack, corrupt_data):
    (run_id,) = stack.submit(*TINY, data=corrupt_data, epochs=2)
    damage(corrupt_data)
    assert execute(stack, run_id) == runner.FAILED
    run = stack.runs()[run_id]
    assert run["status"] == "failed"
    assert run["error"].startswith("data check failed: ")
    assert "tr_mask.nii.gz" in run["error"]


@pytest.mark.slow
def test_a_worker_that_lost_its_lease_stops_without_writing(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=200)
    thread, result = in_thread(stack, run_id)
    with session_scope(stack.db_url) as session:
        session.execute(update(Run).where(Run.id == run_id).values(worker="other@host/9"))
    epoch = stack.runs()[run_id]["epoch"]
    thread.join(timeout=60)
    assert result == [runner.LOST]
    run = stack.runs()[run_id]
    assert (run["status"], run["worker"]) == ("running", "other@host/9")
    assert run["epoch"] <= epoch + 1  # at most the epoch whose write had already begun


def test_a_dead_process_of_the_same_node_gives_its_run_up_at_once(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=2)
    with session_scope(stack.db_url) as session:
        jobs.claim(session, run_id=run_id, worker=f"node@host/{dead_pid()}")
        # another node cannot know whether that pid is alive on its machine
        assert not jobs.expire_lease_of_dead_process(session, run_id=run_id, node="other@x")
        assert jobs.expire_lease_of_dead_process(session, run_id=run_id, node="node@host")
    with session_scope(stack.db_url) as session:
        claimed = jobs.claim(session, run_id=run_id, worker="node@host/2")
    assert claimed is not None and claimed.attempts == 2


def test_a_live_process_keeps_its_run(stack, synthetic_data):
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=2)
    with session_scope(stack.db_url) as session:
        jobs.claim(session, run_id=run_id, worker=f"node@host/{os.getpid()}")
    assert execute(stack, run_id, worker="node@host/2") == runner.SKIPPED


@pytest.mark.slow
def test_a_recreated_database_never_resumes_another_runs_checkpoint(stack, synthetic_data):
    """The old bug: delete the database, keep the artifacts folder, train another run:
    the new run 1 resumed old run 1's checkpoint. Folders are <id>-<uid> now, and the
    checkpoint is signed with the run's identity."""
    from db.session import dispose_engine

    (old_id,) = stack.submit(*TINY, data=synthetic_data, epochs=3)
    stopped = threading.Event()
    thread, result = in_thread(stack, old_id, should_stop=stopped.is_set)
    stopped.set()  # the worker shuts down after epoch 1: the run keeps its checkpoint
    thread.join(120)
    assert result == [runner.RELEASED]
    dispose_engine(stack.db_url)
    for leftover in stack.home.glob("segbench*.db*"):
        leftover.unlink()
    lesion = ["-x", "lesion-segmentation-a", *TINY[2:]]
    (new_id,) = stack.submit(*lesion, data=synthetic_data, epochs=3)
    assert new_id == old_id  # the same integer id in the new database
    assert execute(stack, new_id) == runner.SUCCEEDED
    run = stack.runs()[new_id]
    assert stack.epochs(new_id) == [1, 2, 3]
    assert (run["resumed_from"], run["note"]) == (0, None)
    folders = sorted(p.name for p in (stack.home / "artifacts").iterdir())
    assert len(folders) == 2 and f"{new_id}-{run['uid']}" in folders


@pytest.mark.slow
def test_a_checkpoint_in_an_explicit_folder_of_another_run_is_ignored(stack, synthetic_data):
    folder = stack.home / "shared-folder"
    (first,) = stack.submit(*TINY, data=synthetic_data, epochs=3)
    stopped = threading.Event()
    thread, result = in_thread(stack, first, should_stop=stopped.is_set, artifacts_dir=folder)
    stopped.set()
    thread.join(120)
    lesion = ["-x", "lesion-segmentation-a", *TINY[2:]]
    (second,) = stack.submit(*lesion, data=synthetic_data, epochs=2, sweep="other")
    assert execute(stack, second, artifacts_dir=folder) == runner.SUCCEEDED
    run = stack.runs()[second]
    assert stack.epochs(second) == [1, 2] and run["resumed_from"] == 0
    assert "not this run; it was ignored" in run["note"]
    assert run["note"].endswith("started from epoch 1.")


def test_out_of_memory_fails_the_run_naming_model_and_batch_and_is_not_retried(
    stack, synthetic_data, monkeypatch
):
    import torch

    from worker.training import models

    build = models.build_model

    def model_that_runs_out_of_memory(spec):
        model = build(spec)

        def forward(_x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward  # the training step is where a GPU runs out of memory
        return model

    monkeypatch.setattr(models, "build_model", model_that_runs_out_of_memory)
    (run_id,) = stack.submit(*TINY, data=synthetic_data, epochs=2)
    assert execute(stack, run_id) == runner.FAILED
    run = stack.runs()[run_id]
    assert run["status"] == "failed" and run["attempts"] == 1
    assert "out of GPU memory training pspnet-resnet18 at batch size 2" in run["error"]
    assert execute(stack, run_id, worker="node@host/3") == runner.SKIPPED  # no blind retry
