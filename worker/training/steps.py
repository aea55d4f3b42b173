"""The training step and the validation pass of a run, eager or replayed as CUDA graphs
(``training_step`` and ``Validation``; the validation's graph is its forward pass and loss).

A step takes a batch by its indices into the run's training tensors and its
augmentation matrices, and does what the paper's protocol says: gather, augment,
forward, loss, backward, Adam. ``EagerStep`` launches those kernels one by one, as
segbench always did (the only path on CPU). ``GraphedStep`` (CUDA, opt-in) runs the
run's first steps eagerly on a side stream, then captures one whole step -
indexing, augmentation, forward, loss, backward and the capturable Adam update - as
a CUDA graph and replays it: the same kernels on the same buffers, a few launches
instead of thousands (at the paper's batch of 2 a 512 px step is launch-bound).

A graph replays the memory it was captured with. ``GraphGuard`` remembers the
addresses of every parameter, buffer, optimizer state and static input at capture
time and refuses a replay after any of them was replaced (a resume, for example,
must happen before the capture: it loads into the same tensors, then the run is
captured). When a capture fails, the step says why (``fallback``) and stays eager;
the trainer records that on the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from db.errors import SegbenchError
from worker.training import augment
from worker.training.device import DevicePolicy

log = logging.getLogger(__name__)

# Eager steps before the capture: cuDNN benchmark, the allocator and Adam's lazily
# created state all settle in them (PyTorch's CUDA-graph notes use 3).
WARMUP_STEPS = 3


class GraphReplaced(SegbenchError, RuntimeError):
    """A tensor that a captured CUDA graph uses was replaced after the capture."""


class GraphGuard:
    """The addresses of the tensors a captured graph reads and writes."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *static):
        self._tensors = lambda: _graph_tensors(model, optimizer, static)
        self._addresses = self._snapshot()

    def _snapshot(self) -> list[tuple[str, int]]:
        return [(name, t.data_ptr()) for name, t in self._tensors()]

    def check(self) -> None:
        """GraphReplaced naming the first tensor that is not the captured one."""
        now = self._snapshot()
        if len(now) != len(self._addresses):
            raise GraphReplaced(
                f"the captured step used {len(self._addresses)} tensors, now there are "
                f"{len(now)}; capture again after changing the model or optimizer."
            )
        for (name, was), (_, is_) in zip(self._addresses, now, strict=True):
            if was != is_:
                raise GraphReplaced(
                    f"{name} was replaced after the CUDA graph was captured; a resume or a "
                    "weight load must come before the capture."
                )


def _graph_tensors(model, optimizer, static) -> list[tuple[str, torch.Tensor]]:
    out = []
    # Gradients are not listed: the graph owns the ones it allocated in the capture,
    # and an eager step (a short last batch) may set others without harm.
    for name, p in model.named_parameters():
        out.append((f"parameter {name}", p))
    for name, b in model.named_buffers():
        out.append((f"buffer {name}", b))
    for i, state in enumerate(optimizer.state.values()):
        for key, value in sorted(state.items()):
            if torch.is_tensor(value):
                out.append((f"optimizer state {i}.{key}", value))
    out.extend((f"static input {i}", t) for i, t in enumerate(static))
    return out


