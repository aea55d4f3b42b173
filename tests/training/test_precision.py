"""Precision is the protocol's: bf16 autocast only in the training step when
train_precision says so; the validation loss (model selection) and the test pass are
fp32 whatever it says. Checked by recomputing both in plain fp32 from the saved model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from db.grid import RunSpec
from db.protocol import Protocol
from worker import data
from worker.training import losses, models
from worker.training.evaluate import evaluate
from worker.training.recorder import Recorder
from worker.training.steps import validation_loss
from worker.training.trainer import TrainSpec, fit

RUN = RunSpec("lung-segmentation", "unet", "resnet18", "random")


class Keep(Recorder):
    def start(self, config):
        self.config = config

    def epoch(self, record):
        self.last = record


def train(synthetic_data, tmp_path, precision: str):
    rec = Keep()
    spec = TrainSpec(
        run=RUN,
        protocol=Protocol(epochs=1, image_size=64, train_precision=precision),
        data_dir=synthetic_data,
        artifacts_dir=tmp_path / precision,
    )
    return fit(spec, rec), rec


@pytest.mark.slow
def test_bf16_trains_in_bf16_but_validates_and_tests_in_fp32(synthetic_data, tmp_path):
    outcome, rec = train(synthetic_data, tmp_path, "bf16")
    assert rec.config["performance"]["amp"] is True
    assert rec.config["protocol"]["train_precision"] == "bf16"
    model = models.load_model(tmp_path / "bf16" / "checkpoint_best").eval()
    ds = data.load_dataset(synthetic_data, RUN.experiment, 64)
    # the stored test counts are those of a plain fp32 pass over the saved model
    fp32, _ = evaluate(model, ds.test, metric_mode="standard")
    stored = [(s.tp, s.fp, s.fn, s.tn) for s in outcome.test.slices]
    assert stored == [(s.tp, s.fp, s.fn, s.tn) for s in fp32.slices]
    # and the validation loss that selected it is the fp32 one
    x = torch.from_numpy(ds.validation.images[:, None].astype(np.float32))
    y = torch.from_numpy(ds.validation.masks[:, None].astype(np.float32))
    val = validation_loss(model, x, y, losses.get_loss("soft-dice"), 2)
    assert rec.last.val_loss == pytest.approx(val, rel=1e-6, abs=1e-7)
    # fp32 training is the default and gives other weights than bf16 training
    default, rec32 = train(synthetic_data, tmp_path, "fp32")
    assert rec32.config["performance"]["amp"] is False
    assert rec.last.train_loss != rec32.last.train_loss
