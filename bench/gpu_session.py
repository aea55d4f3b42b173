"""The measurements segbench needs a GPU for, one step per call (bench/gpu_session.sh
runs them all in one session, each under its own time budget).

Steps (``python bench/gpu_session.py STEP --out DIR``):
- ``env``: the device, driver, torch / CUDA / cuDNN versions, the TF32 defaults.
- ``steps``: for a spread of architecture x encoder cells (all four architectures;
  vgg, resnet, densenet, dpn, mobilenet, inception, efficientnet): first-step
  seconds with cuDNN benchmark off and on, step ms eager and as a replayed CUDA
  graph, with TF32, with deterministic algorithms and in bf16, peak memory, and
  bit-for-bit equality of eager vs eager (benchmark on, and deterministic) and of
  eager vs graph after the same steps from the same seed. Writes the cell table.
- ``harness``: fit() epochs (eager and graphed) against the bare step's time.
- ``slots``: K = 1/2/4/8 runs per GPU as processes (eager and graphed) and as
  streams in one process (graphed): throughput against one run.
- ``queue``: the real queue (segbench submit + segbench worker on the embedded
  broker) on ~12 runs: per-epoch seconds and the first epoch's overhead per run.
- ``project``: projected hours for 600 x 200 from the measured cells (no FLOPs).

Everything is written to DIR/gpu_session.json as it is measured (one key per
step), so a step cut by its budget keeps what it had. ``--dry-run`` runs every step
on the CPU at toy sizes: the test suite runs it so the session script cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from cell_timing import Trial, measure_cell, project, same, sync, write_table  # noqa: E402

from worker import data  # noqa: E402
from worker.training.device import device_name, tf32_enabled  # noqa: E402

# A spread over the four architectures and the encoder families (issue of record:
# vgg, resnet, densenet, dpn, mobilenet, inception, efficientnet), cheapest first so
# that a budget cut loses the most expensive ones.
CELLS = [
    ("unet", "vgg11"),
    ("unet", "resnet34"),
    ("linknet", "resnet18"),
    ("linknet", "mobilenet_v2"),
    ("fpn", "efficientnet-b0"),
    ("pspnet", "efficientnet-b0"),
    ("fpn", "resnet50"),
    ("unet", "densenet121"),
    ("fpn", "dpn68"),
    ("pspnet", "inceptionv4"),
    ("linknet", "resnext50_32x4d"),
    ("unet", "efficientnet-b3"),
]
DRY_CELLS = [("linknet", "mobilenet_v2")]


class Session:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.file = self.out / "gpu_session.json"
        self.dry = args.dry_run
        self.device = torch.device("cpu" if self.dry else "cuda")
        self.size = 32 if self.dry else 512
        self.deadline = time.monotonic() + args.budget

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def load(self) -> dict:
        return json.loads(self.file.read_text()) if self.file.exists() else {}

    def save(self, key: str, value) -> None:
        doc = self.load()
        doc[key] = value
        self.file.write_text(json.dumps(doc, indent=1, default=str) + "\n")

    def data_dir(self) -> Path:
        path = self.out / f"data-{self.size}"
        if not (path / "manifest.json").exists():
            data.synth(
                path,
                image_size=self.size,
                train_slices=100 if not self.dry else 5,
                test_volumes=2,
                slices_per_volume=16 if not self.dry else 2,
                seed=0,
            )
        return path


def log(message: str) -> None:
    print(message, flush=True)


# --- env -----------------------------------------------------------------------------


def step_env(s: Session) -> None:
    info = {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cuda": str(torch.version.cuda),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device_name(s.device),
        "tf32_default": tf32_enabled(),
        "cpu_count": os.cpu_count(),
        "dry_run": s.dry,
    }
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    s.save("env", info)
    log(json.dumps(info))


# --- steps ---------------------------------------------------------------------------


def _bitwise(cell, data_dir, size, device, steps: int, **switches) -> dict:
    """Parameters after `steps` steps of two fresh eager runs and a graphed one."""
    runs = {}
    for name, extra in (("a", {}), ("b", {}), ("graph", {"cuda_graphs": True})):
        if name == "graph" and device.type != "cuda":
            continue
        trial = Trial(cell, data_dir, size, device, **{**switches, **extra})
        trial.steps(steps)
        runs[name] = trial.parameters()
        if name == "graph":
            runs["fallback"] = trial.step.fallback
        del trial
    out = {"eager_vs_eager": same(runs["a"], runs["b"])}
    if "graph" in runs:
        out["eager_vs_graph"] = same(runs["a"], runs["graph"])
        out["graph_fallback"] = runs["fallback"]
    return out


def _timed(cell, data_dir, size, device, steps: int, **switches) -> dict:
    trial = Trial(cell, data_dir, size, device, **switches)
    first = trial.steps(1)[0]
    trial.steps(4)
    return {"first_step_s": first, "step_s": trial.timed_steps(steps)}


def step_steps(s: Session) -> None:
    data_dir = s.data_dir()
    cells = DRY_CELLS if s.dry else CELLS
    n = 2 if s.dry else 20
    rows = s.load().get("steps", {})
    for cell in cells:
        key = f"{cell[0]}/{cell[1]}"
        if key in rows:
            continue
        if s.left() < (5 if s.dry else 25):
            log(f"steps: budget spent before {key}")
            break
        started = time.monotonic()
        row = {"cell": key}
        try:
            if s.device.type == "cuda":
                off = _timed(cell, data_dir, s.size, s.device, n, cudnn_benchmark=False)
                row["benchmark_off"] = off
            row.update(measure_cell(cell, data_dir, s.size, s.device, steps=n))
            if s.device.type == "cuda":
                row["tf32"] = _timed(cell, data_dir, s.size, s.device, n, train_precision="tf32")
                row["bf16"] = _timed(cell, data_dir, s.size, s.device, n, train_precision="bf16")
                row["deterministic"] = _timed(
                    cell, data_dir, s.size, s.device, n, deterministic=True
                )
            bitwise_steps = 2 if s.dry else 8
            row["bitwise"] = _bitwise(cell, data_dir, s.size, s.device, bitwise_steps)
            row["bitwise_deterministic"] = _bitwise(
                cell, data_dir, s.size, s.device, bitwise_steps, deterministic=True
            )
        except Exception as error:  # one cell's failure must not cost the others
            row["error"] = f"{type(error).__name__}: {error}"
        row["seconds"] = time.monotonic() - started
        rows[key] = row
        s.save("steps", rows)
        write_table(
            s.out / "cells.json",
            device_name(s.device),
            s.size,
            {k: v for k, v in rows.items() if "eager_step_s" in v},
        )
        log(f"steps {key}: {json.dumps(row)}")


# --- harness -------------------------------------------------------------------------


def step_harness(s: Session) -> None:
    """Seconds per epoch of fit() (database-free: fit() with its checkpoints and
    recorder calls) against the bare step x steps per epoch + validation."""
    from db.grid import RunSpec
    from db.protocol import Protocol
    from worker.training.recorder import Recorder
    from worker.training.trainer import TrainSpec, fit

    class Clock(Recorder):
        def __init__(self):
            self.records = []

        def epoch(self, record):
            self.records.append(record)

    data_dir = s.data_dir()
    cell = ("unet", "resnet34") if not s.dry else DRY_CELLS[0]
    bare = s.load().get("steps", {}).get(f"{cell[0]}/{cell[1]}", {})
    result = {"cell": f"{cell[0]}/{cell[1]}"}
    for graphs in (False, True) if s.device.type == "cuda" else (False,):
        clock = Clock()
        with tempfile.TemporaryDirectory() as tmp:
            spec = TrainSpec(
                run=RunSpec("lung-segmentation", *cell, "random"),
                protocol=Protocol(epochs=2 if s.dry else 4, image_size=s.size),
                data_dir=data_dir,
                device=str(s.device),
                artifacts_dir=Path(tmp),
                cuda_graphs=graphs,
            )
            fit(spec, clock)
        steady = clock.records[-1]
        name = "graphed" if graphs else "eager"
        result[name] = {
            "first_epoch_s": clock.records[0].train_seconds,
            "train_s": steady.train_seconds,
            "val_s": steady.val_seconds,
        }
        step_key = "graph_step_s" if graphs else "eager_step_s"
        if bare.get(step_key):
            steps = (80 if not s.dry else 4) // 2
            result[name]["ratio_to_bare"] = steady.train_seconds / (steps * bare[step_key])
        s.save("harness", result)
    log(f"harness: {json.dumps(result)}")


# --- slots ---------------------------------------------------------------------------


def worker_steps(args) -> None:
    """A child of ``slots``: waits for the start file, then trains `--count` steps."""
    device = torch.device(args.device)
    trial = Trial(
        tuple(args.cell.split("/")), Path(args.data), args.size, device, cuda_graphs=args.graphs
    )
    trial.steps(5)  # warm-up (and the capture)
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.01)
    started = time.perf_counter()
    trial.timed_steps(args.count)
    print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)


def _processes(s: Session, cell: str, k: int, graphs: bool, count: int) -> float:
    """Steps per second of k processes training at once."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        procs = []
        for i in range(k):
            ready = Path(tmp) / f"ready{i}"
            procs.append(
                (
                    ready,
                    subprocess.Popen(
                        [sys.executable, __file__, "worker-steps", "--out", str(s.out),
                         "--cell", cell, "--data", str(s.data_dir()), "--size", str(s.size),
                         "--device", str(s.device), "--count", str(count),
                         "--ready", str(ready), "--go", str(go)]
                        + (["--graphs"] if graphs else []) + (["--dry-run"] if s.dry else []),
                        stdout=subprocess.PIPE, text=True,
                        env={**os.environ, "OMP_NUM_THREADS": "1"},
                    ),
                )
            )  # fmt: skip
        while not all(r.exists() for r, _ in procs):
            if any(p.poll() is not None for _, p in procs):
                raise RuntimeError("a slot process ended before it was ready")
            time.sleep(0.05)
        started = time.perf_counter()
        go.touch()
        for _, p in procs:
            p.wait(timeout=max(5, s.left()))
        return k * count / (time.perf_counter() - started)


