"""A user's own model: a builder named ``module:function`` or registered under the
entry point group ``segbench.models``.

The builder is called as ``build(in_channels=1, classes=1)`` and returns an
``nn.Module`` mapping a batch (N, 1, H, W) to (N, 1, H, W). Its output is logits or
probabilities: the module says which with an attribute ``segbench_output`` set to
"logits" or "probabilities"; without it segbench passes one random slice through
the model in eval mode and takes outputs outside [0, 1] for logits, outputs inside
for probabilities (recorded as decided by "probe"). Logits get a sigmoid, so every
model is trained and evaluated on probabilities, exactly as the grid's models.

`provenance` is what a run records so a number can be traced to code: the
reference, the builder's name, the module's file and its sha256, the installed
distribution and its version, and how the output kind was decided.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from db.errors import SegbenchError
from db.settings import worker_host

ENTRY_POINT_GROUP = "segbench.models"
OUTPUTS = ("logits", "probabilities")
PROBE_SIZE = 64


class ModelImportError(SegbenchError):
    """A user's model cannot be imported or built here."""


class WithSigmoid(nn.Module):
    """A model that produces logits, followed by a sigmoid."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def entry_points() -> dict[str, str]:
    """Installed `segbench.models` entry points: name -> module:function."""
    return {ep.name: ep.value for ep in md.entry_points(group=ENTRY_POINT_GROUP)}


def _target(ref: str) -> tuple[str, str, str]:
    """(module, function, entry point name or "") of a reference."""
    if ":" in ref:
        module, _, function = ref.partition(":")
        return module, function, ""
    found = entry_points()
    if ref not in found:
        names = ", ".join(sorted(found)) or "none is installed"
        raise ModelImportError(
            f"No `{ENTRY_POINT_GROUP}` entry point named '{ref}' on {worker_host()} "
            f"({names}); name the builder as module:function or install its package."
        )
    module, _, function = found[ref].partition(":")
    return module.strip(), function.strip(), ref


def resolve(ref: str) -> tuple[Callable[..., nn.Module], dict]:
    """The builder of `ref` and where it comes from; ModelImportError (one sentence
    naming the module and this host) when it cannot be imported."""
    module_name, function, entry = _target(ref)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ModelImportError(
            f"Cannot import the model module '{module_name}' on host {worker_host()} "
            f"({type(error).__name__}: {error}); install it there (the same version) or put "
            "it on PYTHONPATH."
        ) from error
    builder = getattr(module, function, None)
    if not callable(builder):
        raise ModelImportError(
            f"Module '{module_name}' on host {worker_host()} has no function '{function}'."
        )
    return builder, {
        "ref": ref,
        "name": entry or f"{module_name}.{function}",
        "module": module_name,
        "function": function,
        **_source(module, module_name),
    }


def _source(module, module_name: str) -> dict:
    try:
        path = Path(inspect.getfile(module))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (TypeError, OSError):
        path, digest = None, None
    top = module_name.split(".")[0]
    dists = md.packages_distributions().get(top) or []
    package = dists[0] if dists else None
    return {
        "file": str(path) if path else None,
        "sha256": digest,
        "package": package,
        "version": md.version(package) if package else None,
    }


def _forward(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The model on `x` in eval mode; ModelImportError (one sentence naming the model,
    the input's shape and the error's first line) when its forward pass raises."""
    was_training = model.training
    try:
        with torch.no_grad():
            y = model.eval()(x)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelImportError(
            f"The model {name} failed on a test input of shape {tuple(x.shape)} on host "
            f"{worker_host()} ({type(error).__name__}: {first}); it must map (N, 1, H, W) "
            "to (N, 1, H, W)."
        ) from error
    finally:
        model.train(was_training)
    if not isinstance(y, torch.Tensor):
        raise ModelImportError(
            f"The model {name} returned {type(y).__name__} for a test input of shape "
            f"{tuple(x.shape)}; expected one tensor of shape (N, 1, H, W)."
        )
    return y


def _output_kind(model: nn.Module, image_size: int, name: str) -> tuple[str, str]:
    declared = getattr(model, "segbench_output", None)
    if declared is not None:
        if declared not in OUTPUTS:
            raise ModelImportError(
                f"The model's segbench_output is {declared!r}; expected 'logits' or "
                "'probabilities'."
            )
        return declared, "attribute"
    generator = torch.Generator().manual_seed(0)
    size = min(image_size, PROBE_SIZE)
    y = _forward(model, torch.randn(2, 1, size, size, generator=generator), name)
    inside = bool(((y >= 0) & (y <= 1)).all())
    return ("probabilities" if inside else "logits"), "probe"


def build(ref: str, *, in_channels: int = 1, classes: int = 1, output: str | None = None):
    """(model producing probabilities, provenance). `output` (from a saved model's
    config) skips deciding the output kind again."""
    builder, provenance = resolve(ref)
    try:
        model = builder(in_channels=in_channels, classes=classes)
    except Exception as error:
        raise ModelImportError(
            f"The builder {provenance['name']} failed on host {worker_host()} "
            f"({type(error).__name__}: {error})."
        ) from error
    if not isinstance(model, nn.Module):
        raise ModelImportError(
            f"The builder {provenance['name']} returned {type(model).__name__}, not a "
            "torch.nn.Module."
        )
    how = "config"
    if output is None:
        output, how = _output_kind(model, PROBE_SIZE, provenance["name"])
    provenance = {**provenance, "output": output, "output_from": how}
    return (WithSigmoid(model) if output == "logits" else model), provenance


def check(ref: str, image_size: int) -> dict:
    """Import and build the model, pass one slice of the run's size through it; its
    provenance, or ModelImportError with one sentence."""
    model, provenance = build(ref)
    y = _forward(model, torch.zeros(1, 1, image_size, image_size), provenance["name"])
    if tuple(y.shape) != (1, 1, image_size, image_size):
        raise ModelImportError(
            f"The model {provenance['name']} turns a {image_size}-pixel slice of shape "
            f"(1, 1, {image_size}, {image_size}) into {tuple(y.shape)}; expected the same shape."
        )
    return provenance
