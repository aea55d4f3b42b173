"""Several runs on one device: one at a time vs in lockstep vs K processes (and vmap).

K runs of one architecture and encoder (the experiments in turn, as a stack of
the grid would hold them), trained end to end (fit set-up, epochs, test
evaluation, model files), three ways on the same device:
- one at a time: worker.training.trainer.fit, run after run;
- lockstep: worker.training.stacked.fit_many, one process (each run equal to fit alone);
- K processes: one fit per process, all pinned to the same cores (the device),
  started together once imported (import time is not counted).
Plus the inner step alone (forward, backward, Adam), K separate models vs one
torch.func.vmap over stacked weights (not bit-identical, so not used for runs).

"Device" here is --threads CPU cores (default 1). Throughput: images per second
of the device, counting every training and validation image of every run; pairs
of configurations alternate their order each round. Last line: `ratio: R` =
lockstep / one at a time, median over rounds.

    python bench/stacked_training.py [--quick] [--runs 3] [--image-size 128]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402

from db.grid import EXPERIMENTS, RunSpec  # noqa: E402
from db.protocol import Protocol  # noqa: E402
from worker import data  # noqa: E402
from worker.training import losses, models  # noqa: E402
from worker.training.device import device_name  # noqa: E402
from worker.training.stacked import fit_many  # noqa: E402
from worker.training.trainer import TrainSpec, fit  # noqa: E402

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    cores, threads, go = json.loads(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    os.sched_setaffinity(0, cores)
    import torch
    torch.set_num_threads(threads)
    from db.grid import RunSpec
    from db.protocol import Protocol
    from worker.training.trainer import TrainSpec, fit
    spec = json.loads(sys.argv[4])
    spec = TrainSpec(run=RunSpec(**spec["run"]), protocol=Protocol(**spec["protocol"]),
                     data_dir=Path(spec["data_dir"]), artifacts_dir=Path(spec["artifacts"]),
                     device=spec["device"])
    Path(str(go) + f".ready{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    started = time.time()
    fit(spec)
    print(json.dumps({"started": started, "ended": time.time()}))
    """
)


def one_at_a_time(specs: list[TrainSpec]) -> list:
    return [fit(s) for s in specs]


def processes(specs: list[TrainSpec], cores: list[int], threads: int, work: Path) -> float:
    go = work / f"go{time.monotonic_ns()}"
    children = []
    for s in specs:
        spec = {
            "run": {k: v for k, v in s.run.to_dict().items() if k != "family"},
            "protocol": s.protocol.to_dict(),
            "data_dir": str(s.data_dir),
            "artifacts": str(s.artifacts_dir),
            "device": s.device,
        }
        args = [json.dumps(cores), str(threads), str(go), json.dumps(spec)]
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD, *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            )
        )
    while len(list(work.glob(go.name + ".ready*"))) < len(children):
        if any(c.poll() is not None for c in children):
            raise RuntimeError("a training process ended before it started training")
        time.sleep(0.02)
    go.touch()
    times = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    return max(t["ended"] for t in times) - min(t["started"] for t in times)


