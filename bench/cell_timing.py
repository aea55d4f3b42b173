"""Measured seconds of architecture x encoder cells, and the projection of the whole
benchmark from them (used by project_full_benchmark.py and gpu_session.py).

A cell's cost is measured, not derived from FLOPs: on a GPU at the paper's batch of
2 a step is launch-bound, so FLOPs say little (FPN-efficientnet-b6 at 50 GFLOP per
image took 5x longer per image than Unet-vgg19 at 241 on an H200). ``measure_cell``
trains a few steps of one cell with the run's own step object
(worker.training.steps: eager, or a replayed CUDA graph) and DevicePolicy, and times
its validation pass. A table of cells (JSON, one per device, written by the GPU
session) holds the figures; ``project`` turns it into hours for the 600 runs:

    run = epochs x (steps per epoch x step s + validation s + harness s) + test s

Cells the table lacks are estimated by a two-factor model fitted to the measured
ones (log seconds = architecture effect + encoder effect; an encoder never measured
takes its family's median effect) and are counted and labelled as estimated.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import torch

from db.grid import ARCHITECTURES, ENCODERS, RunSpec
from db.protocol import Protocol
from worker.data.dataset import load_dataset
from worker.training import augment, losses, models
from worker.training.device import DevicePolicy
from worker.training.steps import training_step, validation_loss

EPOCHS, TRAIN, VALIDATION, TEST, RUNS_PER_CELL = 200, 80, 20, 829, 6
PAPER_CELLS = [(a, e) for a in ARCHITECTURES for e in ENCODERS]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trial:
    """One cell's model, optimizer and step under one policy, seeded like a run."""

    def __init__(self, cell, data_dir: Path, size: int, device, *, seed=0, **switches):
        protocol_fields = {
            k: switches.pop(k) for k in ("train_precision", "deterministic") if k in switches
        }
        self.protocol = Protocol(image_size=size, seed=seed, **protocol_fields)
        self.policy = DevicePolicy(device, self.protocol, **switches)
        self.policy.configure()
        self.device = self.policy.device
        run = RunSpec("lung-segmentation", cell[0], cell[1], "random")
        ds = load_dataset(data_dir, run.experiment, size)
        self.policy.seed()
        self.model = self.policy.place_model(models.build_model(run))
        self.optimizer = self.policy.optimizer(self.model, self.protocol.lr)
        self.loss_fn = losses.get_loss(self.protocol.loss)
        self.cfg = augment.config_for(run.experiment, "paper")
        self.x, self.y = self.policy.to_device(ds.train)
        self.xv, self.yv = self.policy.to_device(ds.validation)
        self.step = training_step(
            self.model, self.optimizer, self.loss_fn, self.x, self.y, self.cfg, self.policy, 2
        )
        gen = torch.Generator().manual_seed(seed)
        n = len(self.x)
        self.batches = [
            (
                torch.randint(0, n, (2,), generator=gen).to(self.device),
                augment.random_affine(2, self.cfg, gen).to(self.device),
            )
            for _ in range(64)
        ]
        self.done = 0
        self.model.train()

    def steps(self, count: int) -> list[float]:
        """Seconds of each of `count` steps (each synchronised)."""
        seconds = []
        with self.policy.training_math():
            for _ in range(count):
                idx, theta = self.batches[self.done % len(self.batches)]
                started = time.perf_counter()
                self.step(idx, theta)
                sync(self.device)
                seconds.append(time.perf_counter() - started)
                self.done += 1
        return seconds

    def timed_steps(self, count: int) -> float:
        """Mean seconds per step of `count` steps, synchronised once at the end."""
        started = time.perf_counter()
        with self.policy.training_math():
            for _ in range(count):
                idx, theta = self.batches[self.done % len(self.batches)]
                self.step(idx, theta)
                self.done += 1
        sync(self.device)
        return (time.perf_counter() - started) / count

    def validation_seconds(self) -> float:
        started = time.perf_counter()
        validation_loss(self.model, self.xv, self.yv, self.loss_fn, 2)
        sync(self.device)
        elapsed = time.perf_counter() - started
        self.model.train()
        return elapsed

    def parameters(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit for bit (NaN payloads aside)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def measure_cell(cell, data_dir: Path, size: int, device, steps: int = 20) -> dict:
    """Step seconds (eager, and graphed on CUDA), validation seconds per image and peak
    memory of one cell at the device's default switches."""
    eager = Trial(cell, data_dir, size, device)
    if eager.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(eager.device)
    first = eager.steps(1)[0]
    eager.steps(3)
    row = {
        "cell": f"{cell[0]}/{cell[1]}",
        "first_step_s": first,
        "eager_step_s": eager.timed_steps(steps),
        "val_image_s": eager.validation_seconds() / max(1, len(eager.xv)),
        "parameters_m": models.count_parameters(eager.model),
    }
    if eager.device.type == "cuda":
        row["memory_mib"] = torch.cuda.max_memory_allocated(eager.device) / 2**20
        graphed = Trial(cell, data_dir, size, device, cuda_graphs=True)
        graphed.steps(5)  # warm-up, capture
        row["graph_step_s"] = graphed.timed_steps(steps)
        row["graph_fallback"] = graphed.step.fallback
        del graphed
    del eager
    return row


def write_table(path: Path, device_name: str, size: int, rows: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"device": device_name, "image_size": size, "cells": rows}, indent=1) + "\n"
    )


