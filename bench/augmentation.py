"""Training augmentation: the batched pipeline (worker.training.augment) vs the authors' PIL one.

The authors' pipeline, reimplemented: for every sample a PIL image of the HU slice
(mode F) and of its mask (mode L); horizontal flip p=0.5, vertical flip p=0.5 and
RandomAffine(degrees=180, scale=(0.5, 1.5)) with parameters shared by image and
mask (torchvision.transforms.functional on PIL, nearest, fill 0 = water for the
image, background for the mask); then to tensors, normalised, collated into a
batch. Ours: worker.training.augment.augment_batch on the batch of normalised tensors
(one affine_grid + grid_sample per batch), in the authors-code mode (nearest,
HU 0 padding: the same work) and in the paper mode (bilinear image).

Both at the paper's batch of 2, on this machine's CPU, pairs alternated. Prints
images per second; last line `ratio: R` = ours (authors-code mode) / PIL, median
over pairs. On a GPU ours runs on the device where the data already is, so the
CPU figure is the worst case for it.

    python bench/augmentation.py [--quick] [--image-size 512] [--images 80] [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402

from worker.data import HU_MEAN, HU_STD  # noqa: E402
from worker.training import augment  # noqa: E402

BATCH = 2


def pil_sample(hu: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample through the authors' torchvision/PIL transforms."""
    image, target = Image.fromarray(hu, mode="F"), Image.fromarray(mask, mode="L")
    if random.random() < 0.5:
        image, target = TF.hflip(image), TF.hflip(target)
    if random.random() < 0.5:
        image, target = TF.vflip(image), TF.vflip(target)
    angle, translate, scale, shear = T.RandomAffine.get_params(
        (-180.0, 180.0), None, (0.5, 1.5), None, list(image.size)
    )
    nearest = T.InterpolationMode.NEAREST
    image = TF.affine(image, angle, translate, scale, shear, interpolation=nearest, fill=0.0)
    target = TF.affine(target, angle, translate, scale, shear, interpolation=nearest, fill=0)
    x = (torch.from_numpy(np.array(image, dtype=np.float32)) - HU_MEAN) / HU_STD
    y = torch.from_numpy(np.array(target, dtype=np.float32))
    return x[None], y[None]


def pil_pipeline(hu: np.ndarray, masks: np.ndarray) -> None:
    for start in range(0, len(hu), BATCH):
        pairs = [pil_sample(hu[i], masks[i]) for i in range(start, start + BATCH)]
        torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def batched_pipeline(x: torch.Tensor, y: torch.Tensor, mode: str) -> None:
    cfg = augment.config_for("lung-segmentation", mode)
    gen = torch.Generator().manual_seed(0)
    for start in range(0, len(x), BATCH):
        augment.augment_batch(x[start : start + BATCH], y[start : start + BATCH], gen, cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 images, 3 pairs")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--images", type=int, help="images per measurement (default 80)")
    parser.add_argument("--pairs", type=int, help="default 5 (quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    n = args.images or (16 if args.quick else 80)
    pairs = args.pairs or (3 if args.quick else 5)
    size = args.image_size
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    hu = rng.normal(-500, 500, (n, size, size)).astype(np.float32)
    masks = (rng.random((n, size, size)) < 0.3).astype(np.uint8)
    x = torch.from_numpy((hu - HU_MEAN) / HU_STD)[:, None]
    y = torch.from_numpy(masks).float()[:, None]
    random.seed(0)

    sides = {
        "authors' PIL, per sample": lambda: pil_pipeline(hu, masks),
        "ours, batched (authors-code: nearest)": lambda: batched_pipeline(x, y, "authors-code"),
        "ours, batched (paper: bilinear)": lambda: batched_pipeline(x, y, "paper"),
    }
    for run in sides.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(pairs):
        for name in names if i % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - started)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{n} images of {size}x{size} px per measurement, batch {BATCH}, {pairs} rounds "
        f"(order alternated), CPU ({os.cpu_count()} cores, {args.threads} torch thread(s), "
        f"load average {load})"
    )
    header = f"{'pipeline':<40}{'images/s':>10}{'vs PIL':>8}"
    print(header)
    print("-" * len(header))
    pil = names[0]
    for name in names:
        rate = n / statistics.median(seconds[name])
        versus = statistics.median(seconds[pil]) / statistics.median(seconds[name])
        print(f"{name:<40}{rate:>10.1f}{versus:>8.2f}")
    ratios = [a / b for a, b in zip(seconds[pil], seconds[names[1]], strict=True)]
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