def _streams(s: Session, cell: tuple[str, str], k: int, count: int) -> float:
    """Steps per second of k graphed runs replayed round robin on k streams."""
    trials = [
        Trial(cell, s.data_dir(), s.size, s.device, seed=i, cuda_graphs=True) for i in range(k)
    ]
    streams = [torch.cuda.Stream(s.device) for _ in trials]
    for trial, stream in zip(trials, streams, strict=True):
        with torch.cuda.stream(stream):
            trial.steps(5)
    sync(s.device)
    started = time.perf_counter()
    for i in range(count):
        for trial, stream in zip(trials, streams, strict=True):
            with torch.cuda.stream(stream):
                idx, theta = trial.batches[i % len(trial.batches)]
                trial.step(idx, theta)
    sync(s.device)
    return k * count / (time.perf_counter() - started)


def step_slots(s: Session) -> None:
    cell = "unet/resnet18" if not s.dry else "linknet/mobilenet_v2"
    count = 2 if s.dry else 60
    ks = (1, 2) if s.dry else (1, 4, 8, 2)
    rows = []
    base: dict[str, float] = {}
    plans = [("processes", k, g) for k in ks for g in ((False,) if s.dry else (False, True))]
    if s.device.type == "cuda":
        plans += [("streams", k, True) for k in (1, 2, 4, 8)]
    for kind, k, graphs in plans:
        if s.left() < (5 if s.dry else 20):
            log(f"slots: budget spent before {kind} k={k}")
            break
        try:
            if kind == "processes":
                rate = _processes(s, cell, k, graphs, count)
            else:
                rate = _streams(s, tuple(cell.split("/")), k, count)
        except Exception as error:
            rows.append({"kind": kind, "k": k, "graphs": graphs, "error": str(error)})
            continue
        name = f"{kind}/{'graph' if graphs else 'eager'}"
        if (kind, k, graphs) == ("processes", 1, False):
            base["eager"] = rate  # one eager run: what every speedup is against
        row = {"kind": kind, "k": k, "graphs": graphs, "steps_per_s": rate}
        if base.get("eager"):
            row["speedup"] = rate / base["eager"]
        rows.append(row)
        s.save("slots", rows)
        log(f"slots {name} k={k}: {rate:.1f} steps/s")


