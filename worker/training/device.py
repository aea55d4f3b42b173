"""The device a run trains on and the facts recorded about it (library versions,
git commit, device name)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from db.errors import SegbenchError
from worker.data.dataset import Split

log = logging.getLogger(__name__)


class DeviceError(SegbenchError, ValueError):
    """A device that is not known or not available here."""


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when this process sees a GPU, else CPU), ``cpu`` or ``cuda[:N]``.

    An unknown name, or CUDA asked for where there is none, raises DeviceError.
    """
    name = str(name)
    if name == "auto":
        if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if os.environ.get("CUDA_VISIBLE_DEVICES"):
            log.warning(
                "CUDA_VISIBLE_DEVICES=%s but CUDA is not available: training on CPU",
                os.environ["CUDA_VISIBLE_DEVICES"],
            )
        return torch.device("cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"Unknown device '{name}'; expected auto, cpu or cuda[:N].")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"Device '{name}' was requested but CUDA is not available here; use --device cpu."
        )
    return torch.device(name)


def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import nibabel
    import segmentation_models_pytorch as smp

    try:
        own = version("segbench")
    except PackageNotFoundError:
        own = "unknown"
    return {
        "segbench": own,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def to_tensor(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of a split as (N, 1, H, W) float32 tensors on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(split.images, dtype=np.float32))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(split.masks)).to(torch.float32)[:, None]
    return x.to(device), y.to(device)


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
