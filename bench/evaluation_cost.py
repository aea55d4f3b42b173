"""Evaluation cost: the test pass with per-volume boundary metrics vs without.

A test set of the paper's size is GENERATED (`worker.data.synth`: 9 volumes x 92
slices = 828, the real set has 829; 630 px slices resized to 512 as the loader does,
slice thickness 1-5 mm). Both sides run `worker.training.evaluate.evaluate` on it
with the same model: "without" gives no spacing (per-slice counts and per-volume
3-D Dice only), "with" adds NSD and HD95 of every volume in the protocol's
default surface-area mode (and, as a third row, the border-voxel mode). The pairs
alternate which side runs first.

The model is a real segmentation-models-pytorch network with random weights,
by default PSPNet-efficientnet-b0, the grid's smallest by FLOPs (the cheapest
forward pass, so the worst case for the ratio). Its output is replaced by a
classical lung segmentation of the input (darker than -400 HU and not connected to
the slice's edge, i.e. not the air around the body), so the forward pass costs what
a real model's does and the predicted masks have the size and surface of real lung
predictions rather than a random network's noise. The experiment is
lung-segmentation, the largest surfaces of the three.

Prints seconds per evaluation, then the surface-area boundary metrics alone on the
same predicted masks (its "vs without" column: (without + alone) / without, an
estimate free of the forward pass's timing noise); last line `ratio: R` = with /
without (surface-area mode) measured side by side (interleaved volume by volume,
the order rotating), median over pairs. Target:
R <= 1.3.

    python bench/evaluation_cost.py [--quick] [--image-size 512] [--pairs 1] [--threads 1]
        [--no-border-voxel]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from db.grid import RunSpec  # noqa: E402
from worker.data import HU_MEAN, HU_STD, load_dataset, synth  # noqa: E402
from worker.data.dataset import Split  # noqa: E402
from worker.training.boundary import boundary_metrics  # noqa: E402
from worker.training.evaluate import evaluate  # noqa: E402
from worker.training.models import build_model  # noqa: E402
from worker.training.volumes import volume_ranges  # noqa: E402

SPLIT_FIELDS = ("images", "masks", "lungs", "volume", "slice")


def _means(volumes) -> dict:
    """Mean NSD / HD95 over the volumes that have one (None when none has)."""
    out = {}
    for key in ("nsd", "hd95"):
        values = [getattr(v, key) for v in volumes if getattr(v, key) is not None]
        values = [x for x in values if np.isfinite(x)]
        out[key] = float(np.mean(values)) if values else None
    return out


class ThresholdedModel(torch.nn.Module):
    """The network's forward pass for its cost; a threshold lung segmentation of the
    input (dark regions that do not touch the slice's edge) as the output."""

    def __init__(self, net: torch.nn.Module, hu: float = -400.0):
        super().__init__()
        self.net = net
        self.level = (hu - HU_MEAN) / HU_STD

    def forward(self, x):
        out = self.net(x)
        dark = (x[:, 0] < self.level).cpu().numpy()
        lungs = np.zeros_like(dark)
        for i, d in enumerate(dark):
            labels, _ = ndimage.label(d)
            edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            lungs[i] = d & ~np.isin(labels, edge)
        return out * 0 + torch.from_numpy(lungs).to(out)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 volumes x 12 slices, 128 px")
    parser.add_argument("--image-size", type=int, help="default 512 (quick 128)")
    parser.add_argument("--volumes", type=int, help="test volumes (default 9, quick 3)")
    parser.add_argument("--slices", type=int, help="slices per volume (default 92, quick 12)")
    parser.add_argument("--pairs", type=int, help="default 1 (quick 2)")
    parser.add_argument("--architecture", default="pspnet")
    parser.add_argument("--encoder", default="efficientnet-b0")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--no-border-voxel", action="store_true", help="skip the border-voxel row (saves time)"
    )
    args = parser.parse_args()
    size = args.image_size or (128 if args.quick else 512)
    volumes = args.volumes or (3 if args.quick else 9)
    per_volume = args.slices or (12 if args.quick else 92)
    pairs = args.pairs or (2 if args.quick else 1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = synth(
            Path(tmp) / "data",
            image_size=size,
            train_slices=10,
            test_volumes=volumes,
            slices_per_volume=per_volume,
            seed=0,
        )
        ds = load_dataset(root, "lung-segmentation", size, cache=False)
        prepared = time.perf_counter() - t0
    net = build_model(RunSpec("lung-segmentation", args.architecture, args.encoder, "random"))
    model = ThresholdedModel(net).eval()
    sides = {
        "without boundary metrics": {},
        "with NSD + HD95 (surface-area)": {"spacing": ds.test_spacing},
        "with NSD + HD95 (border-voxel)": {
            "spacing": ds.test_spacing,
            "boundary_mode": "border-voxel",
        },
    }
    if args.no_border_voxel:
        del sides["with NSD + HD95 (border-voxel)"]
    # Interleaved volume by volume: each test volume is evaluated by every side in turn
    # (the order rotating from volume to volume and pair to pair), so a change of the
    # machine's load during the minutes a full pass takes hits all sides alike.
    ranges = volume_ranges(ds.test.volume)
    seconds: dict[str, list[float]] = {name: [0.0] * pairs for name in sides}
    per_volume: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for pair in range(pairs):
        for k, (_, a, b) in enumerate(ranges):
            part = Split(*(getattr(ds.test, f)[a:b] for f in SPLIT_FIELDS))
            shift = (pair + k) % len(names)
            for name in names[shift:] + names[:shift]:
                t = time.perf_counter()
                result, _ = evaluate(model, part, batch_size=args.batch_size, **sides[name])
                seconds[name][pair] += time.perf_counter() - t
                if pair == 0:
                    per_volume[name] += result.volumes
    last = {name: _means(per_volume[name]) for name in sides}

    n = len(ds.test)
    print(
        f"evaluate() on {volumes} GENERATED test volumes, {n} slices at {size}x{size} px, "
        f"{args.architecture}-{args.encoder}, batch {args.batch_size}, {pairs} round(s) "
        f"interleaved volume by volume (order rotating), CPU ({os.cpu_count()} cores, "
        f"{args.threads} torch thread(s)); "
        f"data generated and loaded in {prepared:.1f} s"
    )
    header = f"{'evaluation':<34}{'s':>9}{'vs without':>12}{'NSD %':>8}{'HD95 mm':>9}"
    print(header)
    print("-" * len(header))
    base = statistics.median(seconds["without boundary metrics"])
    for name in sides:
        s = statistics.median(seconds[name])
        r = last[name]
        nsd = "-" if r["nsd"] is None else f"{r['nsd']:.2f}"
        hd = "-" if r["hd95"] is None else f"{r['hd95']:.2f}"
        print(f"{name:<34}{s:>9.2f}{s / base:>12.3f}{nsd:>8}{hd:>9}")
    # The boundary metrics alone, on the same predicted masks (the output does not
    # depend on the network): what "with" adds, free of the forward pass's noise.
    with torch.inference_mode():
        x = torch.from_numpy(ds.test.images)[:, None]
        pred = np.concatenate(
            [
                ThresholdedModel(torch.nn.Identity())(x[i : i + 64])[:, 0].numpy() > 0.5
                for i in range(0, len(x), 64)
            ]
        )
    t = time.perf_counter()
    for v, a, b in volume_ranges(ds.test.volume):
        rows, cols, z = ds.test_spacing[v]
        boundary_metrics(ds.test.masks[a:b], pred[a:b], (z, rows, cols))
    alone = time.perf_counter() - t
    print(f"{'boundary metrics alone':<34}{alone:>9.2f}{(base + alone) / base:>12.3f}")
    ratios = [
        w / b
        for w, b in zip(
            seconds["with NSD + HD95 (surface-area)"],
            seconds["without boundary metrics"],
            strict=True,
        )
    ]
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
