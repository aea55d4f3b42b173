"""Runs trained together (worker.training.stacked.fit_many) end exactly as each alone, and the
cheaper checkpoints they share with fit() keep resume exact."""

from __future__ import annotations

import pytest
import torch

from db.grid import RunSpec
from db.protocol import Protocol
from worker.training.checkpoints import CHECKPOINT_LATEST, CHECKPOINT_PREVIOUS
from worker.training.recorder import Cancelled, Recorder
from worker.training.stacked import fit_many, stack_groups
from worker.training.trainer import TrainSpec, fit


class ListRecorder(Recorder):
    def __init__(self, cancel_after=None):
        self.calls, self.epochs, self.outcome = [], [], None
        self.cancel_after = cancel_after

    def start(self, config):
        self.calls.append("start")
        self.config = config

    def epoch(self, record):
        self.calls.append("epoch")
        self.epochs.append((record.epoch, record.train_loss, record.val_loss, record.is_best))

    def cancelled(self):
        self.calls.append("cancelled")
        return self.cancel_after is not None and len(self.epochs) >= self.cancel_after

    def finish(self, outcome):
        self.calls.append("finish")
        self.outcome = outcome


# FPN and PSPNet have dropout (global RNG), lesion B masks its input: three
# different data streams and two architectures in one stack
RUNS = [
    RunSpec("lung-segmentation", "fpn", "mobilenet_v2", "random"),
    RunSpec("lesion-segmentation-a", "fpn", "mobilenet_v2", "random"),
    RunSpec("lesion-segmentation-b", "pspnet", "resnet18", "random"),
]


def _spec(run, data_dir, artifacts, epochs=3, seed=1, **kw):
    return TrainSpec(
        run=run,
        protocol=Protocol(epochs=epochs, image_size=64, seed=seed),
        data_dir=data_dir,
        artifacts_dir=artifacts,
        **kw,
    )


def _summary(outcome):
    counts = [(s.tp, s.fp, s.fn, s.tn) for s in outcome.test.slices]
    return outcome.best_epoch, outcome.best_val_loss, counts, outcome.checkpoint_sha256


@pytest.fixture(scope="module")
def alone(synthetic_data, tmp_path_factory):
    """Each run trained by itself with fit()."""
    out = []
    for i, run in enumerate(RUNS):
        rec = ListRecorder()
        fit(_spec(run, synthetic_data, tmp_path_factory.mktemp(f"alone{i}"), seed=i), rec)
        out.append(rec)
    return out


def test_stacked_runs_equal_runs_alone(synthetic_data, tmp_path, alone):
    recs = [ListRecorder() for _ in RUNS]
    specs = [_spec(r, synthetic_data, tmp_path / str(i), seed=i) for i, r in enumerate(RUNS)]
    outcomes = fit_many(specs, recs)
    for rec, ref, outcome in zip(recs, alone, outcomes, strict=True):
        assert rec.outcome is outcome
        assert rec.calls == ["start"] + ["epoch", "cancelled"] * 3 + ["finish"]
        assert rec.epochs == ref.epochs  # bit for bit on CPU
        assert _summary(outcome) == _summary(ref.outcome)


def test_a_cancelled_run_stops_alone_and_resumes_in_a_stack(synthetic_data, tmp_path, alone):
    recs = [ListRecorder(cancel_after=1), ListRecorder()]
    specs = [_spec(r, synthetic_data, tmp_path / str(i), seed=i) for i, r in enumerate(RUNS[:2])]
    results = fit_many(specs, recs, return_exceptions=True)
    assert isinstance(results[0], Cancelled) and recs[0].outcome is None
    assert recs[0].epochs == alone[0].epochs[:1]
    assert _summary(results[1]) == _summary(alone[1].outcome)
    with pytest.raises(Cancelled):
        once = _spec(RUNS[0], synthetic_data, tmp_path / "once", epochs=1)
        fit_many([once], [ListRecorder(cancel_after=0)])  # re-raised by default

    # the cancelled run resumes from its checkpoint next to a fresh one
    resumed = [ListRecorder(), ListRecorder()]
    specs[1] = _spec(RUNS[2], synthetic_data, tmp_path / "2", seed=2)
    outcomes = fit_many(specs, resumed)
    assert resumed[0].config["resumed_from"] == 1
    assert resumed[0].epochs == alone[0].epochs[1:]
    assert _summary(outcomes[0]) == _summary(alone[0].outcome)
    assert _summary(outcomes[1]) == _summary(alone[2].outcome)


