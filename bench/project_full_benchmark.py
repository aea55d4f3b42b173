"""How long would the whole 600-run benchmark take on this device? From measured cells.

Each architecture x encoder cell that was measured on the device (bench/cell_timing.py:
seconds per training step, eager and as a replayed CUDA graph, validation seconds per
image) gives its runs' time directly; the cells not measured are estimated by a
two-factor model fitted to the measured ones, and counted as estimated. No FLOP
scaling: at the paper's batch of 2 a GPU step is launch-bound and FLOPs mislead.

Two ways to get the table:
- ``--table FILE``: a table the GPU session wrote (bench/gpu_session.sh; the committed
  ones are in bench/tables/, one per device);
- otherwise the cells are measured here (``--cells N`` of them, spread over the four
  architectures and the encoder families) at ``--image-size`` and cached in
  .bench-cache/; the projection is then for that image size, and says so.

Prints the table, the projection one run at a time (eager and, where measured,
graphed) and, if the table holds the K-slots measurement, with K runs per GPU. Last
line: `projected hours: H` (600 runs x 200 epochs, the fastest measured way).

    python bench/project_full_benchmark.py [--table FILE] [--quick] [--cells 8]
        [--image-size 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from cell_timing import (  # noqa: E402
    EPOCHS,
    PAPER_CELLS,
    measure_cell,
    project,
    write_table,
)

from worker import data  # noqa: E402
from worker.training.device import device_name, resolve_device  # noqa: E402

CACHE = ROOT / ".bench-cache"


def spread(count: int) -> list[tuple[str, str]]:
    """`count` cells over the four architectures and as many encoder families."""
    chosen, families = [], []
    archs = ["unet", "linknet", "fpn", "pspnet"]
    for encoder in ("resnet18", "mobilenet_v2", "vgg11", "efficientnet-b0", "densenet121",
                    "dpn68", "resnet50", "inceptionv4", "xception", "resnext50_32x4d"):  # fmt: skip
        if len(chosen) == count:
            break
        arch = archs[len(chosen) % 4]
        if (arch, encoder) in PAPER_CELLS and encoder not in families:
            chosen.append((arch, encoder))
            families.append(encoder)
    return chosen


def measure_here(args, device) -> dict:
    cells = spread(args.cells)
    slug = device_name(device).split(" (")[0].replace(" ", "-").lower()
    cache = CACHE / f"cells-{slug}-{args.image_size}px.json"
    table = json.loads(cache.read_text()) if cache.exists() else {"cells": {}}
    missing = [c for c in cells if f"{c[0]}/{c[1]}" not in table["cells"]]
    if missing:
        with tempfile.TemporaryDirectory(prefix="segbench-project-") as tmp:
            data_dir = data.synth(
                Path(tmp) / "data",
                image_size=args.image_size,
                train_slices=100 if not args.quick else 10,
                test_volumes=1,
                slices_per_volume=2,
                seed=0,
            )
            for cell in missing:
                row = measure_cell(cell, data_dir, args.image_size, device, steps=args.steps)
                table["cells"][row["cell"]] = row
        write_table(cache, device_name(device), args.image_size, table["cells"])
    return {"device": device_name(device), "image_size": args.image_size, **table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, help="a cell table (bench/tables/*.json)")
    parser.add_argument("--quick", action="store_true", help="2 cells, 32 px, 3 steps")
    parser.add_argument("--cells", type=int, help="cells to measure here (default 8)")
    parser.add_argument("--image-size", type=int, help="measured size (default 128, quick 32)")
    parser.add_argument("--steps", type=int, help="timed steps per cell (default 10)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    args = parser.parse_args()
    args.cells = args.cells or (2 if args.quick else 8)
    args.image_size = args.image_size or (32 if args.quick else 128)
    args.steps = args.steps or (3 if args.quick else 10)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    if args.table:
        table = json.loads(args.table.read_text())
        source = f"table {args.table}"
    else:
        table = measure_here(args, resolve_device(args.device))
        source = f"measured here in {time.perf_counter() - started:.0f} s"
    size = table["image_size"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"device: {table['device']}; {source}; {size}x{size} px; load average {load}")
    header = f"{'cell':<28}{'first step s':>13}{'eager ms':>10}{'graph ms':>10}{'val ms/img':>11}"
    print(header)
    print("-" * len(header))
    for name, row in sorted(table["cells"].items()):
        graph = row.get("graph_step_s")
        graph_ms = "-" if graph is None else f"{1000 * graph:.2f}"
        print(
            f"{name:<28}{row['first_step_s']:>13.2f}{1000 * row['eager_step_s']:>10.2f}"
            f"{graph_ms:>10}{1000 * row['val_image_s']:>11.2f}"
        )
    results = {"eager": project(table, graphed=False)}
    if any(r.get("graph_step_s") for r in table["cells"].values()):
        results["graphed"] = project(table, graphed=True)
    best = min(r["hours"] for r in results.values())
    for name, r in results.items():
        print(
            f"600 runs x {EPOCHS} epochs at {size} px, one run at a time, {name} steps: "
            f"{r['hours']:,.1f} h ({r['measured_cells']} cells measured, "
            f"{r['estimated_cells']} estimated)"
        )
    slots = table.get("slots")
    if slots:
        speedup = max(s["speedup"] for s in slots)
        k = max(slots, key=lambda s: s["speedup"])
        print(
            f"with {k['k']} {k['kind']} per GPU ({speedup:.2f}x the throughput of one run): "
            f"{best / speedup:,.1f} h"
        )
        best = best / speedup
    print(f"projected hours: {best:.1f}")


if __name__ == "__main__":
    main()
