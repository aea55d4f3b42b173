"""Progress where the time goes: the test pass reports its slices to the recorder
(Recorder.testing, called from worker.training.evaluate), `segbench train` draws a
bar over them after the epoch bar, and a worker logs one line per epoch and one at
the start and end of the test pass. Under 2 s (a model of a few hundred parameters,
a SQLite database)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from db import jobs
from db.grid import expand
from db.protocol import EpochRecord, Protocol
from db.session import session_scope
from worker.data.dataset import Split
from worker.queue.lease import LeasedRecorder
from worker.training.evaluate import evaluate
from worker.training.recorder import ProgressRecorder, Recorder, TeeRecorder


def tiny_model() -> torch.nn.Module:
    """tests/fixtures/tiny_model.py's net, with a sigmoid (it produces logits)."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model.py"
    spec = importlib.util.spec_from_file_location("segbench_test_tiny_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return torch.nn.Sequential(module.TinyNet(), torch.nn.Sigmoid())


def split(n: int, size: int = 16) -> Split:
    rng = np.random.default_rng(0)
    masks = (rng.random((n, size, size)) > 0.7).astype(np.uint8)
    return Split(
        images=rng.standard_normal((n, size, size)).astype(np.float32),
        masks=masks,
        lungs=np.ones_like(masks),
        volume=np.repeat(np.arange(2), [n // 2, n - n // 2]),
        slice=np.concatenate([np.arange(n // 2), np.arange(n - n // 2)]),
    )


class Calls(Recorder):
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def testing(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def test_the_test_pass_reports_every_batch_then_the_end():
    model = tiny_model()
    rec = Calls()
    result, _ = evaluate(
        model, split(11), batch_size=4, spacing=[(1.0, 1.0, 2.0)] * 2, progress=rec.testing
    )
    assert rec.calls == [(0, 11), (4, 11), (8, 11), (11, 11)]
    assert len(result.slices) == 11 and len(result.volumes) == 2
    tee = TeeRecorder(Calls(), None, rec)
    tee.testing(3, 5)
    assert tee.recorders[0].calls == [(3, 5)] and rec.calls[-1] == (3, 5)
    Recorder().testing(1, 2)  # the base class records nothing, and has the method


def test_train_shows_a_bar_over_the_test_slices_after_the_epoch_bar(capsys):
    bar = ProgressRecorder(2, "lung-segmentation-unet-resnet18-random", device="cpu (auto)")
    bar.start({"dataset": {"synthetic": True}})
    for epoch in (1, 2):
        bar.epoch(EpochRecord(epoch, 0.5, 0.4, 1.0, 0.2, True))
    for done in (0, 8, 16, 20):
        bar.testing(done, 20)
    assert bar.test_bar.n == 20 and bar.bar.n == 2
    bar.finish(None)
    err = capsys.readouterr().err
    assert err.index("training on cpu (auto)") < err.index("2/2")
    assert "2/2" in err and "testing the best model" in err and "20/20" in err
    assert err.index("2/2") < err.index("testing the best model")


@pytest.fixture
def db(sqlite_db):
    return sqlite_db


def test_a_worker_logs_each_epoch_and_the_test_pass(db, caplog):
    with session_scope(db) as session:
        (run_id,) = jobs.submit(
            session, specs=expand(["lung"], ["unet"], ["resnet18"], None, ["random"]),
            protocol=Protocol(epochs=3, image_size=64), sweep="s", data_dir="data",
            dataset={"name": "d", "kind": "medseg", "synthetic": True, "manifest_hash": "m"},
        )  # fmt: skip
        jobs.claim(session, run_id=run_id, worker="host/1")
    rec = LeasedRecorder(db, run_id, "host/1", lease_seconds=60)
    with caplog.at_level(logging.INFO, logger="worker.queue.lease"):
        rec.start({"protocol": Protocol(epochs=3, image_size=64).to_dict()})
        rec.epoch(EpochRecord(1, 0.61234, 0.55556, 30.25, 4.0, True))
        rec.epoch(EpochRecord(2, 0.5, 0.6, 30.0, 4.0, False))
        rec.testing(0, 40)
        rec.testing(32, 40)
        rec.testing(40, 40)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.queue.lease"]
    assert lines[0] == (
        f"run {run_id}: epoch 1/3, train loss 0.6123, validation loss 0.5556 (best so far), 34.2 s"
    )
    assert lines[1] == f"run {run_id}: epoch 2/3, train loss 0.5000, validation loss 0.6000, 34.0 s"
    assert lines[2] == f"run {run_id}: testing the best model on 40 test slices"
    assert lines[3].startswith(f"run {run_id}: tested 40 slices in ") and len(lines) == 4
