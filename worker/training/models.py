"""Model factory: a grid cell -> a segmentation-models-pytorch model.

Architectures use smp's defaults, which are the paper's Table 1 settings
(Unet decoder 256..16, FPN 256/128/add/dropout 0.2, PSPNet depth 3, 512, 0.2).
ImageNet encoder weights are read from the weights cache (worker.training.weights),
so training itself never needs the network: a worker fills the cache before it
trains a run (worker.queue.weights), `segbench weights fetch` fills it by hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import safetensors.torch
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file

from db.catalog import SMP_ARCHITECTURES
from db.grid import RunSpec
from worker.training import custom, weights
from worker.training.weights import WeightsError  # noqa: F401 - raised here, imported from here

log = logging.getLogger(__name__)


def imagenet_weights_path(encoder: str, *, download: bool = False) -> Path:
    """Path of the encoder's ImageNet safetensors file in the weights cache.

    With ``download=False`` (training) the network is never touched; with
    ``download=True`` missing weights are fetched (worker.training.weights.fetch).
    """
    if download:
        return weights.fetch(encoder)[0]
    path = weights.cached_path(encoder)
    if path is None:
        s = weights.source(encoder)
        raise WeightsError(
            f"ImageNet weights for encoder '{encoder}' ({s.label}) are not in the weights "
            f"cache {weights.cache_dir()}; run `segbench weights fetch --encoder {encoder}` "
            "(or, without internet access, on a machine that has it and copy its cache here)."
        )
    return path


CUSTOM_CLASS = "segbench-custom"  # config.json's _model_class of a user's model


def build_model(spec: RunSpec, *, in_channels: int = 1, classes: int = 1) -> torch.nn.Module:
    """The model of one run (sigmoid output, one input channel): an smp architecture
    and encoder, or a user's own model (worker.training.custom), which carries its
    provenance (`provenance_of`)."""
    if spec.custom:
        model, provenance = custom.build(spec.encoder, in_channels=in_channels, classes=classes)
        model._segbench_provenance = provenance
        return model
    arch = SMP_ARCHITECTURES[spec.architecture]
    model = smp.create_model(
        arch,
        encoder_name=spec.encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=classes,
        activation="sigmoid",
    )
    if spec.init == "imagenet":
        load_imagenet_encoder(model, spec.encoder, in_channels=in_channels)
    return model


def load_imagenet_encoder(model: torch.nn.Module, encoder: str, *, in_channels: int = 1) -> None:
    """Load ImageNet weights into ``model.encoder``, adapting the first conv the
    way smp does (RGB kernels summed for one channel)."""
    path = imagenet_weights_path(encoder)
    state = load_file(str(path), device="cpu")
    depth = getattr(model.encoder, "_depth", 5)
    rgb = smp.encoders.get_encoder(encoder, in_channels=3, depth=depth, weights=None)
    rgb.load_state_dict(state)
    rgb.set_in_channels(in_channels, pretrained=True)
    model.encoder.load_state_dict(rgb.state_dict())
    log.info("loaded ImageNet weights for %s from %s", encoder, path)


def provenance_of(model: torch.nn.Module) -> dict | None:
    """Where a user's model comes from (None for smp models)."""
    return getattr(model, "_segbench_provenance", None)


def count_parameters(model: torch.nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The encoder's first convolution (the paper's Fig. 8 shows its filters); the
    model's first one for a model without an `encoder`."""
    for module in getattr(model, "encoder", model).modules():
        if isinstance(module, torch.nn.Conv2d):
            return module
    raise custom.ModelImportError(
        "The model has no Conv2d layer; segbench records the filters of a model's first "
        "convolution, so its models need one."
    )


# The files of a saved model folder (save_model writes them, predict and export read them).
MODEL_FILES = ("config.json", "segbench.json", "model.safetensors")


def save_model(model: torch.nn.Module, directory: Path, *, metadata: dict) -> Path:
    """safetensors + config.json (loadable by smp.from_pretrained) + segbench.json."""
    directory.mkdir(parents=True, exist_ok=True)
    provenance = provenance_of(model)
    if provenance is not None:
        safetensors.torch.save_model(model, str(directory / "model.safetensors"))
        config = {"_model_class": CUSTOM_CLASS, "in_channels": 1, "classes": 1, **provenance}
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    else:
        model.save_pretrained(str(directory))
    (directory / "segbench.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return directory / "model.safetensors"


def load_model(directory: Path) -> torch.nn.Module:
    """Reload a saved model without pickle (safetensors + JSON config) and without the
    network: the config's encoder_weights are ignored, the saved weights are the model."""
    config = json.loads((Path(directory) / "config.json").read_text())
    name = config.pop("_model_class", None)
    if name == CUSTOM_CLASS:
        return _load_custom(Path(directory), config)
    if name not in SMP_ARCHITECTURES.values():
        raise WeightsError(
            f"{directory / 'config.json'}: unknown model class {name!r}; expected one of "
            f"{', '.join(SMP_ARCHITECTURES.values())} or {CUSTOM_CLASS}."
        )
    config["encoder_weights"] = None
    model = getattr(smp, name)(**config)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
    return model


def _load_custom(directory: Path, config: dict) -> torch.nn.Module:
    """A user's model: its builder must be importable here (same module, same code)."""
    try:
        model, provenance = custom.build(
            config["ref"],
            in_channels=int(config.get("in_channels", 1)),
            classes=int(config.get("classes", 1)),
            output=config.get("output"),
        )
    except custom.ModelImportError as error:
        raise custom.ModelImportError(
            f"Loading the model in {directory} needs its builder {config.get('ref')} "
            f"importable: {error}"
        ) from error
    if config.get("sha256") and provenance.get("sha256") != config["sha256"]:
        log.warning(
            "%s: module %s differs from the one trained (sha256 %s, trained %s)",
            directory,
            provenance["module"],
            provenance.get("sha256"),
            config["sha256"],
        )
    safetensors.torch.load_model(model, str(directory / "model.safetensors"))
    model._segbench_provenance = provenance
    return model
