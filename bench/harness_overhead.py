"""What the harness costs per epoch: fit() through the database vs a bare PyTorch loop.

Harness: a run submitted and claimed through db.jobs on a temporary SQLite
database, trained by fit()'s own machinery (worker.training.trainer.RunTrainer, driven
epoch by epoch through its named steps train_epoch, validate, end_epoch) with a
DbRecorder: a start row, every epoch an epoch row + lease heartbeat and a cancel check,
the latest checkpoint written atomically
(every epoch: the CPU default) with the best-so-far weights beside it, the finish
rows. Bare loop: the same model, data tensors, device, speed switches,
augmentation (worker.training.augment), loss, Adam, and the validation loss each epoch with
the best weights kept in memory (the protocol needs both), nothing else.

Both sides train side by side in one process, epoch by epoch: pair i is epoch
i of each, in alternating order (harness first in even pairs), so a change of
machine load hits both sides of a pair alike. Epoch 1 (warm-up) is not counted;
set-up and the final test evaluation are printed separately, once per run. Last
line: `ratio: R`, the median over pairs of harness / bare seconds. Target: R <= 1.05.

    python bench/harness_overhead.py [--quick] [--image-size 256] [--epochs 4]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from db import jobs, migrate  # noqa: E402
from db.grid import RunSpec  # noqa: E402
from db.protocol import Protocol  # noqa: E402
from db.session import dispose_engine, session_scope  # noqa: E402
from worker import data  # noqa: E402
from worker.queue.lease import DbRecorder  # noqa: E402
from worker.training import augment, losses, models  # noqa: E402
from worker.training.checkpoints import CHECKPOINT_LATEST  # noqa: E402
from worker.training.device import DevicePolicy, device_name, to_tensor  # noqa: E402
from worker.training.trainer import RunTrainer, TrainSpec  # noqa: E402

SPENT = {"checkpoint": 0.0, "database": 0.0}


class TimedDbRecorder(DbRecorder):
    def epoch(self, record) -> None:
        started = time.perf_counter()
        super().epoch(record)
        SPENT["database"] += time.perf_counter() - started

    def cancelled(self) -> bool:
        started = time.perf_counter()
        try:
            return super().cancelled()
        finally:
            SPENT["database"] += time.perf_counter() - started


class TimedTrainer(RunTrainer):
    def checkpoint(self) -> None:
        started = time.perf_counter()
        super().checkpoint()
        SPENT["checkpoint"] += time.perf_counter() - started


def harness(
    run: RunSpec, protocol: Protocol, data_dir: Path, work: Path, device: str, info: dict
) -> Iterator[None]:
    """fit() one epoch per next(): the run's set-up happens on the first call."""
    url = f"sqlite:///{work / 'runs.db'}"
    migrate.upgrade(url)
    called = time.perf_counter()
    with session_scope(url) as session:
        run_id = jobs.submit(
            session,
            specs=[run],
            protocol=protocol,
            sweep="harness",
            data_dir=str(data_dir),
            dataset=data.dataset_info(data_dir),
        )[0]
    with session_scope(url) as session:
        assert jobs.claim(session, run_id=run_id, worker="bench") is not None
    artifacts = work / "run"
    spec = TrainSpec(
        run=run, protocol=protocol, data_dir=data_dir, device=device, artifacts_dir=artifacts
    )
    trainer = TimedTrainer(spec, TimedDbRecorder(url, run_id))
    info["setup"] = time.perf_counter() - called
    for epoch in range(1, protocol.epochs + 1):
        train_loss, train_s = trainer.train_epoch()
        val_loss, val_s = trainer.validate()
        trainer.end_epoch(epoch, train_loss, val_loss, train_s, val_s)
        yield
    # The resume checkpoint of the last epoch, measured before finish() removes it
    # (a finished run keeps only its best model).
    info["checkpoint_mb"] = (artifacts / CHECKPOINT_LATEST).stat().st_size / 1e6
    started = time.perf_counter()
    trainer.finish()
    info["finish"] = time.perf_counter() - started
    dispose_engine(url)


