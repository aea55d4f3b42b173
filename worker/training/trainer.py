"""fit / evaluate as plain functions: one run of the grid, tested without Celery.

fit() trains with the paper's protocol (Adam 1e-3, batch 2, augmentation fresh
each epoch, selection by lowest validation loss), writes ``checkpoint_latest.pt``
atomically after every epoch (model, optimizer, RNG states, epoch, best-so-far,
the identity of the run) and resumes from it, so an interrupted run ends with
exactly the numbers of an uninterrupted one on CPU (worker.training.checkpoints:
the last two are kept, another run's checkpoint is refused). The best model is
saved as safetensors + config.json; a finished run keeps only that.

The best-so-far weights live in their own file, ``checkpoint_best_epoch{N}.pt``,
written once when they change instead of inside every latest checkpoint. On CUDA
the latest checkpoint is written at most once a minute (and always after the last
epoch and when the run is stopped): a GPU epoch of a small model is shorter than
writing its checkpoint. The speed switches of TrainSpec are off on CPU and on for
CUDA (reasoned defaults, not yet measured on a GPU: bench/README.md); none of them
changes the numbers beyond floating-point order. Precision is not a switch but the
protocol's ``train_precision``: bf16 autocast of the training step only when it says
so; the validation loss (model selection) and the test pass always run in fp32.
RunTrainer holds one run's state between steps, so worker.training.stacked can train
several runs in lockstep on one device.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from db.grid import RunSpec
from db.protocol import EpochRecord, Protocol, RunOutcome
from worker.data.dataset import load_dataset
from worker.training import augment, losses, models
from worker.training.checkpoints import (
    BEST_WEIGHTS,
    find_resumable,
    remove_best_weights_except,
    remove_temp_files,
    remove_training_state,
    save_atomic,
    save_latest,
)
from worker.training.device import (
    autocast,
    device_name,
    git_commit,
    library_versions,
    resolve_device,
    to_tensor,
)
from worker.training.evaluate import finish_run, validation_loss
from worker.training.recorder import Cancelled, Recorder

log = logging.getLogger(__name__)

# Seconds between latest checkpoints on CUDA (bench/README.md: writing one costs
# about as much as a GPU epoch of a small model; a CPU epoch is far longer).
CUDA_CHECKPOINT_INTERVAL_S = 60.0


@dataclass
class TrainSpec:
    """Everything fit() needs: which model, which protocol, which data, where."""

    run: RunSpec
    protocol: Protocol = field(default_factory=Protocol)
    data_dir: Path = Path("data")
    device: str = "cpu"
    artifacts_dir: Path = Path("artifacts")
    gallery_size: int = 4
    eval_batch_size: int = 8
    # Speed switches: None = the device's default (all off on CPU, where they
    # would cost time; on for CUDA). None of them changes the protocol (batch size,
    # augmentation, selection, precision: Protocol.train_precision).
    channels_last: bool | None = None  # NHWC weights for tensor-core convolutions
    fused_adam: bool | None = None  # torch.optim.Adam(fused=True)
    cudnn_benchmark: bool | None = None  # let cuDNN time its algorithms once
    compile: bool = False  # torch.compile: minutes of compiling per model, unmeasured
    checkpoint_interval_s: float | None = None  # None: 0 (every epoch) on CPU, 60 on CUDA
    # Who the run is ({"run_uid", "run", "protocol_hash"}): written into every
    # checkpoint; a checkpoint of another identity is never resumed. None (fit()
    # outside the database): any checkpoint of artifacts_dir is resumed.
    identity: dict | None = None

    def performance(self, device: torch.device) -> Performance:
        """The switches resolved for ``device``."""
        cuda = device.type == "cuda"

        def auto(value: bool | None) -> bool:
            return cuda if value is None else bool(value)

        interval = self.checkpoint_interval_s
        if interval is None:
            interval = CUDA_CHECKPOINT_INTERVAL_S if cuda else 0.0
        return Performance(
            amp=self.protocol.train_precision == "bf16",
            channels_last=auto(self.channels_last),
            fused_adam=auto(self.fused_adam),
            cudnn_benchmark=auto(self.cudnn_benchmark),
            compile=bool(self.compile),
            checkpoint_interval_s=float(interval),
        )


@dataclass(frozen=True)
class Performance:
    """TrainSpec's speed switches as used on one device (kept in the run's config)."""

    amp: bool  # bf16 autocast of the training step (Protocol.train_precision)
    channels_last: bool
    fused_adam: bool
    cudnn_benchmark: bool
    compile: bool
    checkpoint_interval_s: float


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


class RunTrainer:
    """One run of the grid, trained a unit of work at a time.

    Construction does what fit() does before its first epoch: seed, build the
    model, resume from ``checkpoint_latest.pt`` if there is one, move the data to
    the device and call ``recorder.start``. ``steps()`` then trains the remaining
    epochs, yielding after each unit of work (an epoch's set-up, every optimizer
    step, the epoch's end: validation, ``recorder.epoch``, checkpoint,
    ``recorder.cancelled``), and ``finish()`` tests the best model. fit() runs one
    trainer to the end; worker.training.stacked.fit_many interleaves several.
    """

    def __init__(self, spec: TrainSpec, recorder: Recorder | None = None):
        self.spec = spec
        self.recorder = recorder or Recorder()
        p = self.protocol = spec.protocol
        device = self.device = resolve_device(spec.device)
        perf = self.performance = spec.performance(device)
        self.dataset = load_dataset(
            spec.data_dir, spec.run.experiment, p.image_size, test_resize=p.test_resize
        )
        self.artifacts = Path(spec.artifacts_dir)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.artifacts)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = perf.cudnn_benchmark
        self.loss_fn = losses.get_loss(p.loss)
        self.aug_cfg = augment.config_for(spec.run.experiment, p.augment_mode)
        self._fresh_start()
        self.resume_note = self._resume()
        # the best-weights files named by the previous and the latest checkpoint
        self._kept_best: list[str | None] = [None, self.state["best_weights"]]

        self.x_train, self.y_train = to_tensor(self.dataset.train, device)
        self.x_val, self.y_val = to_tensor(self.dataset.validation, device)
        self.parameters_m = models.count_parameters(self.model)
        if perf.compile:
            self.model.compile()  # in place: state_dict keys stay those of the plain model
        dataset = self.dataset
        self.recorder.start(
            {
                "run": spec.run.to_dict(),
                "protocol": p.to_dict(),
                "protocol_hash": p.hash(),
                "versions": library_versions(),
                "git_commit": git_commit(),
                "device": device_name(device),
                "performance": asdict(perf),
                "dataset": {
                    "name": dataset.name,
                    "kind": dataset.kind,
                    "synthetic": dataset.synthetic,
                    "manifest_hash": dataset.manifest_hash,
                    "path": str(spec.data_dir),
                },
                "parameters_m": self.parameters_m,
                "paper": spec.run.paper,
                "model": models.provenance_of(self.model),
                "resumed_from": self.resumed_from,
                "resume_note": self.resume_note,
                "host": platform.node(),
            }
        )
        self._last_checkpoint = time.perf_counter()

    def _fresh_start(self) -> None:
        """Seed, build the model and optimizer, and start the bookkeeping at epoch 0."""
        p, perf = self.protocol, self.performance
        torch.manual_seed(p.seed)
        np.random.seed(p.seed % 2**32)
        model = models.build_model(self.spec.run).to(self.device)
        if perf.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=p.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            **({"fused": True} if perf.fused_adam else {}),
        )
        self.model = model
        self.shuffle_gen = torch.Generator().manual_seed(p.seed)
        self.aug_gen = torch.Generator().manual_seed(p.seed + 1)
        self.state = {
            "epoch": 0,
            "best_val_loss": math.inf,
            "best_epoch": 0,
            "best_weights": None,  # file name of the best-so-far weights
            "train_seconds": [],
            "val_seconds": [],
            "first_layer_before": models.first_conv(model).weight.detach().cpu().clone(),
        }
        self.best_model: dict[str, torch.Tensor] | None = None
        self.resumed_from = 0

    def _resume(self) -> str | None:
        """Continue from the newest usable checkpoint of this run, if there is one;
        returns one sentence on what was resumed or passed over (None: a fresh start
        with nothing to say)."""
        found, notes = find_resumable(self.artifacts, self.spec.identity)
        if found is not None:
            try:
                self._apply(found.checkpoint, found.best_model)
            except Exception as error:  # a checkpoint of another shape of model, say
                notes.append(f"{found.source} did not fit this model ({type(error).__name__})")
                self._fresh_start()
            else:
                log.info("resuming %s from epoch %d", self.spec.run.name, self.resumed_from)
                notes.append(f"resumed from epoch {self.resumed_from} ({found.source})")
                return "; ".join(notes) + "."
        if notes:
            notes.append("started from epoch 1")
            log.warning("%s: %s", self.spec.run.name, "; ".join(notes))
            return "; ".join(notes) + "."
        return None

    def _apply(self, ckpt: dict, best_model: dict | None) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.shuffle_gen.set_state(ckpt["shuffle_rng"])
        self.aug_gen.set_state(ckpt["augment_rng"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
        state = ckpt["state"]
        state.setdefault("best_weights", None)
        self.best_model = best_model
        self.state = state
        self.resumed_from = state["epoch"]

    def steps(self) -> Iterator[None]:
        """Train the remaining epochs; yields after every unit of work.

        Raises Cancelled after the epoch in which the recorder asked to stop."""
        for epoch in range(self.state["epoch"] + 1, self.protocol.epochs + 1):
            yield from self._epoch(epoch)

    def _epoch(self, epoch: int) -> Iterator[None]:
        p, device, perf = self.protocol, self.device, self.performance
        started = time.perf_counter()
        self.model.train()
        n, bs = len(self.x_train), p.batch_size
        order = torch.randperm(n, generator=self.shuffle_gen).to(device)
        theta = None
        if p.augment and n:
            # the epoch's matrices drawn batch by batch as always, copied once
            draws = [
                augment.random_affine(min(bs, n - s), self.aug_cfg, self.aug_gen)
                for s in range(0, n, bs)
            ]
            theta = torch.cat(draws).to(device)
        train_losses = []
        busy = time.perf_counter() - started
        yield
        for start in range(0, n, bs):
            t = time.perf_counter()
            idx = order[start : start + bs]
            xb, yb = self.x_train[idx], self.y_train[idx]
            if theta is not None:
                xb, yb = augment.apply_affine(xb, yb, theta[start : start + bs], self.aug_cfg)
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(device, perf.amp):
                pred = self.model(xb)
            loss = self.loss_fn(pred, yb)
            loss.backward()
            self.optimizer.step()
            train_losses.append(loss.detach())
            busy += time.perf_counter() - t
            yield
        t = time.perf_counter()
        train_loss = float(torch.stack(train_losses).mean())
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        t1 = time.perf_counter()
        train_seconds = busy + (t1 - t)
        val_loss = validation_loss(self.model, self.x_val, self.y_val, self.loss_fn, p.batch_size)
        val_seconds = time.perf_counter() - t1

        state = self.state
        is_best = math.isfinite(val_loss) and val_loss < state["best_val_loss"]
        if is_best:
            state["best_val_loss"] = val_loss
            state["best_epoch"] = epoch
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        state["epoch"] = epoch
        state["train_seconds"].append(train_seconds)
        state["val_seconds"].append(val_seconds)
        self.recorder.epoch(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                train_seconds=train_seconds,
                val_seconds=val_seconds,
                is_best=is_best,
            )
        )
        since = time.perf_counter() - self._last_checkpoint
        written = since >= perf.checkpoint_interval_s or epoch == p.epochs
        if written:
            self.checkpoint()
        if self.recorder.cancelled():
            if not written:
                self.checkpoint()  # a stopped run resumes from exactly here
            raise Cancelled(f"run {self.spec.run.name} was cancelled after epoch {epoch}")
        yield

    def checkpoint(self) -> None:
        """Write ``checkpoint_latest.pt`` atomically (the one before it stays as
        ``checkpoint_previous.pt``); the best-so-far weights go to their own file
        first, and only when they changed since the last one."""
        state = self.state
        if self.best_model is not None:
            name = BEST_WEIGHTS.format(epoch=state["best_epoch"])
            if state["best_weights"] != name:
                save_atomic(
                    {"epoch": state["best_epoch"], "model": self.best_model},
                    self.artifacts / name,
                )
                state["best_weights"] = name
        cuda = self.device.type == "cuda"
        save_latest(
            {
                "identity": self.spec.identity,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "shuffle_rng": self.shuffle_gen.get_state(),
                "augment_rng": self.aug_gen.get_state(),
                "rng": _rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
                "state": state,
            },
            self.artifacts,
        )
        # only now does no kept checkpoint point at an older best file
        self._kept_best = [self._kept_best[-1], state["best_weights"]]
        remove_best_weights_except(self.artifacts, {n for n in self._kept_best if n})
        self._last_checkpoint = time.perf_counter()

    def finish(self) -> RunOutcome:
        """Load the best weights, test them, save the model, call recorder.finish;
        once the results are recorded, remove what only a resume would need."""
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        outcome = finish_run(
            self.spec,
            self.model,
            self.dataset,
            self.state,
            self.parameters_m,
            self.recorder,
            self.device,
        )
        remove_training_state(self.artifacts)
        return outcome


def fit(spec: TrainSpec, recorder: Recorder | None = None) -> RunOutcome:
    """Train one run of the grid and evaluate its best model on the test set."""
    trainer = RunTrainer(spec, recorder)
    for _ in trainer.steps():
        pass
    return trainer.finish()
