"""fit() on CPU is bit-identical to a plain transcription of the training loop.

`reference_fit` below is the loop as segbench ran it before the device policy and the
step objects existed (seeding, shuffle and augmentation generators, Adam, one eager
step per batch, validation loss, selection by the lowest validation loss), written
out with torch calls only. fit() with the `shared` seed streams and IEEE fp32 must give
the same losses bit for bit, the same best epoch and the same best weights, and so
the same test counts: a refactoring of the trainer, the device policy or the step
objects may not move a number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from db.grid import RunSpec
from db.protocol import Protocol
from worker.data.dataset import load_dataset
from worker.training import augment, losses, models
from worker.training.evaluate import evaluate
from worker.training.recorder import Recorder
from worker.training.trainer import TrainSpec, fit

# Trains three smp models twice each, bit for bit: outside `make test-fast`.
pytestmark = pytest.mark.slow


def reference_fit(run: RunSpec, protocol: Protocol, data_dir) -> dict:
    p = protocol
    ds = load_dataset(data_dir, run.experiment, p.image_size, test_resize=p.test_resize)
    torch.manual_seed(p.seed)
    np.random.seed(p.seed)
    model = models.build_model(run)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.999), eps=1e-8)
    shuffle_gen = torch.Generator().manual_seed(p.seed)
    aug_gen = torch.Generator().manual_seed(p.seed + 1)
    cfg = augment.config_for(run.experiment, p.augment_mode)
    loss_fn = losses.get_loss(p.loss)
    x = torch.from_numpy(ds.train.images.astype(np.float32))[:, None]
    y = torch.from_numpy(ds.train.masks).float()[:, None]
    xv = torch.from_numpy(ds.validation.images.astype(np.float32))[:, None]
    yv = torch.from_numpy(ds.validation.masks).float()[:, None]
    n, bs = len(x), p.batch_size
    train_losses, val_losses, best, best_epoch, best_loss = [], [], None, 0, math.inf
    for epoch in range(1, p.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle_gen)
        theta = torch.cat(
            [augment.random_affine(min(bs, n - s), cfg, aug_gen) for s in range(0, n, bs)]
        )
        step_losses = []
        for s in range(0, n, bs):
            idx = order[s : s + bs]
            xb, yb = augment.apply_affine(x[idx], y[idx], theta[s : s + bs], cfg)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            step_losses.append(loss.detach())
        train_losses.append(float(torch.stack(step_losses).mean()))
        model.eval()
        with torch.inference_mode():
            values = [loss_fn(model(xv[s : s + bs]), yv[s : s + bs]) for s in range(0, len(xv), bs)]
        val = float(torch.stack(values).mean())
        val_losses.append(val)
        if val < best_loss:
            best_loss, best_epoch = val, epoch
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best)
    result, _ = evaluate(model, ds.test, metric_mode=p.metric_mode)
    counts = np.array([[c.tp, c.fp, c.fn, c.tn] for c in result.slices])
    return {
        "train": train_losses,
        "val": val_losses,
        "best_epoch": best_epoch,
        "best": best,
        "counts": counts,
    }


class Losses(Recorder):
    def __init__(self):
        self.train, self.val = [], []

    def epoch(self, record):
        self.train.append(record.train_loss)
        self.val.append(record.val_loss)


@pytest.mark.parametrize(
    "run",
    [
        RunSpec("lesion-segmentation-b", "unet", "resnet18", "random"),
        # FPN's dropout draws from the global generator between the steps
        RunSpec("lung-segmentation", "fpn", "mobilenet_v2", "random"),
    ],
    ids=lambda r: r.name,
)
def test_fit_equals_the_transcribed_loop_bit_for_bit(synthetic_data, tmp_path, run):
    protocol = Protocol(epochs=3, image_size=64, seed=7, seed_streams="shared")
    want = reference_fit(run, protocol, synthetic_data)
    rec = Losses()
    spec = TrainSpec(run=run, protocol=protocol, data_dir=synthetic_data, artifacts_dir=tmp_path)
    outcome = fit(spec, rec)
    assert rec.train == want["train"]
    assert rec.val == want["val"]
    assert outcome.best_epoch == want["best_epoch"]
    got = np.array([[c.tp, c.fp, c.fn, c.tn] for c in outcome.test.slices])
    assert np.array_equal(got, want["counts"])
    saved = models.load_model(tmp_path / "checkpoint_best").state_dict()
    for key, value in want["best"].items():
        assert torch.equal(saved[key], value), key