def _fit_factors(measured: dict[str, float]) -> tuple[dict, dict, float]:
    """log s = mu + a[arch] + e[encoder], by alternating least squares."""
    logs = {tuple(k.split("/")): math.log(v) for k, v in measured.items()}
    mu = statistics.mean(logs.values())
    a = dict.fromkeys({k[0] for k in logs}, 0.0)
    e = dict.fromkeys({k[1] for k in logs}, 0.0)
    for _ in range(50):
        for arch in a:
            a[arch] = statistics.mean(v - mu - e[k[1]] for k, v in logs.items() if k[0] == arch)
        for enc in e:
            e[enc] = statistics.mean(v - mu - a[k[0]] for k, v in logs.items() if k[1] == enc)
    return a, e, mu


def cell_seconds(table: dict, key: str = "step_s") -> tuple[dict[str, float], set[str]]:
    """Seconds of `key` for all 100 paper cells: measured ones, and the rest from the
    two-factor model (returned as the second element)."""
    measured = {k: v[key] for k, v in table["cells"].items() if v.get(key)}
    if not measured:
        raise ValueError(f"the table has no cell with {key}")
    a, e, mu = _fit_factors(measured)
    family_effect: dict[str, list[float]] = {}
    for enc, effect in e.items():
        family_effect.setdefault(ENCODERS.get(enc, enc), []).append(effect)
    out, estimated = {}, set()
    for arch, enc in PAPER_CELLS:
        key_ = f"{arch}/{enc}"
        if key_ in measured:
            out[key_] = measured[key_]
            continue
        arch_effect = a.get(arch, statistics.median(a.values()))
        enc_effect = e.get(enc)
        if enc_effect is None:
            enc_effect = statistics.median(
                family_effect.get(ENCODERS[enc], [statistics.median(e.values())])
            )
        out[key_] = math.exp(mu + arch_effect + enc_effect)
        estimated.add(key_)
    return out, estimated


def project(table: dict, *, graphed: bool, harness_s: float = 0.0, epochs: int = EPOCHS) -> dict:
    """Hours for the 600 runs x `epochs`, one run at a time, from a cell table."""
    key = "graph_step_s" if graphed else "eager_step_s"
    steps_per_epoch = TRAIN // 2
    step, estimated = cell_seconds(table, key)
    val, _ = cell_seconds(table, "val_image_s")
    total = 0.0
    for cell in step:
        epoch = steps_per_epoch * step[cell] + VALIDATION * val[cell] + harness_s
        run = epochs * epoch + TEST * val[cell]
        total += RUNS_PER_CELL * run
    return {
        "hours": total / 3600,
        "measured_cells": len(step) - len(estimated),
        "estimated_cells": len(estimated),
        "step": key,
    }
