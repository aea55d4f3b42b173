"""fit()'s checkpoints keep a resume exact (every epoch, or at an interval), the best
weights are written once beside them, and the run's environment is recorded: a
resume in another environment is said on the run and never passes for an
uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from db.grid import RunSpec
from db.protocol import Protocol, environment_key
from worker.training.checkpoints import CHECKPOINT_LATEST, CHECKPOINT_PREVIOUS
from worker.training.recorder import Cancelled, Recorder
from worker.training.trainer import TrainSpec, fit

# Trains several runs to compare their numbers: outside `make test-fast`.
pytestmark = pytest.mark.slow

# FPN has dropout: the global generator's state must be checkpointed too
RUN = RunSpec("lung-segmentation", "fpn", "mobilenet_v2", "random")


class ListRecorder(Recorder):
    def __init__(self, cancel_after=None):
        self.epochs, self.outcome, self.config = [], None, None
        self.cancel_after = cancel_after

    def start(self, config):
        self.config = config

    def epoch(self, record):
        self.epochs.append((record.epoch, record.train_loss, record.val_loss, record.is_best))

    def cancelled(self):
        return self.cancel_after is not None and len(self.epochs) >= self.cancel_after

    def finish(self, outcome):
        self.outcome = outcome


def _spec(data_dir, artifacts, epochs=3, **kw):
    return TrainSpec(
        run=RUN,
        protocol=Protocol(epochs=epochs, image_size=64, seed=0),
        data_dir=data_dir,
        artifacts_dir=artifacts,
        **kw,
    )


def _summary(outcome):
    counts = [(s.tp, s.fp, s.fn, s.tn) for s in outcome.test.slices]
    return outcome.best_epoch, outcome.best_val_loss, counts, outcome.checkpoint_sha256


@pytest.fixture(scope="module")
def alone(synthetic_data, tmp_path_factory):
    """The run trained once without interruption."""
    rec = ListRecorder()
    fit(_spec(synthetic_data, tmp_path_factory.mktemp("alone")), rec)
    return rec


def test_best_weights_are_written_once_beside_the_latest_checkpoint(synthetic_data, tmp_path):
    class FolderAtFinish(ListRecorder):
        def finish(self, outcome):
            super().finish(outcome)  # the results are recorded: training state still there
            self.best = sorted(p.name for p in tmp_path.glob("checkpoint_best_epoch*.pt"))
            self.latest = torch.load(tmp_path / CHECKPOINT_LATEST, weights_only=True)
            self.previous = torch.load(tmp_path / CHECKPOINT_PREVIOUS, weights_only=True)

    rec = FolderAtFinish()
    fit(_spec(synthetic_data, tmp_path), rec)
    best_epoch = rec.outcome.best_epoch
    assert f"checkpoint_best_epoch{best_epoch}.pt" in rec.best
    # only the files the two kept checkpoints name are kept
    named = {rec.latest["state"]["best_weights"], rec.previous["state"]["best_weights"]}
    assert set(rec.best) == named - {None}
    assert "best_model" not in rec.latest["state"]
    assert rec.latest["state"]["best_weights"] == f"checkpoint_best_epoch{best_epoch}.pt"
    assert rec.previous["state"]["epoch"] == rec.latest["state"]["epoch"] - 1
    assert rec.latest["environment"] == rec.config["environment"]
    # a finished run keeps its best model and nothing only a resume would need
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "checkpoint_best" in left
    assert not [n for n in left if n.startswith(("checkpoint_latest", "checkpoint_previous"))]
    assert not [n for n in left if n.startswith("checkpoint_best_epoch") or ".tmp" in n]
    # on CPU every speed switch is off, and the protocol's math is IEEE fp32
    assert rec.config["performance"] == {
        "amp": False,
        "tf32": False,
        "deterministic": False,
        "channels_last": False,
        "fused_adam": False,
        "capturable": False,
        "cudnn_benchmark": False,
        "cuda_graphs": False,
        "compile": False,
        "checkpoint_interval_s": 0.0,
    }


def test_the_environment_is_recorded_and_keyed(alone):
    env = alone.config["environment"]
    assert env["device"] == "cpu" and env["math"] == "ieee-fp32"
    assert env["threads"] == torch.get_num_threads()
    assert env["torch"] == torch.__version__ and env["device_model"]
    assert alone.config["environment_key"] == environment_key(env)
    assert alone.outcome.environment == env  # nothing changed while it trained
    other = {**env, "threads": env["threads"] + 1}
    assert environment_key(other) != environment_key(env)


def test_checkpoint_interval_still_resumes_exactly(synthetic_data, tmp_path, alone):
    """With a long interval only the last epoch and a stop write the checkpoint."""
    spec = _spec(synthetic_data, tmp_path / "a", checkpoint_interval_s=3600)
    with pytest.raises(Cancelled):
        fit(spec, ListRecorder(cancel_after=2))
    rec = ListRecorder()
    outcome = fit(spec, rec)
    assert rec.config["resumed_from"] == 2
    assert rec.epochs == alone.epochs[2:]
    assert _summary(outcome) == _summary(alone.outcome)
    # the same environment: the resumed run is keyed as the uninterrupted one
    assert rec.config["environment_key"] == alone.config["environment_key"]


class CrashRecorder(ListRecorder):
    def epoch(self, record):
        if record.epoch == 2:
            raise RuntimeError("worker died")
        super().epoch(record)


@pytest.mark.parametrize(("interval", "resumed_from"), [(0, 1), (3600, 0)])
def test_a_crash_between_checkpoints_repeats_the_epochs_since_the_last(
    synthetic_data, tmp_path, alone, interval, resumed_from
):
    spec = _spec(synthetic_data, tmp_path, checkpoint_interval_s=interval)
    with pytest.raises(RuntimeError, match="worker died"):
        fit(spec, CrashRecorder())
    rec = ListRecorder()
    outcome = fit(spec, rec)
    assert rec.config["resumed_from"] == resumed_from
    assert rec.epochs == alone.epochs[resumed_from:]
    assert _summary(outcome) == _summary(alone.outcome)


def test_a_resume_with_another_thread_count_is_said_and_never_pooled(synthetic_data, tmp_path):
    """The thread count moves CPU numbers: a run resumed with another one says so in its
    note, and its environment (and key) keeps the earlier one, so it is not pooled with
    runs that trained throughout in either environment."""
    threads = torch.get_num_threads()
    spec = _spec(synthetic_data, tmp_path, epochs=2)
    try:
        torch.set_num_threads(1)
        first = ListRecorder(cancel_after=1)
        with pytest.raises(Cancelled):
            fit(spec, first)
        torch.set_num_threads(2)
        rec = ListRecorder()
        outcome = fit(spec, rec)
    finally:
        torch.set_num_threads(threads)
    assert "threads 1 -> 2" in rec.config["resume_note"]
    assert "not those of an uninterrupted run" in rec.config["resume_note"]
    env = rec.config["environment"]
    assert env["threads"] == 2 and env["earlier"][0]["threads"] == 1
    assert rec.config["environment_key"] != first.config["environment_key"]
    assert rec.config["environment_key"] != environment_key({**env, "earlier": []})
    assert outcome.environment == env
