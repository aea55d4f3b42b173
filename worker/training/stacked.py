"""Several runs trained at once on one device, each exactly as it would be alone.

fit_many() advances K runs in lockstep, one unit of work of each in turn (an
optimizer step, or an epoch's validation + recording + checkpoint). Every run
keeps its own model, optimizer, data, shuffle and augmentation generators, global
RNG state (dropout draws from it) and checkpoint, and calls its own recorder in
fit()'s order, so the queue still sees one run per row and each run's losses,
selection and test counts are those of fit() alone: bit for bit on CPU.

On CUDA each run issues its kernels on its own stream. At the paper's batch of
2 a single run leaves most of a large GPU idle between small kernels; K runs on
K streams fill those gaps, and their Python overhead stays one thread's.

Why not one model of K stacked weights (torch.func.stack_module_state +
functional_call + vmap)? BatchNorm running statistics do update correctly under
vmap, but every convolution becomes a grouped one whose sums round differently
(~1e-7 per step, which 200 epochs of training amplify), and on CPU it measured
slower than K separate models (bench/stacked_training.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from db.errors import InvalidInput
from db.protocol import RunOutcome
from worker.training.device import resolve_device
from worker.training.recorder import Recorder
from worker.training.trainer import RunTrainer, TrainSpec

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    index: int
    device: torch.device
    stream: torch.cuda.Stream | None
    trainer: RunTrainer | None = None
    steps: Iterator[None] | None = None
    rng: torch.Tensor | None = None
    cuda_rng: torch.Tensor | None = None


@contextlib.contextmanager
def _turn(slot: _Slot):
    """Make ``slot``'s run the current one: its global RNG states and its stream."""
    cuda = slot.device.type == "cuda"
    if slot.rng is not None:
        torch.set_rng_state(slot.rng)
    if cuda and slot.cuda_rng is not None:
        torch.cuda.set_rng_state(slot.cuda_rng, slot.device)
    stream = torch.cuda.stream(slot.stream) if slot.stream is not None else contextlib.nullcontext()
    try:
        with stream:
            yield
    finally:
        slot.rng = torch.get_rng_state()
        if cuda:
            slot.cuda_rng = torch.cuda.get_rng_state(slot.device)


def fit_many(
    specs: Sequence[TrainSpec],
    recorders: Sequence[Recorder | None] | None = None,
    *,
    return_exceptions: bool = False,
) -> list[RunOutcome | Exception]:
    """Train several runs together; the i-th outcome is what ``fit(specs[i],
    recorders[i])`` returns alone.

    A run that fails or is cancelled (its exception: db.protocol.Cancelled)
    stops alone; the others carry on to the end. Then, with
    ``return_exceptions=True`` its exception takes its place in the list;
    otherwise the first such exception is raised.
    """
    specs = list(specs)
    recorders = list(recorders) if recorders is not None else [None] * len(specs)
    if len(recorders) != len(specs):
        raise InvalidInput(
            f"fit_many needs one recorder per run: got {len(specs)} runs and "
            f"{len(recorders)} recorders."
        )
    results: list[RunOutcome | Exception | None] = [None] * len(specs)
    active: list[_Slot] = []
    for i, (spec, recorder) in enumerate(zip(specs, recorders, strict=True)):
        device = resolve_device(spec.device)
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        slot = _Slot(index=i, device=device, stream=stream)
        try:
            with _turn(slot):
                slot.trainer = RunTrainer(spec, recorder)
                slot.steps = slot.trainer.steps()
        except Exception as exc:
            log.warning("run %s could not start: %s", spec.run.name, exc)
            results[i] = exc
            continue
        active.append(slot)

    while active:
        for slot in list(active):
            try:
                with _turn(slot):
                    try:
                        next(slot.steps)
                        continue
                    except StopIteration:
                        results[slot.index] = slot.trainer.finish()
            except Exception as exc:
                log.warning("run %s stopped: %s", slot.trainer.spec.run.name, exc)
                results[slot.index] = exc
            active.remove(slot)
            slot.trainer = slot.steps = None  # frees its model and data

    if not return_exceptions:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results  # type: ignore[return-value]


def stack_groups(specs: Sequence[TrainSpec], size: int) -> list[list[TrainSpec]]:
    """Split runs into groups of at most ``size`` for fit_many, keeping runs of the
    same architecture and encoder together (their steps cost the same, so no run
    of a group waits long for another)."""
    if size < 1:
        raise InvalidInput(f"group size must be at least 1, got {size}.")
    ordered = sorted(specs, key=lambda s: (s.run.architecture, s.run.encoder))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
