"""Model factory: a grid cell -> a segmentation-models-pytorch model.

Architectures use smp's defaults, which are the paper's Table 1 settings
(Unet decoder 256..16, FPN 256/128/add/dropout 0.2, PSPNet depth 3, 512, 0.2).
ImageNet encoder weights are read from the local Hugging Face cache, so training
never needs the network; `segbench weights fetch` fills that cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

from db.errors import SegbenchError
from db.grid import ARCHITECTURES, ENCODERS, RunSpec, check_name

log = logging.getLogger(__name__)


class WeightsError(SegbenchError):
    """Pretrained encoder weights are not available locally."""


def _imagenet_settings(encoder: str) -> dict:
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if "imagenet" not in settings:
        raise WeightsError(f"Encoder '{encoder}' has no ImageNet weights in smp.")
    return settings["imagenet"]


def imagenet_weights_path(encoder: str, *, download: bool = False) -> Path:
    """Path of the encoder's ImageNet safetensors file in the local HF cache.

    With ``download=False`` (training) the network is never touched.
    """
    check_name("encoder", encoder, ENCODERS)
    s = _imagenet_settings(encoder)
    try:
        if download:
            hf_hub_download(s["repo_id"], filename="config.json", revision=s["revision"])
        return Path(
            hf_hub_download(
                s["repo_id"],
                filename="model.safetensors",
                revision=s["revision"],
                local_files_only=not download,
            )
        )
    except Exception as exc:  # LocalEntryNotFoundError, network errors
        how = (
            "check the network connection to huggingface.co"
            if download
            else f"run `segbench weights fetch --encoder {encoder}` on a machine with "
            "internet access and copy its Hugging Face cache (HF_HOME) here"
        )
        raise WeightsError(
            f"ImageNet weights for encoder '{encoder}' ({s['repo_id']}@{s['revision'][:7]}) "
            f"are not in the local Hugging Face cache; {how}."
        ) from exc


def build_model(spec: RunSpec, *, in_channels: int = 1, classes: int = 1) -> torch.nn.Module:
    """The paper's model for one grid cell (sigmoid output, one input channel)."""
    arch = ARCHITECTURES[spec.architecture]
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


def count_parameters(model: torch.nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The encoder's first convolution (the paper's Fig. 8 shows its filters)."""
    for module in model.encoder.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module
    raise ValueError("model has no Conv2d layer in its encoder")


def save_model(model: torch.nn.Module, directory: Path, *, metadata: dict) -> Path:
    """safetensors + config.json (loadable by smp.from_pretrained) + segbench.json."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    (directory / "segbench.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return directory / "model.safetensors"


def load_model(directory: Path) -> torch.nn.Module:
    """Reload a saved model without pickle (safetensors + JSON config) and without the
    network: the config's encoder_weights are ignored, the saved weights are the model."""
    config = json.loads((Path(directory) / "config.json").read_text())
    name = config.pop("_model_class", None)
    if name not in ARCHITECTURES.values() and not hasattr(smp, str(name)):
        raise WeightsError(
            f"{directory / 'config.json'}: unknown model class {name!r}; expected one of "
            f"{', '.join(ARCHITECTURES.values())}."
        )
    config["encoder_weights"] = None
    model = getattr(smp, name)(**config)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
    return model
