"""Can smp build this architecture with this encoder at this image size? Asked when
runs are submitted, so that a run smp cannot build is refused with one sentence
instead of failing once a worker claims it.

The answer comes from building the model on PyTorch's meta device (shapes only: no
memory, no weights, no download) and passing one meta slice of the run's size
through it in eval mode; a model whose forward needs real numbers (the mix
transformers call ``.item()``) is built on the CPU instead. Answers are cached per
(architecture, encoder, image size) for the life of the process. The paper's 100
cells are known to build and are not asked.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
import warnings
from collections.abc import Iterable

import segmentation_models_pytorch as smp
import timm
import torch

from db.catalog import SMP_ARCHITECTURES, TIMM_PREFIX, imagenet_refusal, static_refusal
from db.errors import InvalidInput
from db.grid import RunSpec

log = logging.getLogger(__name__)


class NotBuildable(InvalidInput):
    """smp cannot build this architecture / encoder / image size."""


def _forward(arch: str, encoder: str, size: int, device: str) -> torch.Size:
    with (
        torch.device(device),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        model = smp.create_model(
            SMP_ARCHITECTURES[arch], encoder_name=encoder, encoder_weights=None, in_channels=1
        )
        return model.eval()(torch.zeros(1, 1, size, size)).shape


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__).rstrip(".")


@functools.lru_cache(maxsize=4096)
def build_refusal(arch: str, encoder: str, image_size: int) -> str | None:
    """Why smp 0.6 cannot build `arch` with `encoder` for `image_size` slices (one
    sentence), or None when it can."""
    refusal = static_refusal(arch, encoder)
    if refusal:
        return refusal
    if encoder.startswith(TIMM_PREFIX) and encoder[len(TIMM_PREFIX) :] not in _timm_models():
        return (
            f"timm has no model '{encoder[len(TIMM_PREFIX) :]}' for the encoder '{encoder}'; "
            '`python -c "import timm; print(timm.list_models())"` lists them.'
        )
    started = time.perf_counter()
    try:
        try:
            shape = _forward(arch, encoder, image_size, "meta")
        except (RuntimeError, NotImplementedError) as error:
            if "meta" not in str(error):
                raise
            shape = _forward(arch, encoder, image_size, "cpu")
    except Exception as error:  # smp raises ValueError, RuntimeError, AttributeError, ...
        return (
            f"smp cannot build {SMP_ARCHITECTURES[arch]} with the encoder '{encoder}' for "
            f"{image_size}-pixel slices ({type(error).__name__}: {_first_line(error)})."
        )
    finally:
        log.debug(
            "build check %s/%s/%d: %.2f s", arch, encoder, image_size, time.perf_counter() - started
        )
    if tuple(shape) != (1, 1, image_size, image_size):
        return (
            f"{SMP_ARCHITECTURES[arch]} with the encoder '{encoder}' turns a {image_size}-pixel "
            f"slice into an output of shape {tuple(shape)}, not one mask of the same size."
        )
    return None


@functools.cache
def _timm_models() -> frozenset[str]:
    return frozenset(timm.list_models())


def check_buildable(specs: Iterable[RunSpec], image_size: int) -> None:
    """Refuse (NotBuildable, one sentence) the first spec smp cannot build, or whose
    ImageNet init segbench cannot provide; the paper's cells and user models pass."""
    for spec in specs:
        if spec.custom or spec.paper:
            continue
        if spec.init == "imagenet" and imagenet_refusal(spec.encoder):
            raise NotBuildable(imagenet_refusal(spec.encoder))
        refusal = build_refusal(spec.architecture, spec.encoder, image_size)
        if refusal:
            raise NotBuildable(refusal)
