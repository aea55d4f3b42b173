"""The device a run trains on: every device-specific decision in one object.

DevicePolicy decides, for one run on one device, the memory layout, the optimizer's
kernels, the cuDNN and TF32 switches, bf16 autocast, deterministic algorithms, the
random streams, and whether the training step is replayed as a CUDA graph. The
trainer calls it and never branches on the device itself (worker.training.trainer).

What changes numbers is the protocol's (db.protocol: ``train_precision`` fp32 / tf32 /
bf16, ``deterministic``, ``seed_streams``); what only changes speed is a switch of
the policy (channels_last, fused Adam, cuDNN benchmark, CUDA graphs). Everything a
number may depend on beyond the protocol (device model, thread count, library
versions, the effective math mode, the switches that pick kernels) is the run's
*environment*, recorded with the run and hashed into ``environment_key``: runs with
different keys are never pooled silently (docs/protocol.md, "Same seed, same numbers").
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from db.errors import SegbenchError
from db.protocol import Protocol
from worker.data.dataset import Split

log = logging.getLogger(__name__)

# Seconds between latest checkpoints on CUDA (bench/README.md: writing one costs
# about as much as a GPU epoch of a small model; a CPU epoch is far longer).
CUDA_CHECKPOINT_INTERVAL_S = 60.0
# cuBLAS needs a fixed workspace for reproducible results (PyTorch's reproducibility notes).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"
_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


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


def cpu_model() -> str:
    """The processor's model name (its vector units decide CPU kernels' rounding)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def to_tensor(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of a split as (N, 1, H, W) float32 tensors on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(split.images, dtype=np.float32))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(split.masks)).to(torch.float32)[:, None]
    return x.to(device), y.to(device)


@dataclass(frozen=True)
class Performance:
    """The policy's switches as used on one device (kept in the run's config).

    amp, tf32 and deterministic follow the protocol; the others only pick kernels
    and memory layouts. cudnn_benchmark and cuda_graphs are also part of the run's
    environment: they choose the kernels, so they may move the last bits."""

    amp: bool  # bf16 autocast of the training step (train_precision bf16)
    tf32: bool  # TF32 convolutions and matmuls in the training step (train_precision tf32)
    deterministic: bool  # deterministic algorithms (Protocol.deterministic)
    channels_last: bool  # NHWC weights for tensor-core convolutions
    fused_adam: bool  # torch.optim.Adam(fused=True)
    capturable: bool  # Adam's step counters on the device (a CUDA graph needs them there)
    cudnn_benchmark: bool  # let cuDNN time its algorithms once per shape
    cuda_graphs: bool  # replay the training step as a CUDA graph (worker.training.steps)
    compile: bool  # torch.compile: minutes of compiling per model, unmeasured
    checkpoint_interval_s: float


def math_mode(perf: Performance, device: torch.device) -> str:
    """What the training step computes in: ieee-fp32, tf32 or bf16-autocast."""
    if perf.amp:
        return "bf16-autocast"
    if perf.tf32 and device.type == "cuda":
        return "tf32"
    return "ieee-fp32"


def _set_fp32_precision(tf32: bool) -> None:
    """TF32 on or off for cuDNN convolutions and CUDA matmuls (IEEE fp32 when off)."""
    cudnn_conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if cudnn_conv is not None:  # torch >= 2.9: the per-backend precision settings
        torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _tf32_enabled() -> bool:
    cudnn_conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if cudnn_conv is not None:
        return cudnn_conv == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