def step_models(run: RunSpec, k: int, size: int, steps: int, device: str) -> tuple[float, float]:
    """Seconds for `steps` training steps of k models: separately, then with vmap."""
    ms = []
    for i in range(k):
        torch.manual_seed(i)
        ms.append(models.build_model(run).to(device))
    x = torch.randn(k, 2, 1, size, size, device=device)
    y = (torch.rand(k, 2, 1, size, size, device=device) > 0.5).float()
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in ms]

    def separate() -> None:
        for m, opt, xb, yb in zip(ms, optimizers, x, y, strict=True):
            opt.zero_grad()
            losses.soft_dice_loss(m(xb), yb).backward()
            opt.step()

    params, buffers = stack_module_state(copy.deepcopy(ms))
    base = copy.deepcopy(ms[0]).to("meta")
    stacked_opt = torch.optim.Adam(params.values(), lr=1e-3)

    def one(p, b, xb, yb):
        return losses.soft_dice_loss(functional_call(base, (p, b), (xb,)), yb)

    def stacked() -> None:
        stacked_opt.zero_grad()
        vmap(one)(params, buffers, x, y).sum().backward()
        stacked_opt.step()

    out = []
    for f in (separate, stacked):
        f()  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            f()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append(time.perf_counter() - started)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 2 runs, 1 epoch, 1 round")
    parser.add_argument("--runs", type=int, help="runs trained together (default 3, quick 2)")
    parser.add_argument("--image-size", type=int, help="default 128 (quick 64)")
    parser.add_argument("--slices", type=int, help="train+validation slices (default 40)")
    parser.add_argument("--epochs", type=int, help="default 2 (quick 1)")
    parser.add_argument("--rounds", type=int, help="default 2 (quick 1)")
    parser.add_argument("--architecture", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--threads", type=int, default=1, help="CPU cores of the 'device'")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    k = args.runs or (2 if args.quick else 3)
    size = args.image_size or (64 if args.quick else 128)
    slices = args.slices or (20 if args.quick else 40)
    epochs = args.epochs or (1 if args.quick else 2)
    rounds = args.rounds or (1 if args.quick else 2)
    cores = sorted(os.sched_getaffinity(0))
    if args.device == "cpu":  # the device is these cores, for every configuration
        cores = cores[: args.threads]
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="segbench-stacked-") as tmp:
        work = Path(tmp)
        data_dir = data.synth(
            work / "data",
            image_size=size,
            train_slices=slices,
            test_volumes=1,
            slices_per_volume=4,
            seed=0,
        )
        runs = [
            RunSpec(EXPERIMENTS[i % 3], args.architecture, args.encoder, "random") for i in range(k)
        ]
        protocol = Protocol(epochs=epochs, image_size=size)

        def specs(tag: str) -> list[TrainSpec]:
            stamp = f"{tag}{time.monotonic_ns()}"
            return [
                TrainSpec(
                    run=r,
                    protocol=protocol,
                    data_dir=data_dir,
                    device=args.device,
                    artifacts_dir=work / stamp / str(i),
                )
                for i, r in enumerate(runs)
            ]

        outcomes = {}

        def timed(name: str, f) -> float:
            started = time.perf_counter()
            outcomes[name] = f()
            return time.perf_counter() - started

        configs = {
            "one at a time (fit)": lambda: timed("alone", lambda: one_at_a_time(specs("a"))),
            "lockstep (fit_many)": lambda: timed("lockstep", lambda: fit_many(specs("l"))),
            f"{k} processes": lambda: processes(specs("p"), cores, args.threads, work),
        }
        seconds: dict[str, list[float]] = {name: [] for name in configs}
        names = list(configs)
        for i in range(rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                seconds[name].append(configs[name]())
        n_steps = 2 if args.quick else 8
        step_rows = [step_models(runs[0], k, size, n_steps, args.device) for _ in range(rounds)]
        n_train = len(data.load_dataset(data_dir, runs[0].experiment, size).train)

    def summary(o) -> tuple:
        return o.best_epoch, o.best_val_loss, [(s.tp, s.fp, s.fn, s.tn) for s in o.test.slices]

    equal = [summary(a) for a in outcomes["alone"]] == [summary(b) for b in outcomes["lockstep"]]
    images = k * epochs * slices
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    where = f"{args.threads} CPU core(s) of {os.cpu_count()}"
    if args.device != "cpu":
        where = device_name(torch.device(args.device))
    print(
        f"{k} runs of {args.architecture}-{args.encoder} "
        f"({', '.join(r.experiment for r in runs)}), "
        f"{size}x{size} px, {n_train} train + {slices - n_train} validation slices, batch 2, "
        f"{epochs} epoch(s) each; device: {where}, load average {load}; {rounds} "
        f"round(s), order rotated"
    )
    header = f"{'configuration':<34}{'seconds':>9}{'images/s':>10}{'vs one at a time':>18}"
    print(header)
    print("-" * len(header))
    base = statistics.median(seconds[names[0]])
    for name in names:
        s = statistics.median(seconds[name])
        print(f"{name:<34}{s:>9.1f}{images / s:>10.2f}{base / s:>18.2f}")
    sep = statistics.median(r[0] for r in step_rows)
    vm = statistics.median(r[1] for r in step_rows)
    step_images = k * 2 * n_steps
    print(f"inner step only ({n_steps} steps of batch 2 per model):")
    print(
        f"{'  ' + str(k) + ' separate models':<34}{sep:>9.2f}{step_images / sep:>10.2f}{1.0:>18.2f}"
    )
    print(
        f"{'  vmap over stacked weights':<34}{vm:>9.2f}{step_images / vm:>10.2f}{sep / vm:>18.2f}"
    )
    print(f"lockstep runs equal one-at-a-time runs (best epoch, val loss, test counts): {equal}")
    ratios = [a / b for a, b in zip(seconds[names[0]], seconds[names[1]], strict=True)]
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
