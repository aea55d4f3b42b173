"""Why random-init efficientnet runs predict only background after a few epochs.

On the team's first GPU run (3 epochs at 512 px) every random-init efficientnet-b0
run ended with Dice 0-22 % while resnet34 and mobilenet_v2 reached 78-97 %. The
suspect: smp's efficientnet encoders use TensorFlow's BatchNorm settings, momentum
0.01 (PyTorch's sense; TF's 0.99) and eps 1e-3, where resnet's use 0.1 and 1e-5. A
running statistic then moves 1 % of the way to each batch's, so after n steps it
still holds 0.99**n of its initial value (mean 0, variance 1): 30 % after 120 steps.
Validation and test run the model in eval mode, on those running statistics, while
training saw batch statistics; a randomly initialised encoder's activations are far
from mean 0 / variance 1, so the eval-mode network is not the one that was trained.

This script trains unet-efficientnet-b0 and unet-resnet34 from random weights on
GENERATED (synthetic) data, batch 2, the paper's loss and optimiser, and after each
epoch prints the validation Dice in eval mode (what segbench stores) beside the
Dice of the same weights with batch statistics (train-mode BatchNorm, no update),
and the largest relative gap between a BatchNorm layer's running mean and the
batch mean it sees. If the eval-mode Dice lags the batch-statistics Dice for
efficientnet and not for resnet, the running statistics are the cause, and more
steps (the paper's 200 epochs) close the gap: no defect in the model or its
initialisation.

    python bench/efficientnet_random_init.py --quick     # 64 px, 4 epochs, ~1 min on 2 CPU cores
    python bench/efficientnet_random_init.py             # 128 px, 10 epochs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from db.grid import RunSpec
from worker.data.dataset import load_dataset
from worker.data.synth import synth
from worker.training.losses import get_loss
from worker.training.models import build_model

ENCODERS = ("efficientnet-b0", "resnet34")


def dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of the thresholded prediction over all slices (1 when both are empty)."""
    p, t = pred > 0.5, target > 0.5
    denominator = int(p.sum() + t.sum())
    return 1.0 if denominator == 0 else 2 * int((p & t).sum()) / denominator


def batchnorm_lag(model: torch.nn.Module, images: torch.Tensor) -> float:
    """The largest |running mean - batch mean| / (batch std + eps) over BatchNorm
    layers, on `images`: how far eval mode's statistics are from the data's."""
    gaps: list[float] = []

    def hook(layer, inputs, _output):
        x = inputs[0].detach()
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3))
        gap = (layer.running_mean - mean).abs() / (std + layer.eps)
        gaps.append(float(gap.max()))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    model.eval()
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return max(gaps)


def validation_dice(model: torch.nn.Module, images, masks, *, batch_stats: bool) -> float:
    """Eval mode (running statistics) or batch statistics without updating them."""
    model.eval()
    if batch_stats:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train()
                m.track_running_stats, m._saved = False, (m.running_mean, m.running_var)
                m.running_mean = m.running_var = None
    with torch.no_grad():
        pred = torch.cat([model(images[i : i + 2]) for i in range(0, len(images), 2)])
    if batch_stats:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean, m.running_var = m._saved
                m.track_running_stats = True
                del m._saved
    return dice(pred, masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 4 epochs")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-slices", type=int, default=40)
    args = parser.parse_args()
    size = args.image_size or (64 if args.quick else 128)
    epochs = args.epochs or (4 if args.quick else 10)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = synth(
            Path(tmp) / "data", image_size=size, train_slices=args.train_slices,
            test_volumes=2, slices_per_volume=4, seed=0,
        )  # fmt: skip
        data = load_dataset(folder, "lung-segmentation", size)
    train_x = torch.from_numpy(data.train.images[:, None])
    train_y = torch.from_numpy(data.train.masks[:, None].astype(np.float32))
    val_x = torch.from_numpy(data.validation.images[:, None])
    val_y = torch.from_numpy(data.validation.masks[:, None].astype(np.float32))
    loss_fn = get_loss("soft-dice")
    print(
        f"SYNTHETIC data, lung segmentation, {size} px, batch 2, {len(train_x)} training "
        f"slices ({len(train_x) // 2} steps per epoch), random init, Adam 1e-3"
    )
    print("| encoder | epoch | steps | val Dice (eval mode) | val Dice (batch stats) | BN lag |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    gaps = {}
    for encoder in ENCODERS:
        torch.manual_seed(0)
        model = build_model(RunSpec("lung-segmentation", "unet", encoder, "random"))
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        steps, started = 0, time.perf_counter()
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(train_x), generator=generator)
            for i in range(0, len(order) - 1, 2):
                batch = order[i : i + 2]
                optimiser.zero_grad()
                loss_fn(model(train_x[batch]), train_y[batch]).backward()
                optimiser.step()
                steps += 1
            eval_dice = validation_dice(model, val_x, val_y, batch_stats=False)
            batch_dice = validation_dice(model, val_x, val_y, batch_stats=True)
            lag = batchnorm_lag(model, val_x[:4])
            print(
                f"| {encoder} | {epoch} | {steps} | {100 * eval_dice:.1f} % | "
                f"{100 * batch_dice:.1f} % | {lag:.2f} |",
                flush=True,
            )
        gaps[encoder] = (eval_dice, batch_dice, time.perf_counter() - started)
    b0, r34 = gaps["efficientnet-b0"], gaps["resnet34"]
    print(
        f"after {epochs} epochs: efficientnet-b0 eval/batch-stats Dice "
        f"{100 * b0[0]:.1f}/{100 * b0[1]:.1f} %, resnet34 {100 * r34[0]:.1f}/{100 * r34[1]:.1f} %"
    )


if __name__ == "__main__":
    main()
