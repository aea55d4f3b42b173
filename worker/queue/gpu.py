"""Which GPU a worker trains on: chosen before anything touches CUDA."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from db.errors import SegbenchError


class GpuError(SegbenchError, ValueError):
    """A --gpu choice that cannot be honoured."""


def pin_gpu(gpu: str, lock_dir: Path) -> str:
    """Choose this worker's GPU before anything touches CUDA; returns the choice.

    ``auto``: keep CUDA_VISIBLE_DEVICES if it is set, else take the first GPU that
    no other worker on this machine holds (a lock file per GPU in `lock_dir`,
    released when the process ends), else CPU. ``none``: CPU. ``N``: GPU N.
    """
    if gpu == "none":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if gpu.isdigit():
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        return f"gpu {gpu}"
    if gpu != "auto":
        raise GpuError(f"Unknown --gpu '{gpu}'; expected auto, none or a GPU index.")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
    gpus = _gpu_indices()
    if not gpus:
        return "cpu"
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in gpus:
        handle = open(lock_dir / f"gpu-{index}.lock", "w")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_locks.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = index
        return f"gpu {index}"
    raise GpuError(
        f"Every GPU of this machine ({', '.join(gpus)}) already has a worker; use "
        "--concurrency N for several runs per GPU, or --gpu N to share one."
    )


_held_locks: list = []


def _gpu_indices() -> list[str]:
    # nvidia-smi (or the device files), not torch: the worker's parent must not
    # initialise CUDA before its pool forks.
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return [line.strip() for line in out.splitlines() if line.strip().isdigit()]
    except (OSError, subprocess.SubprocessError):
        devices = [p for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit()]
        return [str(i) for i in range(len(devices))]
