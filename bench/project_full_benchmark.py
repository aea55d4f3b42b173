"""How long would the whole 600-run benchmark take on this device? Measure a few, scale by FLOPs.

1. Forward FLOPs per 512x512 image of all 100 architecture x encoder combinations
   (torch.utils.flop_counter.FlopCounterMode on the meta device: no compute;
   cached in .bench-cache/). A training image costs ~3 forward passes (forward +
   backward), a validation or test image one: one paper epoch (80 train + 20
   validation slices) = 260 forward passes, a run = 200 epochs + 829 test slices.
2. A few epochs of the smallest, the median and the largest combination by FLOPs,
   trained by worker.training.trainer.fit at --image-size on this device, give seconds per
   training and per validation image (fit's own per-epoch timings, last epoch) and
   the harness time per epoch (checkpoint, recording: the interval between epoch
   ends minus training and validation).
3. Each of the 100 combinations takes the seconds per FLOP of the representative
   nearest to it in FLOPs; x 6 runs (2 inits x 3 experiments) -> hours for 600.

Also prints the FLOP-only estimate for one H100 (~790 TFLOP/s dense bf16) at a
few utilisations, and what utilisation the 6-hour goal needs. Last line:
`projected hours: H` (this device, 600 runs).

    python bench/project_full_benchmark.py [--quick] [--image-size 128] [--device cpu]
        [--switch amp=true ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from db.grid import ARCHITECTURES, ENCODERS, RunSpec  # noqa: E402
from db.protocol import Protocol  # noqa: E402
from worker import data  # noqa: E402
from worker.training import models  # noqa: E402
from worker.training.device import device_name, resolve_device  # noqa: E402
from worker.training.recorder import Recorder  # noqa: E402
from worker.training.trainer import TrainSpec, fit  # noqa: E402

CACHE = ROOT / ".bench-cache" / "forward-flops.json"
EPOCHS, TRAIN, VALIDATION, TEST, RUNS_PER_COMBO = 200, 80, 20, 829, 6
FORWARDS_PER_EPOCH = 3 * TRAIN + VALIDATION
H100_BF16_FLOPS = 790e12
GOAL_HOURS = 6.0


def forward_flops(combo: tuple[str, str], size: int) -> float:
    """FLOPs of one forward pass per image (batch of 2, training mode)."""
    with torch.device("meta"):
        model = models.build_model(RunSpec("lung-segmentation", *combo, "random"))
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.empty(2, 1, size, size, device="meta"))
    return counter.get_total_flops() / 2


def flops_table(size: int) -> dict[tuple[str, str], float]:
    cached = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    table = cached.get(str(size), {})
    combos = [(a, e) for a in ARCHITECTURES for e in ENCODERS]
    missing = [c for c in combos if f"{c[0]}/{c[1]}" not in table]
    for combo in missing:
        table[f"{combo[0]}/{combo[1]}"] = forward_flops(combo, size)
    if missing:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps({**cached, str(size): table}, indent=1, sort_keys=True))
    return {tuple(k.split("/")): v for k, v in table.items()}


def parse_switches(items: list[str]) -> dict:
    """["amp=true", "checkpoint_interval_s=0"] -> TrainSpec keyword arguments; ``amp``
    is the protocol's train_precision (bf16 when true; fp32, the default, when not)."""
    names = {"amp", "channels_last", "fused_adam", "cudnn_benchmark", "compile"}
    out: dict = {}
    for item in items:
        name, _, value = item.partition("=")
        if name in names and value.lower() in ("true", "false"):
            out[name] = value.lower() == "true"
        elif name == "checkpoint_interval_s":
            out[name] = float(value)
        else:
            raise SystemExit(
                f"Unknown switch '{item}'; expected NAME=true|false with NAME one of "
                f"{', '.join(sorted(names))}, or checkpoint_interval_s=SECONDS."
            )
    return out


class Clock(Recorder):
    def __init__(self) -> None:
        self.ends: list[float] = []
        self.records = []

    def epoch(self, record) -> None:
        self.ends.append(time.perf_counter())
        self.records.append(record)


