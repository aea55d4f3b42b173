"""Test evaluation and the best model of a finished run."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from db.grid import EXPERIMENT_SPECS
from db.protocol import RunOutcome, SliceCounts, TestResult
from worker.data.dataset import Split
from worker.data.layout import sha256_file
from worker.data.preprocess import HU_MEAN, HU_STD
from worker.training import metrics, models
from worker.training.device import to_tensor
from worker.training.volumes import VolumeScorer, volume_summary

CHECKPOINT_BEST = "checkpoint_best"


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
    split: Split,
    *,
    device: torch.device | str = "cpu",
    metric_mode: str = "standard",
    batch_size: int = 8,
    gallery: list[int] | None = None,
    spacing: list[tuple[float, float, float]] | None = None,
    nsd_tolerance_mm: float = 2.0,
    boundary_mode: str = "surface-area",
    progress=lambda done, total: None,  # e.g. Recorder.testing
) -> tuple[TestResult, dict[int, np.ndarray]]:
    """Per-slice TP/FP/FN/TN and mean Sens/Spec/Dice (percent) on a test split, and
    per test volume 3-D Dice plus, given each volume's ``spacing`` (rows, columns,
    slices in mm, as Dataset.test_spacing), NSD and HD95 (worker.training.volumes); in fp32.

    Returns the result and the predicted binary masks of the ``gallery`` slices.
    Counts stay on the device until the last batch (one copy, no per-slice sync);
    with boundary metrics each batch's masks come to the CPU to be scored.
    """
    device = torch.device(device)
    t0 = time.perf_counter()
    x, y = to_tensor(split, device)
    counts = []
    gallery = sorted(set(gallery or []))
    masks: dict[int, np.ndarray] = {}
    # boundary metrics on the run's CPU threads, beside the next slices' inference
    scorer = VolumeScorer(
        split, spacing, nsd_tolerance_mm, boundary_mode, threads=torch.get_num_threads()
    )
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            progress(start, len(x))
            prob = model(x[start : start + batch_size]).float()
            counts.append(metrics.confusion_counts(prob, y[start : start + batch_size]))
            if scorer.wants_masks:
                scorer.add(start, (prob[:, 0] > 0.5).cpu().numpy())
            for i in gallery:
                if start <= i < start + prob.shape[0]:
                    masks[i] = (prob[i - start, 0] > 0.5).cpu().numpy()
    c = torch.cat(counts).cpu().numpy() if counts else np.zeros((0, 4), dtype=np.int64)
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
    volumes = scorer.results(c)  # waits for the volumes still being scored
    progress(len(x), len(x))
    result = TestResult(
        slices=slices,
        metric_mode=metric_mode,
        seconds=time.perf_counter() - t0,
        volumes=volumes,
        **volume_summary(volumes),
        **metrics.result_fields(summary),
    )
    return result, masks


def finish_run(
    spec, model, dataset, state, parameters_m, recorder, device, environment=None
) -> RunOutcome:
    """Test the best model (already loaded into `model`), save it as safetensors +
    config.json under ``checkpoint_best/``, and hand the outcome to the recorder."""
    p = spec.protocol
    gallery = gallery_indices(dataset.test.masks, spec.gallery_size)
    test, masks = evaluate(
        model,
        dataset.test,
        device=device,
        metric_mode=p.metric_mode,
        batch_size=spec.eval_batch_size,
        gallery=gallery,
        spacing=dataset.test_spacing,
        nsd_tolerance_mm=p.nsd_tolerance_mm,
        boundary_mode=p.boundary_mode,
        progress=recorder.testing,
    )
    best_dir = Path(spec.artifacts_dir) / CHECKPOINT_BEST
    model_cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
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
                "normalisation": {"mean": HU_MEAN, "std": HU_STD},
                "image_size": p.image_size,
                "lung_masked_input": EXPERIMENT_SPECS[spec.run.experiment].lung_masked_input,
                "threshold": 0.5,
            },
            "best_epoch": state["best_epoch"],
            "test": {
                "dice": test.dice,
                "sensitivity": test.sensitivity,
                "specificity": test.specificity,
                "metric_mode": test.metric_mode,
                "nsd": test.nsd,
                "hd95": test.hd95,
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
        checkpoint_sha256=sha256_file(weights),
        gallery={i: np.packbits(m.astype(np.uint8).ravel()).tobytes() for i, m in masks.items()},
        gallery_shape=tuple(dataset.test.masks.shape[1:]),
        first_layer_before=before.numpy().tobytes(),
        first_layer_after=after.numpy().tobytes(),
        first_layer_shape=tuple(after.shape),
        environment=environment,
    )
    recorder.finish(outcome)
    return outcome
