"""fit / evaluate as plain functions: one run of the grid, tested without Celery.

fit() trains with the paper's protocol (Adam 1e-3, batch 2, augmentation fresh
each epoch, selection by lowest validation loss), writes ``checkpoint_latest.pt``
atomically after every epoch (model, optimizer, RNG states, epoch, best-so-far)
and resumes from it, so an interrupted run ends with exactly the numbers of an
uninterrupted one on CPU. The best model is saved as safetensors + config.json.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from worker import augment, data, losses, metrics, models
from worker.grid import RunSpec
from worker.protocol import (
    Cancelled,
    EpochRecord,
    Protocol,
    Recorder,
    RunOutcome,
    SliceCounts,
    TestResult,
)

log = logging.getLogger(__name__)

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_BEST = "checkpoint_best"


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


class TeeRecorder(Recorder):
    """Forwards every call to several recorders (e.g. database + progress bar)."""

    def __init__(self, *recorders: Recorder):
        self.recorders = [r for r in recorders if r is not None]

    def start(self, config: dict) -> None:
        for r in self.recorders:
            r.start(config)

    def epoch(self, record: EpochRecord) -> None:
        for r in self.recorders:
            r.epoch(record)

    def cancelled(self) -> bool:
        return any(r.cancelled() for r in self.recorders)

    def finish(self, outcome: RunOutcome) -> None:
        for r in self.recorders:
            r.finish(outcome)


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"Device '{name}' was requested but CUDA is not available here; use --device cpu."
        )
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"Unknown device '{name}'; expected cpu or cuda[:N].")
    return torch.device(name)


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import nibabel
    import segmentation_models_pytorch as smp

    try:
        own = version("segbench")
    except PackageNotFoundError:
        own = "unknown"
    return {
        "segbench": own,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _to_tensor(split: data.Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(split.images, dtype=np.float32))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(split.masks)).to(torch.float32)[:, None]
    return x.to(device), y.to(device)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def fit(spec: TrainSpec, recorder: Recorder | None = None) -> RunOutcome:
    """Train one run of the grid and evaluate its best model on the test set."""
    recorder = recorder or Recorder()
    p = spec.protocol
    device = resolve_device(spec.device)
    dataset = data.load_dataset(spec.data_dir, spec.run.experiment, p.image_size)
    artifacts = Path(spec.artifacts_dir)
    artifacts.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(p.seed)
    np.random.seed(p.seed % 2**32)
    model = models.build_model(spec.run).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = losses.get_loss(p.loss)
    aug_cfg = augment.config_for(spec.run.experiment, p.augment_mode)
    shuffle_gen = torch.Generator().manual_seed(p.seed)
    aug_gen = torch.Generator().manual_seed(p.seed + 1)

    state = {
        "epoch": 0,
        "best_val_loss": math.inf,
        "best_epoch": 0,
        "best_model": None,
        "train_seconds": [],
        "val_seconds": [],
        "first_layer_before": models.first_conv(model).weight.detach().cpu().clone(),
    }
    latest = artifacts / CHECKPOINT_LATEST
    resumed_from = 0
    if latest.exists():
        ckpt = torch.load(latest, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle_gen.set_state(ckpt["shuffle_rng"])
        aug_gen.set_state(ckpt["augment_rng"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        state = ckpt["state"]
        resumed_from = state["epoch"]
        log.info("resuming %s from epoch %d", spec.run.name, resumed_from)

    x_train, y_train = _to_tensor(dataset.train, device)
    x_val, y_val = _to_tensor(dataset.validation, device)
    parameters_m = models.count_parameters(model)
    recorder.start(
        {
            "run": spec.run.to_dict(),
            "protocol": p.to_dict(),
            "protocol_hash": p.hash(),
            "versions": library_versions(),
            "git_commit": git_commit(),
            "device": device_name(device),
            "dataset": {
                "name": dataset.name,
                "kind": dataset.kind,
                "synthetic": dataset.synthetic,
                "manifest_hash": dataset.manifest_hash,
                "path": str(spec.data_dir),
            },
            "parameters_m": parameters_m,
            "resumed_from": resumed_from,
            "host": platform.node(),
        }
    )

    for epoch in range(state["epoch"] + 1, p.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle_gen).to(device)
        train_losses = []
        for start in range(0, len(order), p.batch_size):
            idx = order[start : start + p.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if p.augment:
                xb, yb = augment.augment_batch(xb, yb, aug_gen, aug_cfg)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            train_losses.append(loss.detach())
        train_loss = float(torch.stack(train_losses).mean())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        val_loss = validation_loss(model, x_val, y_val, loss_fn, p.batch_size)
        t2 = time.perf_counter()

        is_best = math.isfinite(val_loss) and val_loss < state["best_val_loss"]
        if is_best:
            state["best_val_loss"] = val_loss
            state["best_epoch"] = epoch
            state["best_model"] = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            }
        state["epoch"] = epoch
        state["train_seconds"].append(t1 - t0)
        state["val_seconds"].append(t2 - t1)
        recorder.epoch(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                train_seconds=t1 - t0,
                val_seconds=t2 - t1,
                is_best=is_best,
            )
        )
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "shuffle_rng": shuffle_gen.get_state(),
                "augment_rng": aug_gen.get_state(),
                "rng": _rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "state": state,
            },
            latest,
        )
        if recorder.cancelled():
            raise Cancelled(f"run {spec.run.name} was cancelled after epoch {epoch}")

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    return _finish(spec, model, dataset, state, parameters_m, recorder, device)


def validation_loss(model, x: torch.Tensor, y: torch.Tensor, loss_fn, batch_size: int) -> float:
    model.eval()
    values = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            values.append(
                loss_fn(model(x[start : start + batch_size]), y[start : start + batch_size])
            )
    return float(torch.stack(values).mean()) if values else float("nan")


def predict(model, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Probabilities for (N, 1, H, W) normalised images, in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            out.append(model(images[start : start + batch_size]).float())
    return torch.cat(out) if out else images.new_zeros(images.shape)


def gallery_indices(masks: np.ndarray, k: int = 4) -> list[int]:
    """Test slices shown in the mask gallery: the one with the largest target,
    then evenly spaced slices among those with a target, then any."""
    if k <= 0 or len(masks) == 0:
        return []
    area = masks.reshape(len(masks), -1).sum(1)
    chosen = [int(area.argmax())]
    positive = np.flatnonzero(area > 0)
    pool = positive if len(positive) else np.arange(len(masks))
    for q in np.linspace(0, len(pool) - 1, num=min(k, len(pool))):
        i = int(pool[int(round(q))])
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen[:k])


def evaluate(
    model: torch.nn.Module,
    split: data.Split,
    *,
    device: torch.device | str = "cpu",
    metric_mode: str = "standard",
    batch_size: int = 8,
    gallery: list[int] | None = None,
) -> tuple[TestResult, dict[int, np.ndarray]]:
    """Per-slice TP/FP/FN/TN and mean Sens/Spec/Dice (percent) on a test split.

    Returns the result and the predicted binary masks of the ``gallery`` slices.
    """
    device = torch.device(device)
    t0 = time.perf_counter()
    x, y = _to_tensor(split, device)
    counts = []
    gallery = set(gallery or [])
    masks: dict[int, np.ndarray] = {}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            prob = model(x[start : start + batch_size]).float()
            counts.append(metrics.confusion_counts(prob, y[start : start + batch_size]).cpu())
            for j in range(prob.shape[0]):
                if start + j in gallery:
                    masks[start + j] = (prob[j, 0] > 0.5).cpu().numpy()
    c = torch.cat(counts).numpy() if counts else np.zeros((0, 4), dtype=np.int64)
    summary = metrics.summarize(c, metric_mode)
    slices = [
        SliceCounts(
            index=i,
            volume=int(split.volume[i]),
            slice=int(split.slice[i]),
            tp=int(row[0]),
            fp=int(row[1]),
            fn=int(row[2]),
            tn=int(row[3]),
        )
        for i, row in enumerate(c)
    ]
    result = TestResult(
        slices=slices, metric_mode=metric_mode, seconds=time.perf_counter() - t0, **summary
    )
    return result, masks


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _finish(spec, model, dataset, state, parameters_m, recorder, device) -> RunOutcome:
    p = spec.protocol
    gallery = gallery_indices(dataset.test.masks, spec.gallery_size)
    test, masks = evaluate(
        model,
        dataset.test,
        device=device,
        metric_mode=p.metric_mode,
        batch_size=spec.eval_batch_size,
        gallery=gallery,
    )
    best_dir = Path(spec.artifacts_dir) / CHECKPOINT_BEST
    model_cpu = copy.deepcopy(model).to("cpu")
    weights = models.save_model(
        model_cpu,
        best_dir,
        metadata={
            **spec.run.to_dict(),
            "protocol": p.to_dict(),
            "dataset": {
                "name": dataset.name,
                "synthetic": dataset.synthetic,
                "manifest_hash": dataset.manifest_hash,
            },
            "preprocessing": {
                "input": "CT slice in Hounsfield units, one channel, slices along the last axis",
                "normalisation": {"mean": -500.0, "std": 500.0},
                "image_size": p.image_size,
                "lung_masked_input": spec.run.experiment == "lesion-segmentation-b",
                "threshold": 0.5,
            },
            "best_epoch": state["best_epoch"],
            "test": {
                "dice": test.dice,
                "sensitivity": test.sensitivity,
                "specificity": test.specificity,
                "metric_mode": test.metric_mode,
            },
        },
    )
    after = models.first_conv(model_cpu).weight.detach().float()
    before = state["first_layer_before"].float()
    outcome = RunOutcome(
        test=test,
        best_epoch=state["best_epoch"],
        best_val_loss=state["best_val_loss"],
        parameters_m=parameters_m,
        train_seconds_per_epoch=float(np.mean(state["train_seconds"]))
        if state["train_seconds"]
        else 0.0,
        val_seconds_per_epoch=float(np.mean(state["val_seconds"])) if state["val_seconds"] else 0.0,
        checkpoint_dir=str(best_dir),
        checkpoint_sha256=_sha256(weights),
        gallery={i: np.packbits(m.astype(np.uint8).ravel()).tobytes() for i, m in masks.items()},
        gallery_shape=tuple(dataset.test.masks.shape[1:]),
        first_layer_before=before.numpy().tobytes(),
        first_layer_after=after.numpy().tobytes(),
        first_layer_shape=tuple(after.shape),
    )
    recorder.finish(outcome)
    return outcome