def measure(
    combo, size: int, slices: int, epochs: int, device: str, work: Path, switches: dict
) -> dict:
    data_dir = work / "data"
    if not data_dir.exists():
        data.synth(
            data_dir,
            image_size=size,
            train_slices=slices,
            test_volumes=1,
            slices_per_volume=4,
            seed=0,
        )
    n_train = len(data.load_dataset(data_dir, "lung-segmentation", size).train)
    clock = Clock()
    spec = TrainSpec(
        run=RunSpec("lung-segmentation", *combo, "random"),
        protocol=Protocol(
            epochs=epochs,
            image_size=size,
            train_precision="bf16" if switches.get("amp") else "fp32",
        ),
        data_dir=data_dir,
        device=device,
        **{k: v for k, v in switches.items() if k != "amp"},
        artifacts_dir=work / f"{combo[0]}-{combo[1]}",
    )
    fit(spec, clock)
    last = clock.records[-1]
    interval = statistics.median(b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False))
    return {
        "train_image": last.train_seconds / n_train,
        "val_image": last.val_seconds / (slices - n_train),
        "harness": max(0.0, interval - last.train_seconds - last.val_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 px, 10 slices")
    parser.add_argument("--image-size", type=int, help="measured size (default 128, quick 32)")
    parser.add_argument("--slices", type=int, help="train+validation slices (default 40)")
    parser.add_argument("--epochs", type=int, default=2, help="per representative (>= 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--utilisation", type=float, default=0.25, help="assumed on the H100")
    parser.add_argument(
        "--switch",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a speed switch, e.g. amp=true (bf16 training), compile=true, checkpoint_interval_s=0",
    )
    args = parser.parse_args()
    size = args.image_size or (32 if args.quick else 128)
    slices = args.slices or (10 if args.quick else 40)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    switches = parse_switches(args.switch)

    started = time.perf_counter()
    at_512 = flops_table(512)
    flops_seconds = time.perf_counter() - started
    ranked = sorted(at_512, key=at_512.get)
    reps = {
        "smallest": ranked[0],
        "median": ranked[len(ranked) // 2],
        "largest": ranked[-1],
    }
    rows = {}
    with tempfile.TemporaryDirectory(prefix="segbench-project-") as tmp:
        for role, combo in reps.items():
            m = measure(combo, size, slices, max(2, args.epochs), args.device, Path(tmp), switches)
            f = forward_flops(combo, size)
            epoch = TRAIN * m["train_image"] + VALIDATION * m["val_image"]
            rows[role] = {**m, "combo": combo, "flops": f, "epoch": epoch}
            rows[role]["seconds_per_flop"] = epoch / (FORWARDS_PER_EPOCH * f)

    def nearest(combo) -> dict:
        return min(
            rows.values(),
            key=lambda r: abs(math.log(r["flops"] * (512 / size) ** 2) - math.log(at_512[combo])),
        )

    total_seconds = total_flops = 0.0
    for combo, f in at_512.items():
        forwards = EPOCHS * FORWARDS_PER_EPOCH + TEST
        rep = nearest(combo)
        run_seconds = forwards * f * rep["seconds_per_flop"] + EPOCHS * rep["harness"]
        total_seconds += RUNS_PER_COMBO * run_seconds
        total_flops += RUNS_PER_COMBO * forwards * f
    hours = total_seconds / 3600

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"device: {device_name(device)}; load average {load}; measured at {size}x{size} px, "
        f"{slices} slices, {max(2, args.epochs)} epochs per model; FLOPs of 100 combinations "
        f"at 512 px in {flops_seconds:.1f} s; switches: {switches or 'device defaults'}"
    )
    header = (
        f"{'model':<10}{'combination':<28}{'GFLOP/img 512':>14}{'s/train img':>12}"
        f"{'s/val img':>10}{'harness s':>10}{'GFLOP/s':>9}{'s/epoch 512':>12}"
    )
    print(header)
    print("-" * len(header))
    for role, r in rows.items():
        combo = r["combo"]
        rate = 1 / r["seconds_per_flop"] / 1e9
        at512 = FORWARDS_PER_EPOCH * at_512[combo] * r["seconds_per_flop"] + r["harness"]
        print(
            f"{role:<10}{combo[0] + '-' + combo[1]:<28}{at_512[combo] / 1e9:>14.1f}"
            f"{r['train_image']:>12.4f}{r['val_image']:>10.4f}{r['harness']:>10.3f}"
            f"{rate:>9.1f}{at512:>12.1f}"
        )
    print(
        f"whole benchmark: 600 runs x {EPOCHS} epochs x ({TRAIN} train + {VALIDATION} validation) "
        f"+ {TEST} test slices each = {total_flops / 1e18:.2f} EFLOP (forward x3 for training)"
    )
    print(f"this device, scaled by FLOPs from the nearest measured model: {hours:,.0f} h")
    for u in (0.10, args.utilisation, 0.40):
        h100 = total_flops / (H100_BF16_FLOPS * u) / 3600
        print(f"one H100 at {u:.0%} of {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16: {h100:.1f} h")
    needed = total_flops / (H100_BF16_FLOPS * GOAL_HOURS * 3600)
    print(f"the {GOAL_HOURS:.0f} h goal needs {needed:.1%} average utilisation of the H100")
    print(f"projected hours: {hours:.1f}")


if __name__ == "__main__":
    main()
