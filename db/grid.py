"""The paper's 600-model grid as plain data (no torch import).

4 architectures x 25 encoders x 2 weight inits x 3 experiments = 600 runs
(Bizopoulos et al., 2020). Names are the paper's / segmentation-models-pytorch's.
An empty filter selects exactly these 600; a filter may also name any architecture
and encoder of smp 0.6 (db.catalog), and `expand_all` spans the whole catalog. A run
spec says whether it is part of the paper's grid (`RunSpec.paper`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from db.catalog import (
    CUSTOM,
    CUSTOM_INIT,
    SMP_ARCHITECTURES,
    SMP_ENCODERS,
    encoder_family,
    imagenet_refusal,
    is_timm_universal,
    static_refusal,
)
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


@dataclass(frozen=True)
class Experiment:
    """What an experiment of the paper is: which mask it segments, whether its input is
    the CT multiplied by the lung mask, and the short name tables print."""

    name: str
    short: str
    label: str
    target: str  # "lungs" or "lesions": the mask a model learns to predict
    lung_masked_input: bool  # the normalised input times the lung mask (outside: 0)

    @property
    def needs(self) -> tuple[str, ...]:
        """The masks a dataset must have for this experiment."""
        return (self.target, "lungs") if self.lung_masked_input else (self.target,)


# In the paper's order.
EXPERIMENT_SPECS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("lung-segmentation", "lung", "Lung", "lungs", False),
        Experiment("lesion-segmentation-a", "lesion-a", "Lesion A", "lesions", False),
        Experiment(
            "lesion-segmentation-b", "lesion-b", "Lesion B (lung-masked input)", "lesions", True
        ),
    )
}
EXPERIMENTS: tuple[str, ...] = tuple(EXPERIMENT_SPECS)


def experiment(name: str) -> Experiment:
    """The experiment called `name` (InvalidInput naming the valid ones otherwise)."""
    return EXPERIMENT_SPECS[check_choice("experiment", name, EXPERIMENTS)]


# The names every experiment filter takes besides the full ones: the short names
# `segbench status` and narrow tables print (Experiment.short), short -> full.
EXPERIMENT_ALIASES: dict[str, str] = {e.short: e.name for e in EXPERIMENT_SPECS.values()}
SHORT_EXPERIMENT: dict[str, str] = {e.name: e.short for e in EXPERIMENT_SPECS.values()}

INITS: tuple[str, ...] = ("random", "imagenet")

# A user's own model: `module:function` or the name of a `segbench.models` entry point
MODEL_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*|[A-Za-z0-9][\w.-]*")
MAX_ENCODER_LENGTH = 64  # the runs table's encoder column


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
        if self.architecture == CUSTOM:
            return CUSTOM
        return ENCODERS.get(self.encoder) or encoder_family(self.encoder)

    @property
    def paper(self) -> bool:
        """Whether this cell is one of the paper's 600."""
        return is_paper(self.architecture, self.encoder)

    @property
    def custom(self) -> bool:
        """A user's own model (its encoder is the builder's reference)."""
        return self.architecture == CUSTOM

    @property
    def encoder_weights(self) -> str | None:
        return "imagenet" if self.init == "imagenet" else None

    @property
    def name(self) -> str:
        return run_name(asdict(self))

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "family": self.family}

    def __post_init__(self) -> None:
        check_name("experiment", self.experiment, EXPERIMENTS)
        if self.architecture == CUSTOM:
            check_model_ref(self.encoder)
            check_name("init", self.init, (CUSTOM_INIT,))
            return
        check_name("architecture", self.architecture, SMP_ARCHITECTURES)
        check_encoder(self.encoder)
        check_name("init", self.init, INITS)
        refusal = static_refusal(self.architecture, self.encoder)
        if refusal:
            raise GridError(refusal)


def is_paper(architecture: str, encoder: str) -> bool:
    return architecture in ARCHITECTURES and encoder in ENCODERS


# How tables mark a model: the paper's cells bare, other smp cells and user models
# with a sign of their own (explained under every table that shows them).
MARKERS = {"paper": "", "smp": "+", "custom": "◆"}


def grid_kind(architecture: str, encoder: str) -> str:
    """ "paper" (one of the 600's cells), "smp" (beyond the paper) or "custom"."""
    if architecture == CUSTOM:
        return "custom"
    return "paper" if is_paper(architecture, encoder) else "smp"


def check_encoder(encoder: str) -> str:
    """An smp encoder or a timm universal one (`tu-<timm model name>`)."""
    if is_timm_universal(encoder):
        return encoder
    return check_name("encoder", encoder, SMP_ENCODERS)


def check_model_ref(ref: str) -> str:
    """A user model's reference: `module:function` or an entry point name."""
    if not isinstance(ref, str) or not MODEL_REF.fullmatch(ref):
        raise GridError(
            f"Model {ascii(ref)[:80]} is not usable; expected module:function "
            "(mylab.models:build) or the name of a `segbench.models` entry point."
        )
    if len(ref) > MAX_ENCODER_LENGTH:
        raise GridError(
            f"Model reference '{ref}' is longer than {MAX_ENCODER_LENGTH} characters; "
            "register it under a shorter `segbench.models` entry point name."
        )
    return ref