class EagerStep:
    """One optimizer step, kernel by kernel."""

    graphed = False
    fallback: str | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable,
        x: torch.Tensor,
        y: torch.Tensor,
        aug_cfg: augment.AugmentConfig | None,
        policy: DevicePolicy,
    ):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.x, self.y, self.aug_cfg, self.policy = x, y, aug_cfg, policy

    def _step(self, idx: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        xb, yb = self.x[idx], self.y[idx]
        if theta is not None:
            xb, yb = augment.apply_affine(xb, yb, theta, self.aug_cfg)
        self.optimizer.zero_grad(set_to_none=True)
        with self.policy.autocast():
            pred = self.model(xb)
        loss = self.loss_fn(pred, yb)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self, idx: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """Train on the batch ``x[idx]`` (augmented by ``theta``); returns its loss."""
        return self._step(idx, theta)


class GraphedStep(EagerStep):
    """The step captured as a CUDA graph after WARMUP_STEPS eager steps (see module)."""

    def __init__(self, *args, batch_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_size = batch_size
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.guard: GraphGuard | None = None
        self.fallback = None

    @property
    def graphed(self) -> bool:  # type: ignore[override]
        return self.graph is not None

    def __call__(self, idx: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        full = len(idx) == self.batch_size
        if self.graph is not None and full:
            self.static_idx.copy_(idx)
            if theta is not None:
                self.static_theta.copy_(theta)
            self.graph.replay()
            return self.static_loss.clone()
        if (
            self.graph is None
            and self.fallback is None
            and full
            and self.eager_steps >= WARMUP_STEPS
        ):
            try:
                return self._capture(idx, theta)
            except Exception as error:  # a kernel that cannot be captured, say
                self.fallback = f"CUDA graph capture failed ({type(error).__name__}: {error})"
                log.warning("%s; training eagerly", self.fallback)
                self.graph = None
                torch.cuda.synchronize(self.policy.device)
        loss = self._side_stream(idx, theta) if self.graph is None else self._step(idx, theta)
        self.eager_steps += 1
        return loss

    def _side_stream(self, idx, theta) -> torch.Tensor:
        # warm-up steps run on a side stream, as the capture will (PyTorch's recipe)
        stream = torch.cuda.Stream(self.policy.device)
        stream.wait_stream(torch.cuda.current_stream(self.policy.device))
        with torch.cuda.stream(stream):
            loss = self._step(idx, theta)
        torch.cuda.current_stream(self.policy.device).wait_stream(stream)
        return loss

    def _capture(self, idx, theta) -> torch.Tensor:
        self.static_idx = idx.clone()
        self.static_theta = theta.clone() if theta is not None else None
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self.static_loss = self._step(self.static_idx, self.static_theta)
        self.graph = graph
        static = [self.static_idx, self.static_loss]
        if self.static_theta is not None:
            static.append(self.static_theta)
        self.guard = GraphGuard(self.model, self.optimizer, *static)
        graph.replay()  # the capture recorded the step; this replay trains on the batch
        return self.static_loss.clone()

    def check(self) -> None:
        """GraphReplaced if a captured tensor was replaced (called once per epoch)."""
        if self.guard is not None:
            self.guard.check()


class Validation:
    """The validation loss of a run (IEEE fp32, eval mode: it selects the model), eager,
    or, with the policy's cuda_graphs switch, with each full batch's forward pass and
    loss replayed as a CUDA graph captured in the run's second validation (its first is
    eager and warms the kernels up); a short last batch stays eager. A failed capture
    stays eager and says why (``fallback``)."""

    def __init__(self, model, loss_fn, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 policy: DevicePolicy):  # fmt: skip
        self.model, self.loss_fn, self.x, self.y = model, loss_fn, x, y
        self.batch_size, self.policy = batch_size, policy
        self.use_graph = policy.switches.cuda_graphs
        self.passes = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback: str | None = None

    def __call__(self) -> float:
        self.model.eval()
        bs, n = self.batch_size, len(self.x)
        values = []
        with torch.inference_mode():
            if self.use_graph and self.graph is None and self.fallback is None and self.passes:
                self._capture()
            for start in range(0, n, bs):
                if self.graph is not None and n - start >= bs:
                    self.static_x.copy_(self.x[start : start + bs])
                    self.static_y.copy_(self.y[start : start + bs])
                    self.graph.replay()
                    values.append(self.static_loss.clone())
                else:
                    pred = self.model(self.x[start : start + bs])
                    values.append(self.loss_fn(pred, self.y[start : start + bs]))
        self.passes += 1
        return float(torch.stack(values).mean()) if values else float("nan")

    def _capture(self) -> None:
        if len(self.x) < self.batch_size:
            return
        try:
            self.static_x = self.x[: self.batch_size].clone()
            self.static_y = self.y[: self.batch_size].clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.static_loss = self.loss_fn(self.model(self.static_x), self.static_y)
            self.graph = graph
        except Exception as error:
            self.fallback = f"CUDA graph capture of validation failed ({type(error).__name__})"
            log.warning("%s; validating eagerly", self.fallback)
            self.graph = None
            torch.cuda.synchronize(self.policy.device)


def training_step(model, optimizer, loss_fn, x, y, aug_cfg, policy: DevicePolicy, batch_size: int):
    """The run's step: graphed when the policy's cuda_graphs switch is on, else eager."""
    if policy.switches.cuda_graphs:
        return GraphedStep(model, optimizer, loss_fn, x, y, aug_cfg, policy, batch_size=batch_size)
    return EagerStep(model, optimizer, loss_fn, x, y, aug_cfg, policy)


def validation_loss(model, x: torch.Tensor, y: torch.Tensor, loss_fn, batch_size: int) -> float:
    """Mean loss over the validation slices, eager, in IEEE fp32 (it selects the model)."""
    model.eval()
    values = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            pred = model(x[start : start + batch_size])
            values.append(loss_fn(pred, y[start : start + batch_size]))
    return float(torch.stack(values).mean()) if values else float("nan")
