"""What the harness costs per epoch: worker.train.fit through the database vs a bare loop.

Harness: a run submitted and claimed through db.jobs on a temporary SQLite
database, trained by worker.train.fit with a DbRecorder (start row, an epoch row +
lease heartbeat and a cancel check every epoch, the finish rows), the latest
checkpoint written atomically after every epoch (CPU default) and the best-so-far
weights beside it. Bare loop: the same model, data tensors, device, augmentation
(worker.augment), loss, Adam and validation loss each epoch with the best
weights kept in memory (the paper's protocol needs both), and nothing else: no
recording, no checkpoint, no RNG bookkeeping.

Each pair trains one fresh run of each side (order alternated: harness first in
even pairs); a side's time per epoch is the median interval between consecutive
epoch ends, so set-up and the final test evaluation are not in it (they are
printed separately, once per run). Last line: `ratio: R`, the median over pairs of
harness / bare seconds per epoch. Target: R <= 1.05.

    python bench/harness_overhead.py [--quick] [--image-size 256] [--pairs 3]
"""

from __future__ import annotations

import argparse
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

from db import jobs, migrate  # noqa: E402
from db.recorder import DbRecorder  # noqa: E402
from db.session import dispose_engine, session_scope  # noqa: E402
from worker import augment, data, losses, models  # noqa: E402
from worker.grid import RunSpec  # noqa: E402
from worker.protocol import Protocol, Recorder  # noqa: E402
from worker.train import (  # noqa: E402
    CHECKPOINT_LATEST,
    RunTrainer,
    TeeRecorder,
    TrainSpec,
    _to_tensor,
    fit,
)

SPENT = {"checkpoint": 0.0, "database": 0.0}


def _timed_checkpoint(self) -> None:
    started = time.perf_counter()
    _checkpoint(self)
    SPENT["checkpoint"] += time.perf_counter() - started


_checkpoint = RunTrainer.checkpoint
RunTrainer.checkpoint = _timed_checkpoint  # only to report where the harness time goes


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


class EpochClock(Recorder):
    """Notes when each epoch ended (the moment fit() reports it)."""

    def __init__(self) -> None:
        self.started = self.finished = 0.0
        self.ends: list[float] = []

    def start(self, config: dict) -> None:
        self.started = time.perf_counter()

    def epoch(self, record) -> None:
        self.ends.append(time.perf_counter())

    def finish(self, outcome) -> None:
        self.finished = time.perf_counter()


def per_epoch(ends: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))


def harness_run(i: int, run: RunSpec, protocol: Protocol, data_dir: Path, work: Path) -> dict:
    url = f"sqlite:///{work / 'runs.db'}"
    with session_scope(url) as session:
        run_id = jobs.submit(
            session,
            specs=[run],
            protocol=protocol,
            sweep=f"harness-{i}",
            data_dir=str(data_dir),
            dataset=data.dataset_info(data_dir),
        )[0]
    with session_scope(url) as session:
        assert jobs.claim(session, run_id=run_id, worker="bench") is not None
    clock = EpochClock()
    artifacts = work / f"run{i}"
    spec = TrainSpec(run=run, protocol=protocol, data_dir=data_dir, artifacts_dir=artifacts)
    SPENT.update(checkpoint=0.0, database=0.0)
    called = time.perf_counter()
    fit(spec, TeeRecorder(TimedDbRecorder(url, run_id), clock))
    returned = time.perf_counter()
    return {
        "checkpoint": SPENT["checkpoint"] / protocol.epochs,
        "database": SPENT["database"] / protocol.epochs,
        "epoch": per_epoch(clock.ends),
        "setup": clock.started - called,
        "finish": returned - clock.ends[-1],
        "checkpoint_mb": (artifacts / CHECKPOINT_LATEST).stat().st_size / 1e6,
    }