def custom_specs(model: str, experiments: Iterable[str] | None = None) -> list[RunSpec]:
    """The runs of a user's own model, one per selected experiment."""
    exps = _selected("experiment", experiment_names(experiments), EXPERIMENTS)
    return [RunSpec(x, CUSTOM, check_model_ref(model), CUSTOM_INIT) for x in exps]


NAME_PARTS = ("experiment", "architecture", "encoder", "init")


def run_name(run: Mapping[str, Any]) -> str:
    """The grid name of a run (a spec, a row of the runs table as a dict):
    ``lung-segmentation-unet-resnet18-imagenet``."""
    return "-".join(str(run[part]) for part in NAME_PARTS)


def check_name(kind: str, value: str, valid: Iterable[str]) -> str:
    return check_choice(kind, value, valid, GridError)


def experiment_name(value: str) -> str:
    """The full name of an experiment given by its full name or its short one
    (EXPERIMENT_ALIASES: ``lung`` is ``lung-segmentation``); GridError otherwise."""
    full = EXPERIMENT_ALIASES.get(value, value)
    if full not in EXPERIMENTS:
        raise GridError(
            f"Unknown experiment '{value}'; expected one of: "
            + ", ".join(f"{x} ({SHORT_EXPERIMENT[x]})" for x in EXPERIMENTS)
            + "."
        )
    return full


def experiment_names(values: Iterable[str] | None) -> list[str] | None:
    """experiment_name of each value (None stays None: no filter)."""
    return None if values is None else [experiment_name(v) for v in values]


def _selected(
    kind: str,
    chosen: Iterable[str] | None,
    valid: Iterable[str],
    beyond: Iterable[str] = (),
) -> list[str]:
    """The chosen names in `valid`'s order (all of `valid` when none is chosen); a
    name of `beyond` (outside the paper's grid) may be chosen too, after them."""
    valid = list(valid)
    if not chosen:
        return valid
    everything = list(dict.fromkeys([*valid, *beyond]))
    chosen = [check_name(kind, c, everything) for c in chosen]
    return [v for v in everything if v in chosen]


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
    exps = _selected("experiment", experiment_names(experiments), EXPERIMENTS)
    archs = _selected("architecture", architectures, ARCHITECTURES, SMP_ARCHITECTURES)
    inits_ = _selected("init", inits, INITS)
    encs = list(encoders or [])
    fams = list(families or [])
    for e in encs:
        check_encoder(e)
    for f in fams:
        check_name("family", f, FAMILIES)
    if encs or fams:
        chosen_encoders = [e for e, f in ENCODERS.items() if e in encs or f in fams]
        chosen_encoders += [e for e in dict.fromkeys(encs) if e not in ENCODERS]
    else:
        chosen_encoders = list(ENCODERS)
    return [
        RunSpec(experiment=x, architecture=a, encoder=e, init=i)
        for x in exps
        for a in archs
        for e in chosen_encoders
        for i in inits_
        if _wanted(a, e, i, encs, inits)
    ]


def _wanted(arch: str, encoder: str, init: str, named_encoders, named_inits) -> bool:
    """Beyond the paper, a pair smp refuses (or an ImageNet run of an encoder without
    ImageNet weights) is left out of a selection, unless the encoder (and the init)
    was named: then RunSpec / the submit check refuse it with their sentence."""
    if is_paper(arch, encoder):
        return True
    if encoder not in (named_encoders or ()) and static_refusal(arch, encoder):
        return False
    return not (init == "imagenet" and not named_inits and imagenet_refusal(encoder))


def expand_all(
    experiments: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
    encoders: Iterable[str] | None = None,
    families: Iterable[str] | None = None,
    inits: Iterable[str] | None = None,
) -> list[RunSpec]:
    """Every run smp 0.6 can be asked for by name: its 12 architectures x its 76
    encoders x inits x experiments, less the pairs it refuses at any image size and
    ImageNet runs of encoders without ImageNet weights (timm universal encoders are
    any timm model, so they are not listed; name them with --encoder tu-<name>)."""
    from_catalog = list(SMP_ENCODERS)
    exps = _selected("experiment", experiment_names(experiments), EXPERIMENTS)
    archs = _selected("architecture", architectures, SMP_ARCHITECTURES)
    inits_ = _selected("init", inits, INITS)
    encs = [check_encoder(e) for e in encoders or []]
    fams = [check_name("family", f, dict.fromkeys(SMP_ENCODERS.values())) for f in families or []]
    if encs or fams:
        chosen = [e for e in from_catalog if e in encs or SMP_ENCODERS[e] in fams]
        chosen += [e for e in dict.fromkeys(encs) if e not in SMP_ENCODERS]
    else:
        chosen = from_catalog
    specs = []
    for x in exps:
        for a in archs:
            for e in chosen:
                if static_refusal(a, e):
                    continue
                for i in inits_:
                    if i == "imagenet" and imagenet_refusal(e):
                        continue
                    specs.append(RunSpec(experiment=x, architecture=a, encoder=e, init=i))
    return specs