def bare(run: RunSpec, protocol: Protocol, data_dir: Path, device: str, info: dict):
    """The plain loop, one epoch per next(), with fit()'s speed switches for the device."""
    p, bs = protocol, protocol.batch_size
    called = time.perf_counter()
    policy = DevicePolicy(device, protocol)
    policy.configure()
    dev = policy.device
    dataset = data.load_dataset(data_dir, run.experiment, p.image_size)
    torch.manual_seed(p.seed)
    model = policy.place_model(models.build_model(run))
    optimizer = policy.optimizer(model, p.lr)
    loss_fn = losses.get_loss(p.loss)
    cfg = augment.config_for(run.experiment, p.augment_mode)
    gen = torch.Generator().manual_seed(p.seed)
    x, y = to_tensor(dataset.train, dev)
    xv, yv = to_tensor(dataset.validation, dev)
    best, best_model = math.inf, None
    info["setup"] = time.perf_counter() - called
    for _ in range(p.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen).to(dev)
        theta = torch.cat(
            [augment.random_affine(len(order[s : s + bs]), cfg, gen) for s in range(0, len(x), bs)]
        ).to(dev)
        for s in range(0, len(x), bs):
            idx = order[s : s + bs]
            xb, yb = augment.apply_affine(x[idx], y[idx], theta[s : s + bs], cfg)
            optimizer.zero_grad()
            with policy.autocast():
                pred = model(xb)
            loss_fn(pred, yb).backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            val = torch.stack(
                [loss_fn(model(xv[s : s + bs]), yv[s : s + bs]) for s in range(0, len(xv), bs)]
            ).mean()
        if float(val) < best:
            best, best_model = float(val), {k: v.clone() for k, v in model.state_dict().items()}
        yield
    assert best_model is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 20 slices: CI-sized")
    parser.add_argument("--image-size", type=int, help="default 256 (quick: 64)")
    parser.add_argument("--slices", type=int, help="train+validation slices, 80/20 (default 100)")
    parser.add_argument("--epochs", type=int, default=4, help="per side; pairs = epochs - 1")
    parser.add_argument("--architecture", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    size = args.image_size or (64 if args.quick else 256)
    slices = args.slices or (20 if args.quick else 100)
    epochs = max(3, args.epochs)
    torch.set_num_threads(args.threads)

    run = RunSpec("lung-segmentation", args.architecture, args.encoder, "random")
    protocol = Protocol(epochs=epochs, image_size=size)
    cuda = args.device.startswith("cuda")
    seconds: dict[str, list[float]] = {"harness": [], "bare": []}
    info: dict[str, dict] = {"harness": {}, "bare": {}}
    spent = []
    with tempfile.TemporaryDirectory(prefix="segbench-harness-") as tmp:
        work = Path(tmp)
        data_dir = data.synth(
            work / "data", image_size=size, train_slices=slices, test_volumes=1, seed=0
        )
        sides = {
            "harness": harness(run, protocol, data_dir, work, args.device, info["harness"]),
            "bare": bare(run, protocol, data_dir, args.device, info["bare"]),
        }
        for epoch in range(epochs):
            for name in ("harness", "bare") if epoch % 2 else ("bare", "harness"):
                SPENT.update(checkpoint=0.0, database=0.0)
                started = time.perf_counter()
                next(sides[name])
                if cuda:
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - started)
                if name == "harness":
                    spent.append(dict(SPENT))
        for side in sides.values():
            for _ in side:  # the harness finishes: test evaluation, model files, rows
                pass
        n_train = len(data.load_dataset(data_dir, run.experiment, size).train)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"model {run.architecture}-{run.encoder}, {size}x{size} px, {n_train} train + "
        f"{slices - n_train} validation slices, batch {protocol.batch_size}, "
        f"{epochs} epochs per side; {device_name(torch.device(args.device))}, "
        f"{os.cpu_count()} CPU cores, load average {load}"
    )
    header = f"{'epoch':<6}{'first':>9}{'harness s':>11}{'bare s':>9}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    ratios = []
    for epoch in range(1, epochs):  # epoch 1 is the warm-up
        h, b = seconds["harness"][epoch], seconds["bare"][epoch]
        ratios.append(h / b)
        first = "harness" if epoch % 2 else "bare"
        print(f"{epoch + 1:<6}{first:>9}{h:>11.3f}{b:>9.3f}{h / b:>8.3f}")
    h, b = info["harness"], info["bare"]
    print(
        f"harness per epoch: checkpoint "
        f"{statistics.median(s['checkpoint'] for s in spent[1:]):.3f} s "
        f"({h['checkpoint_mb']:.0f} MB), epoch row + heartbeat + cancel check "
        f"{statistics.median(s['database'] for s in spent[1:]):.3f} s"
    )
    bare_epoch = statistics.median(seconds["bare"][1:])
    print(
        f"harness per run, once: set-up {h['setup']:.2f} s (bare {b['setup']:.2f} s); test "
        f"evaluation + model files + finish rows {h['finish']:.2f} s; over 200 epochs "
        f"{100 * (h['setup'] + h['finish'] - b['setup']) / (200 * bare_epoch):.2f}% of the "
        "bare time"
    )
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