def test_a_run_that_cannot_start_does_not_stop_the_others(synthetic_data, tmp_path, alone):
    bad = _spec(RUNS[0], tmp_path / "no-data", tmp_path / "bad")
    good = _spec(RUNS[0], synthetic_data, tmp_path / "good", seed=0)
    results = fit_many([bad, good], return_exceptions=True)
    assert isinstance(results[0], Exception) and "no-data" in str(results[0])
    assert _summary(results[1]) == _summary(alone[0].outcome)
    with pytest.raises(ValueError, match="one recorder per run"):
        fit_many([good], [])


def test_best_weights_are_written_once_beside_the_latest_checkpoint(synthetic_data, tmp_path):
    class FolderAtFinish(ListRecorder):
        def finish(self, outcome):
            super().finish(outcome)  # the results are recorded: training state still there
            self.best = sorted(p.name for p in tmp_path.glob("checkpoint_best_epoch*.pt"))
            self.latest = torch.load(tmp_path / CHECKPOINT_LATEST, weights_only=True)
            self.previous = torch.load(tmp_path / CHECKPOINT_PREVIOUS, weights_only=True)

    rec = FolderAtFinish()
    fit(_spec(RUNS[0], synthetic_data, tmp_path, seed=0), rec)
    best_epoch = rec.outcome.best_epoch
    assert f"checkpoint_best_epoch{best_epoch}.pt" in rec.best
    # only the files the two kept checkpoints name are kept
    named = {rec.latest["state"]["best_weights"], rec.previous["state"]["best_weights"]}
    assert set(rec.best) == named - {None}
    assert "best_model" not in rec.latest["state"]
    assert rec.latest["state"]["best_weights"] == f"checkpoint_best_epoch{best_epoch}.pt"
    assert rec.previous["state"]["epoch"] == rec.latest["state"]["epoch"] - 1
    # a finished run keeps its best model and nothing only a resume would need
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "checkpoint_best" in left
    assert not [n for n in left if n.startswith(("checkpoint_latest", "checkpoint_previous"))]
    assert not [n for n in left if n.startswith("checkpoint_best_epoch") or ".tmp" in n]
    assert rec.config["performance"] == {
        "amp": False,
        "channels_last": False,
        "fused_adam": False,
        "cudnn_benchmark": False,
        "compile": False,
        "checkpoint_interval_s": 0.0,
    }


def test_checkpoint_interval_still_resumes_exactly(synthetic_data, tmp_path, alone):
    """With a long interval only the last epoch and a stop write the checkpoint."""
    spec = _spec(RUNS[0], synthetic_data, tmp_path / "a", seed=0, checkpoint_interval_s=3600)
    with pytest.raises(Cancelled):
        fit(spec, ListRecorder(cancel_after=2))
    rec = ListRecorder()
    outcome = fit(spec, rec)
    assert rec.config["resumed_from"] == 2
    assert rec.epochs == alone[0].epochs[2:]
    assert _summary(outcome) == _summary(alone[0].outcome)


class CrashRecorder(ListRecorder):
    def epoch(self, record):
        if record.epoch == 2:
            raise RuntimeError("worker died")
        super().epoch(record)


@pytest.mark.parametrize(("interval", "resumed_from"), [(0, 1), (3600, 0)])
def test_a_crash_between_checkpoints_repeats_the_epochs_since_the_last(
    synthetic_data, tmp_path, alone, interval, resumed_from
):
    spec = _spec(RUNS[0], synthetic_data, tmp_path, seed=0, checkpoint_interval_s=interval)
    with pytest.raises(RuntimeError, match="worker died"):
        fit(spec, CrashRecorder())
    rec = ListRecorder()
    outcome = fit(spec, rec)
    assert rec.config["resumed_from"] == resumed_from
    assert rec.epochs == alone[0].epochs[resumed_from:]
    assert _summary(outcome) == _summary(alone[0].outcome)


def test_stack_groups_keep_architecture_and_encoder_together(synthetic_data, tmp_path):
    specs = [_spec(r, synthetic_data, tmp_path) for r in RUNS + RUNS[:1]]
    groups = stack_groups(specs, 2)
    assert [[s.run.architecture for s in g] for g in groups] == [["fpn", "fpn"], ["fpn", "pspnet"]]
    with pytest.raises(ValueError, match="at least 1"):
        stack_groups(specs, 0)