# --- queue ---------------------------------------------------------------------------


def step_queue(s: Session) -> None:
    """~12 real runs through segbench submit + segbench worker (embedded broker)."""
    work = Path(tempfile.mkdtemp(prefix="segbench-queue-"))
    db = work / "segbench.db"
    env = {
        **os.environ,
        "SEGBENCH_DATABASE_URL": f"sqlite:///{db}",
        "SEGBENCH_ARTIFACTS_DIR": str(work / "artifacts"),
        "HF_HUB_OFFLINE": "1",
    }
    cli = [sys.executable, "-m", "worker.cli"]
    data_dir = s.data_dir()
    archs = ["unet", "linknet", "fpn", "pspnet"]
    encoders = ["mobilenet_v2"] if s.dry else ["resnet18", "resnet34", "mobilenet_v2"]
    submit = cli + ["submit", "--data", str(data_dir), "--init", "random", "--sweep", "gpu",
                    "--epochs", "1" if s.dry else "3", "--image-size", str(s.size),
                    "-x", "lung-segmentation", "--format", "json"]  # fmt: skip
    for a in archs[: 1 if s.dry else 4]:
        submit += ["-a", a]
    for e in encoders:
        submit += ["-e", e]
    subprocess.run(submit, env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    slots = "1" if s.dry else str(s.args.queue_slots)
    gpu = ["--gpu", "none"] if s.dry else ["--gpu", "0"]
    started = time.perf_counter()
    worker = subprocess.Popen(
        cli + ["worker", "--concurrency", slots, *gpu, "--loglevel", "WARNING"],
        env=env, cwd=ROOT, stdout=(s.out / "queue-worker.log").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    rows = []
    try:
        while s.left() > 3:
            rows = _statuses(db)
            if rows and all(st in ("succeeded", "failed", "cancelled") for st in rows):
                break
            time.sleep(1)
    finally:
        wall = time.perf_counter() - started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=30)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    result = {
        "runs": len(rows),
        "statuses": {st: rows.count(st) for st in set(rows)},
        "wall_s": wall,
        "slots": int(slots),
    }
    result.update(_epoch_figures(db))
    shutil.copy(db, s.out / "queue.db")
    s.save("queue", result)
    log(f"queue: {json.dumps(result)}")


def _statuses(db: Path) -> list[str]:
    import sqlite3

    con = sqlite3.connect(db, timeout=5)
    try:
        return [st for (st,) in con.execute("SELECT status FROM runs")]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def _epoch_figures(db: Path) -> dict:
    """First-epoch overhead (epoch 1 minus the median of the later ones) per run."""
    import sqlite3

    con = sqlite3.connect(db)
    epochs: dict[int, list[tuple[int, float]]] = {}
    for run_id, epoch, seconds in con.execute(
        "SELECT run_id, epoch, train_seconds FROM epochs ORDER BY run_id, epoch"
    ):
        epochs.setdefault(run_id, []).append((epoch, seconds))
    con.close()
    overheads, steady = [], []
    for rows in epochs.values():
        later = [sec for ep, sec in rows if ep > 1]
        first = [sec for ep, sec in rows if ep == 1]
        if later and first:
            overheads.append(first[0] - statistics.median(later))
            steady.append(statistics.median(later))
    if not overheads:
        return {}
    return {
        "first_epoch_overhead_s": {
            "median": statistics.median(overheads),
            "max": max(overheads),
        },
        "steady_epoch_s_median": statistics.median(steady),
    }


# --- project -------------------------------------------------------------------------


def step_project(s: Session) -> None:
    doc = s.load()
    cells = {k: v for k, v in doc.get("steps", {}).items() if "eager_step_s" in v}
    if not cells:
        log("project: no measured cell")
        return
    table = {"device": device_name(s.device), "image_size": s.size, "cells": cells}
    result = {"eager": project(table, graphed=False)}
    if any(v.get("graph_step_s") for v in cells.values()):
        result["graphed"] = project(table, graphed=True)
    speedups = [r["speedup"] for r in doc.get("slots", []) if r.get("speedup")]
    if speedups:
        best = min(r["hours"] for r in result.values())
        result["with_slots"] = {"speedup": max(speedups), "hours": best / max(speedups)}
    s.save("project", result)
    for name, r in result.items():
        log(f"project {name}: {r['hours']:.1f} h")


STEPS = {
    "env": step_env,
    "steps": step_steps,
    "harness": step_harness,
    "slots": step_slots,
    "queue": step_queue,
    "project": step_project,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[*STEPS, "worker-steps"])
    parser.add_argument("--out", required=True, help="folder for gpu_session.json and logs")
    parser.add_argument("--budget", type=float, default=120, help="seconds for this step")
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes")
    parser.add_argument("--queue-slots", type=int, default=6, help="queue: runs at once")
    # worker-steps (a child of `slots`)
    for name in ("--cell", "--data", "--device", "--ready", "--go"):
        parser.add_argument(name)
    parser.add_argument("--size", type=int)
    parser.add_argument("--count", type=int)
    parser.add_argument("--graphs", action="store_true")
    args = parser.parse_args()
    if args.step == "worker-steps":
        worker_steps(args)
        return
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_session: no CUDA device here; use --dry-run to try it on the CPU.")
    torch.set_num_threads(1 if args.dry_run else max(1, (os.cpu_count() or 2) // 2))
    STEPS[args.step](Session(args))


if __name__ == "__main__":
    main()