class DevicePolicy:
    """Every device-specific decision of one run (see the module docstring).

    Switches left at None take the device's default: off on CPU, where they would
    cost time; channels_last, fused and capturable Adam and cuDNN benchmark on for
    CUDA. CUDA graphs stay off by default until the GPU session has shown them
    bit-identical to eager steps (bench/README.md); deterministic runs never use
    cuDNN benchmark.
    """

    def __init__(
        self,
        device: str | torch.device,
        protocol: Protocol,
        *,
        channels_last: bool | None = None,
        fused_adam: bool | None = None,
        cudnn_benchmark: bool | None = None,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        checkpoint_interval_s: float | None = None,
    ):
        self.device = resolve_device(device)
        self.protocol = protocol
        cuda = self.cuda = self.device.type == "cuda"

        def auto(value: bool | None, default: bool) -> bool:
            return default if value is None else bool(value)

        deterministic = protocol.deterministic
        if checkpoint_interval_s is None:
            checkpoint_interval_s = CUDA_CHECKPOINT_INTERVAL_S if cuda else 0.0
        self.switches = Performance(
            amp=protocol.train_precision == "bf16",
            tf32=protocol.train_precision == "tf32",
            deterministic=deterministic,
            channels_last=auto(channels_last, cuda),
            fused_adam=auto(fused_adam, cuda),
            capturable=cuda,
            cudnn_benchmark=False if deterministic else auto(cudnn_benchmark, cuda),
            cuda_graphs=cuda and auto(cuda_graphs, False),
            compile=bool(compile),
            checkpoint_interval_s=float(checkpoint_interval_s),
        )
        self.nondeterministic_ops: set[str] = set()

    # --- process-wide switches -------------------------------------------------------

    def configure(self) -> None:
        """Set torch's process-wide switches for this run (a worker process trains one
        run at a time; the next run sets them again)."""
        s = self.switches
        torch.use_deterministic_algorithms(s.deterministic, warn_only=True)
        if self.cuda:
            if s.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
            torch.backends.cudnn.benchmark = s.cudnn_benchmark
            torch.backends.cudnn.deterministic = s.deterministic
            _set_fp32_precision(False)  # IEEE fp32 unless the training step says otherwise

    @contextlib.contextmanager
    def training_math(self) -> Iterator[None]:
        """The training step's math: TF32 (tf32), bf16 autocast of the forward pass
        (bf16), or IEEE fp32; the loss is computed in fp32 in every mode."""
        s = self.switches
        with contextlib.ExitStack() as stack:
            if self.cuda and s.tf32:
                _set_fp32_precision(True)
                stack.callback(_set_fp32_precision, False)
            if s.deterministic:
                stack.enter_context(self._collect_nondeterministic())
            yield

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around the forward pass of the training step (train_precision bf16)."""
        if not self.switches.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def _collect_nondeterministic(self) -> Iterator[None]:
        # warn_only=True turns a missing deterministic kernel into a warning: name it
        # on the run instead of failing it (docs/protocol.md).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            match = _NONDETERMINISTIC.match(str(w.message))
            if match:
                self.nondeterministic_ops.add(match.group(1))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    # --- what lives on the device -----------------------------------------------------

    def place_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.switches.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        """The paper's Adam (betas 0.9/0.999, eps 1e-8, no weight decay)."""
        s = self.switches
        extra = {}
        if s.fused_adam:
            extra["fused"] = True
        if s.capturable:
            extra["capturable"] = True
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, **extra)

    def to_device(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensor(split, self.device)

    def synchronize(self) -> None:
        """Wait for the device's queued work (so an epoch's seconds are its own)."""
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()

    # --- random streams ---------------------------------------------------------------

    def seed(self) -> tuple[torch.Generator, torch.Generator]:
        """Seed the run's random streams (db.protocol.Protocol.stream_seed): the global
        generators (initialisation, dropout) and the shuffle and augmentation
        generators, which the function returns."""
        p = self.protocol
        torch.manual_seed(p.stream_seed("init"))  # also seeds every CUDA device
        np.random.seed(p.stream_seed("init") % 2**32)
        shuffle = torch.Generator().manual_seed(p.stream_seed("shuffle"))
        augment = torch.Generator().manual_seed(p.stream_seed("augment"))
        return shuffle, augment

    def rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if self.cuda:
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if self.cuda and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    # --- what the run records ---------------------------------------------------------

    def name(self) -> str:
        return device_name(self.device)

    def environment(self) -> dict:
        """Everything beyond the protocol that may change a number of this run."""
        s = self.switches
        env = {
            "device": self.device.type,
            "device_model": self.name() if self.cuda else cpu_model(),
            "machine": platform.machine(),
            "torch": str(torch.__version__),
            "math": math_mode(s, self.device),
            "deterministic": s.deterministic,
        }
        if self.cuda:
            env.update(
                cuda=str(torch.version.cuda),
                cudnn=torch.backends.cudnn.version(),
                cudnn_benchmark=s.cudnn_benchmark,
                cuda_graphs=s.cuda_graphs,
            )
        else:
            # the number of threads splits CPU reductions differently
            env["threads"] = torch.get_num_threads()
        return env


def environment_changes(before: dict, now: dict) -> list[str]:
    """What differs between two environments, as "threads 2 -> 1" phrases."""
    keys = sorted(set(before) | set(now))
    return [f"{k} {before.get(k)} -> {now.get(k)}" for k in keys if before.get(k) != now.get(k)]


def tf32_enabled() -> bool:
    """Whether cuDNN convolutions currently run in TF32 (for tests and the GPU session)."""
    return _tf32_enabled()