def bare_run(run: RunSpec, protocol: Protocol, data_dir: Path) -> dict:
    p = protocol
    called = time.perf_counter()
    dataset = data.load_dataset(data_dir, run.experiment, p.image_size)
    torch.manual_seed(p.seed)
    model = models.build_model(run)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    loss_fn = losses.get_loss(p.loss)
    cfg = augment.config_for(run.experiment, p.augment_mode)
    gen = torch.Generator().manual_seed(p.seed)
    x, y = _to_tensor(dataset.train, torch.device("cpu"))
    xv, yv = _to_tensor(dataset.validation, torch.device("cpu"))
    best, best_model, ends = math.inf, None, []
    started = time.perf_counter()
    for _ in range(p.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), p.batch_size):
            idx = order[s : s + p.batch_size]
            xb, yb = augment.augment_batch(x[idx], y[idx], gen, cfg)
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            val = statistics.fmean(
                float(loss_fn(model(xv[s : s + p.batch_size]), yv[s : s + p.batch_size]))
                for s in range(0, len(xv), p.batch_size)
            )
        if val < best:
            best, best_model = val, {k: v.clone() for k, v in model.state_dict().items()}
        ends.append(time.perf_counter())
    assert best_model is not None
    return {"epoch": per_epoch(ends), "setup": started - called}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 20 slices: CI-sized")
    parser.add_argument("--image-size", type=int, help="default 256 (quick: 64)")
    parser.add_argument("--slices", type=int, help="train+validation slices, 80/20 (default 100)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 3, quick 2)")
    parser.add_argument("--pairs", type=int, help="runs per side (default 3, quick 2)")
    parser.add_argument("--architecture", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    size = args.image_size or (64 if args.quick else 256)
    slices = args.slices or (20 if args.quick else 100)
    epochs = args.epochs or (2 if args.quick else 3)
    pairs = args.pairs or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)

    run = RunSpec("lung-segmentation", args.architecture, args.encoder, "random")
    protocol = Protocol(epochs=epochs, image_size=size)
    with tempfile.TemporaryDirectory(prefix="segbench-harness-") as tmp:
        work = Path(tmp)
        data_dir = data.synth(
            work / "data", image_size=size, train_slices=slices, test_volumes=1, seed=0
        )
        url = f"sqlite:///{work / 'runs.db'}"
        migrate.upgrade(url)
        rows = []
        for i in range(pairs):
            sides = ["harness", "bare"] if i % 2 == 0 else ["bare", "harness"]
            row = {}
            for side in sides:
                if side == "harness":
                    row[side] = harness_run(i, run, protocol, data_dir, work)
                else:
                    row[side] = bare_run(run, protocol, data_dir)
            rows.append(row)
        dispose_engine(url)
        n_train = len(data.load_dataset(data_dir, run.experiment, size).train)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"model {run.architecture}-{run.encoder}, {size}x{size} px, {n_train} train + "
        f"{slices - n_train} validation slices, batch {protocol.batch_size}, "
        f"{epochs} epochs per run, CPU ({os.cpu_count()} cores, {args.threads} torch "
        f"thread(s), load average {load})"
    )
    header = f"{'pair':<6}{'first':>9}{'harness s/epoch':>17}{'bare s/epoch':>14}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    ratios = []
    for i, row in enumerate(rows):
        ratio = row["harness"]["epoch"] / row["bare"]["epoch"]
        ratios.append(ratio)
        first = "harness" if i % 2 == 0 else "bare"
        print(
            f"{i:<6}{first:>9}{row['harness']['epoch']:>17.3f}{row['bare']['epoch']:>14.3f}"
            f"{ratio:>8.3f}"
        )
    h = [r["harness"] for r in rows]
    setup = statistics.median(r["setup"] for r in h)
    finish = statistics.median(r["finish"] for r in h)
    bare_epoch = statistics.median(r["bare"]["epoch"] for r in rows)
    bare_setup = statistics.median(r["bare"]["setup"] for r in rows)
    print(
        f"harness per epoch: checkpoint {statistics.median(r['checkpoint'] for r in h):.3f} s "
        f"({h[0]['checkpoint_mb']:.0f} MB), epoch row + heartbeat + cancel check "
        f"{statistics.median(r['database'] for r in h):.3f} s"
    )
    print(
        f"harness per run, once: set-up {setup:.2f} s (bare {bare_setup:.2f} s); test "
        f"evaluation + model files + finish rows {finish:.2f} s; over 200 epochs "
        f"{100 * (setup + finish - bare_setup) / (200 * bare_epoch):.2f}% of the bare time"
    )
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
