"""The paper's 600-model grid as plain data (no torch import).

4 architectures x 25 encoders x 2 weight inits x 3 experiments = 600 runs
(Bizopoulos et al., 2020). Names are the paper's / segmentation-models-pytorch's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from db.errors import InvalidInput, check_choice

# segbench name -> segmentation_models_pytorch class name
ARCHITECTURES: dict[str, str] = {
    "unet": "Unet",
    "linknet": "Linknet",
    "fpn": "FPN",
    "pspnet": "PSPNet",
}

vgg_encoders = {"vgg11": "vgg", "vgg13": "vgg", "vgg19": "vgg"}
resnet_encoders = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "resnet101": "resnet",
    "resnet152": "resnet",
}
densenet_encoders = {
    "densenet121": "densenet",
    "densenet161": "densenet",
    "densenet169": "densenet",
    "densenet201": "densenet",
}
resnext_encoders = {"resnext50_32x4d": "resnext"}
dpn_encoders = {"dpn68": "dpn", "dpn98": "dpn"}
mobilenet_encoders = {"mobilenet_v2": "mobilenet"}
xception_encoders = {"xception": "xception"}
inception_encoders = {"inceptionv4": "inception"}
efficientnet_encoders = {f"efficientnet-b{i}": "efficientnet" for i in range(7)}

# encoder name -> family, in the paper's order
ENCODERS: dict[str, str] = {
    **vgg_encoders,
    **resnet_encoders,
    **densenet_encoders,
    **resnext_encoders,
    **dpn_encoders,
    **mobilenet_encoders,
    **xception_encoders,
    **inception_encoders,
    **efficientnet_encoders,
}

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(ENCODERS.values()))

EXPERIMENTS: tuple[str, ...] = (
    "lung-segmentation",
    "lesion-segmentation-a",
    "lesion-segmentation-b",
)

INITS: tuple[str, ...] = ("random", "imagenet")


class GridError(InvalidInput):
    """A name that is not part of the grid."""


@dataclass(frozen=True, order=True)
class RunSpec:
    """One cell of the grid: what to train, independent of the protocol."""

    experiment: str
    architecture: str
    encoder: str
    init: str

    @property
    def family(self) -> str:
        return ENCODERS[self.encoder]

    @property
    def encoder_weights(self) -> str | None:
        return None if self.init == "random" else "imagenet"

    @property
    def name(self) -> str:
        return run_name(asdict(self))

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "family": self.family}

    def __post_init__(self) -> None:
        check_name("experiment", self.experiment, EXPERIMENTS)
        check_name("architecture", self.architecture, ARCHITECTURES)
        check_name("encoder", self.encoder, ENCODERS)
        check_name("init", self.init, INITS)


NAME_PARTS = ("experiment", "architecture", "encoder", "init")


def run_name(run: Mapping[str, Any]) -> str:
    """The grid name of a run (a spec, a row of the runs table as a dict):
    ``lung-segmentation-unet-resnet18-imagenet``."""
    return "-".join(str(run[part]) for part in NAME_PARTS)


def check_name(kind: str, value: str, valid: Iterable[str]) -> str:
    return check_choice(kind, value, valid, GridError)


def _selected(kind: str, chosen: Iterable[str] | None, valid: Iterable[str]) -> list[str]:
    valid = list(valid)
    if not chosen:
        return valid
    chosen = [check_name(kind, c, valid) for c in chosen]
    return [v for v in valid if v in chosen]


def expand(
    experiments: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
    encoders: Iterable[str] | None = None,
    families: Iterable[str] | None = None,
    inits: Iterable[str] | None = None,
) -> list[RunSpec]:
    """Expand a selection of the grid into run specs (empty filter = everything).

    Encoders and families combine as a union: ``--family vgg --encoder resnet18``
    selects the three VGGs and resnet18.
    """
    exps = _selected("experiment", experiments, EXPERIMENTS)
    archs = _selected("architecture", architectures, ARCHITECTURES)
    inits_ = _selected("init", inits, INITS)
    encs = list(encoders or [])
    fams = list(families or [])
    for e in encs:
        check_name("encoder", e, ENCODERS)
    for f in fams:
        check_name("family", f, FAMILIES)
    if encs or fams:
        chosen_encoders = [e for e, f in ENCODERS.items() if e in encs or f in fams]
    else:
        chosen_encoders = list(ENCODERS)
    return [
        RunSpec(experiment=x, architecture=a, encoder=e, init=i)
        for x in exps
        for a in archs
        for e in chosen_encoders
        for i in inits_
    ]
