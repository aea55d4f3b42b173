"""fit(): one run of the grid, tested without Celery.

fit() trains with the paper's protocol (Adam 1e-3, batch 2, augmentation fresh each
epoch, selection by lowest validation loss) and reads as its steps: set up (seed,
model, resume, data), then per epoch ``train_epoch`` / ``validate`` / ``end_epoch``
(record, keep the best weights, checkpoint, stop if cancelled), then ``finish`` (test
the best model, save it). Every device decision is the DevicePolicy's
(worker.training.device); the step itself, eager or a replayed CUDA graph, is
worker.training.steps'.

Checkpoints: ``checkpoint_latest.pt`` is written atomically after every epoch on CPU
and at most once a minute on CUDA (and always after the last epoch and when the run
is stopped): model, optimizer, RNG states, epoch, best-so-far, the run's identity and
environment. A resumed run ends with exactly the numbers of an uninterrupted one on
CPU in the same environment (worker.training.checkpoints: the last two are kept,
another run's checkpoint is refused; a resume in another environment is said on the
run and recorded). The best-so-far weights live in their own file,
``checkpoint_best_epoch{N}.pt``, written once when they change. A finished run keeps
only its best model (safetensors + config.json).
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from db.grid import RunSpec
from db.protocol import EpochRecord, Protocol, RunOutcome, environment_key
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
    DevicePolicy,
    environment_changes,
    git_commit,
    library_versions,
)
from worker.training.evaluate import finish_run
from worker.training.recorder import Cancelled, Recorder
from worker.training.steps import Validation, training_step

log = logging.getLogger(__name__)


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
    # Speed switches of the DevicePolicy: None = the device's default (off on CPU; on
    # for CUDA, except CUDA graphs, which are opt-in until measured bit-identical).
    # None of them is part of the protocol; cudnn_benchmark and cuda_graphs are part of
    # the run's environment.
    channels_last: bool | None = None
    fused_adam: bool | None = None
    cudnn_benchmark: bool | None = None
    cuda_graphs: bool | None = None
    compile: bool = False
    checkpoint_interval_s: float | None = None  # None: 0 (every epoch) on CPU, 60 on CUDA
    # Who the run is ({"run_uid", "run", "protocol_hash"}): written into every
    # checkpoint; a checkpoint of another identity is never resumed. None (fit()
    # outside the database): any checkpoint of artifacts_dir is resumed.
    identity: dict | None = None

    def policy(self) -> DevicePolicy:
        return DevicePolicy(
            self.device,
            self.protocol,
            channels_last=self.channels_last,
            fused_adam=self.fused_adam,
            cudnn_benchmark=self.cudnn_benchmark,
            cuda_graphs=self.cuda_graphs,
            compile=self.compile,
            checkpoint_interval_s=self.checkpoint_interval_s,
        )


class RunTrainer:
    """One run: construction sets it up, run() trains the remaining epochs and tests.

    Construction seeds, builds the model, resumes from ``checkpoint_latest.pt`` if there
    is one, moves the data to the device and calls ``recorder.start``.
    """

    def __init__(self, spec: TrainSpec, recorder: Recorder | None = None):
        self.spec = spec
        self.recorder = recorder or Recorder()
        p = self.protocol = spec.protocol
        policy = self.policy = spec.policy()
        policy.configure()
        self.device = policy.device
        self.dataset = load_dataset(
            spec.data_dir, spec.run.experiment, p.image_size, test_resize=p.test_resize
        )
        self.artifacts = Path(spec.artifacts_dir)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.artifacts)
        self.loss_fn = losses.get_loss(p.loss)
        self.aug_cfg = augment.config_for(spec.run.experiment, p.augment_mode)
        self.environment = policy.environment()
        self._fresh_start()
        self.resume_note = self._resume()
        # the best-weights files named by the previous and the latest checkpoint
        self._kept_best: list[str | None] = [None, self.state["best_weights"]]

        self.x_train, self.y_train = policy.to_device(self.dataset.train)
        self.x_val, self.y_val = policy.to_device(self.dataset.validation)
        self.parameters_m = models.count_parameters(self.model)
        if policy.switches.compile:
            self.model.compile()  # in place: state_dict keys stay those of the plain model
        self.step = training_step(
            self.model,
            self.optimizer,
            self.loss_fn,
            self.x_train,
            self.y_train,
            self.aug_cfg if p.augment else None,
            policy,
            p.batch_size,
        )
        self.validation = Validation(
            self.model, self.loss_fn, self.x_val, self.y_val, p.batch_size, policy
        )
        self.recorder.start(self._config())
        self._last_checkpoint = time.perf_counter()

    def _config(self) -> dict:
        spec, p, dataset = self.spec, self.protocol, self.dataset
        return {
            "run": spec.run.to_dict(),
            "protocol": p.to_dict(),
            "protocol_hash": p.hash(),
            "versions": library_versions(),
            "git_commit": git_commit(),
            "device": self.policy.name(),
            "performance": asdict(self.policy.switches),
            "environment": self.environment,
            "environment_key": environment_key(self.environment),
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

    # --- set-up -----------------------------------------------------------------------

    def _fresh_start(self) -> None:
        """Seed, build the model and optimizer, and start the bookkeeping at epoch 0."""
        policy = self.policy
        self.shuffle_gen, self.aug_gen = policy.seed()
        self.model = policy.place_model(models.build_model(self.spec.run))
        self.optimizer = policy.optimizer(self.model, self.protocol.lr)
        self.state = {
            "epoch": 0,
            "best_val_loss": math.inf,
            "best_epoch": 0,
            "best_weights": None,  # file name of the best-so-far weights
            "train_seconds": [],
            "val_seconds": [],
            "first_layer_before": models.first_conv(self.model).weight.detach().cpu().clone(),
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
                notes.extend(self._environment_since(found.checkpoint.get("environment")))
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
        self.policy.set_rng_state({**ckpt["rng"], "cuda": ckpt.get("cuda_rng")})
        state = ckpt["state"]
        state.setdefault("best_weights", None)
        self.best_model = best_model
        self.state = state
        self.resumed_from = state["epoch"]

    def _environment_since(self, before: dict | None) -> list[str]:
        """A resume in another environment is said and recorded: the run's environment
        then lists the earlier ones, so it never pools with an uninterrupted run."""
        if before is None:  # a checkpoint written before environments were recorded
            return []
        earlier = before.get("earlier", [])
        before = {k: v for k, v in before.items() if k != "earlier"}
        changes = environment_changes(before, self.environment)
        if not changes and not earlier:
            return []
        self.environment = {**self.environment, "earlier": [*earlier, before]}
        if not changes:
            return []
        return [
            f"the environment changed since the checkpoint ({', '.join(changes)}), so this "
            "run's numbers are not those of an uninterrupted run"
        ]

    # --- the epoch ----------------------------------------------------------------------

    def run(self) -> RunOutcome:
        """Train the remaining epochs, then test the best model.

        Raises Cancelled after the epoch in which the recorder asked to stop."""
        for epoch in range(self.state["epoch"] + 1, self.protocol.epochs + 1):
            train_loss, train_seconds = self.train_epoch()
            val_loss, val_seconds = self.validate()
            self.end_epoch(epoch, train_loss, val_loss, train_seconds, val_seconds)
        return self.finish()

    def epoch_batches(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The epoch's shuffled order and its augmentation matrices (drawn batch by
        batch from the run's generators, then copied to the device once)."""
        n, bs = len(self.x_train), self.protocol.batch_size
        order = torch.randperm(n, generator=self.shuffle_gen).to(self.device)
        theta = None
        if self.protocol.augment and n:
            draws = [
                augment.random_affine(min(bs, n - s), self.aug_cfg, self.aug_gen)
                for s in range(0, n, bs)
            ]
            theta = torch.cat(draws).to(self.device)
        return order, theta

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the training slices; returns the mean loss and the seconds."""
        started = time.perf_counter()
        self.model.train()
        order, theta = self.epoch_batches()
        bs = self.protocol.batch_size
        step_losses = []
        with self.policy.training_math():
            for start in range(0, len(order), bs):
                batch_theta = theta[start : start + bs] if theta is not None else None
                step_losses.append(self.step(order[start : start + bs], batch_theta))
        train_loss = float(torch.stack(step_losses).mean()) if step_losses else math.nan
        self.policy.synchronize()
        return train_loss, time.perf_counter() - started

    def validate(self) -> tuple[float, float]:
        """The validation loss (IEEE fp32: it selects the model) and its seconds."""
        started = time.perf_counter()
        loss = self.validation()
        return loss, time.perf_counter() - started

    def end_epoch(
        self, epoch: int, train_loss: float, val_loss: float, train_s: float, val_s: float
    ) -> None:
        """Keep the best weights, record the epoch, checkpoint, stop if cancelled."""
        state = self.state
        is_best = math.isfinite(val_loss) and val_loss < state["best_val_loss"]
        if is_best:
            state["best_val_loss"] = val_loss
            state["best_epoch"] = epoch
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        state["epoch"] = epoch
        state["train_seconds"].append(train_s)
        state["val_seconds"].append(val_s)
        if hasattr(self.step, "check"):
            self.step.check()  # a replaced tensor must never be replayed silently
        self.recorder.epoch(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                train_seconds=train_s,
                val_seconds=val_s,
                is_best=is_best,
            )
        )
        since = time.perf_counter() - self._last_checkpoint
        written = (
            since >= self.policy.switches.checkpoint_interval_s or epoch == self.protocol.epochs
        )
        if written:
            self.checkpoint()
        if self.recorder.cancelled():
            if not written:
                self.checkpoint()  # a stopped run resumes from exactly here
            raise Cancelled(f"run {self.spec.run.name} was cancelled after epoch {epoch}")

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
        rng = self.policy.rng_state()
        save_latest(
            {
                "identity": self.spec.identity,
                "environment": self.environment,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "shuffle_rng": self.shuffle_gen.get_state(),
                "augment_rng": self.aug_gen.get_state(),
                "rng": {"torch": rng["torch"]},
                "cuda_rng": rng.get("cuda"),
                "state": state,
            },
            self.artifacts,
        )
        # only now does no kept checkpoint point at an older best file
        self._kept_best = [self._kept_best[-1], state["best_weights"]]
        remove_best_weights_except(self.artifacts, {n for n in self._kept_best if n})
        self._last_checkpoint = time.perf_counter()

    # --- the end --------------------------------------------------------------------------

    def effective_environment(self) -> dict:
        """The environment as the run really trained: a CUDA graph that could not be
        captured, and ops without a deterministic kernel, are written into it."""
        env = dict(self.environment)
        fallbacks = [f for f in (self.step.fallback, self.validation.fallback) if f]
        if fallbacks:
            env["cuda_graph_fallback"] = "; ".join(fallbacks)
            env["cuda_graphs"] = not self.step.fallback
        if self.policy.nondeterministic_ops:
            env["nondeterministic_ops"] = sorted(self.policy.nondeterministic_ops)
        return env

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
            environment=self.effective_environment(),
        )
        remove_training_state(self.artifacts)
        return outcome


def fit(spec: TrainSpec, recorder: Recorder | None = None) -> RunOutcome:
    """Train one run of the grid and evaluate its best model on the test set."""
    return RunTrainer(spec, recorder).run()
