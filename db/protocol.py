"""The training/evaluation protocol of a run, and the records a run produces.

These dataclasses are the contract between training (worker.training.trainer), the
database (db.jobs) and the dashboard: plain data, no torch import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from db.errors import InvalidInput, check_choice

LOSSES = ("soft-dice", "soft-dice-per-image", "smp-legacy-dice", "authors-2020-dice")
# Names stored sweeps may still hold -> the loss they meant.
LOSS_ALIASES = {"authors-dice": "smp-legacy-dice"}
METRIC_MODES = ("standard", "authors-2020", "paper-text")
# The eps in every ratio of a metric mode: standard ratios are exact (0/0 counts as
# 1); the authors' 2020 code added 1e-6 to every denominator, the paper's text 1e-5.
METRIC_EPS = {"standard": 0.0, "authors-2020": 1e-6, "paper-text": 1e-5}
AUGMENT_MODES = ("paper", "authors-code")
# Of the training step; validation and test always run in IEEE fp32. fp32 is IEEE fp32
# (TF32 off, as on the paper's Turing GPU), tf32 lets a GPU's tensor cores round the
# inputs of convolutions and matmuls to TF32, bf16 autocasts the forward pass.
PRECISIONS = ("fp32", "tf32", "bf16")
# How a run's seed becomes its random streams (Protocol.stream_seed).
SEED_STREAMS = ("per-purpose", "shared")
TEST_RESIZES = ("standard", "pil-antialias")
STREAM_PURPOSES = ("init", "shuffle", "augment")
# A stored protocol without a field ran as this (Protocol.from_dict).
LEGACY_VALUES = {"seed_streams": "shared"}
# Not part of Protocol.hash(): runs that differ only in these share a protocol.
PER_RUN_FIELDS = ("seed",)
# Surface of the boundary metrics (NSD, HD95): area-weighted marching-cubes surfels
# (DeepMind's surface-distance) or border voxels weighing one each (MONAI, medpy).
BOUNDARY_MODES = ("surface-area", "border-voxel")
MAX_NSD_TOLERANCE_MM = 1000.0


# Upper bounds that no real protocol reaches and that keep a typo from allocating
# terabytes or overflowing a database integer.
LIMITS = {"epochs": 100_000, "image_size": 2048, "batch_size": 1024}


class ProtocolError(InvalidInput):
    """A protocol setting outside its accepted values."""


def _field(default: Any, label: str, help: str, choices: tuple[str, ...] | None = None, **extra):
    """A protocol field with what every surface shows of it (ProtocolField)."""
    return field(
        default=default, metadata={"label": label, "help": help, "choices": choices, **extra}
    )


@dataclass(frozen=True)
class Protocol:
    """Hyperparameters shared by every run of a sweep (paper defaults).

    Each field declares its label, one-sentence help and choices once (PROTOCOL_FIELDS);
    the `segbench submit` / `train` options, the Launch page's inputs and protocol_line
    are made from them."""

    epochs: int = _field(
        200,
        "Epochs",
        "Training epochs (paper text: 200; authors' code: 100).",
        short="{} epochs",
    )
    image_size: int = _field(
        512,
        "Image size (px)",
        "Slice size in pixels, a multiple of 32 (paper: 512).",
        short="{} px",
    )
    batch_size: int = _field(
        2,
        "Batch size",
        "Training batch size (paper: 2).",
        short="batch {}",
    )
    lr: float = _field(
        1e-3,
        "Learning rate",
        "Adam learning rate (paper: 1e-3).",
        short="lr {:g}",
    )
    loss: str = _field(
        "soft-dice",
        "Loss",
        "soft-dice (paper text, batch sums), soft-dice-per-image, smp-legacy-dice (authors' "
        "2021 code) or authors-2020-dice (authors' 2020 code).",
        LOSSES,
        short="loss {}",
    )
    metric_mode: str = _field(
        "standard",
        "Metric mode",
        "standard (0/0 counts as 1), paper-text (the text's rule: every metric 1 where "
        "nothing is predicted, eps 1e-5) or authors-2020 (the 2020 code's swapped rule, "
        "eps 1e-6).",
        METRIC_MODES,
        short="metrics {}",
    )
    seed: int = _field(
        0,
        "Seed",
        "Seed of a run (per run: not part of the protocol hash).",
        short="seed {}",
    )
    augment: bool = _field(
        True,
        "Augmentation",
        "Augment the training slices every epoch.",
        short="augment {}",
    )
    augment_mode: str = _field(
        "paper",
        "Augmentation mode",
        "paper (bilinear, zero padding) or authors-code (nearest, water padding).",
        AUGMENT_MODES,
        short="augment mode {}",
    )
    train_precision: str = _field(
        "fp32",
        "Training precision",
        "Precision of the training step: fp32 (IEEE, as the paper), tf32 (TF32 "
        "convolutions and matmuls on GPUs) or bf16 (autocast); tf32 and bf16 change the "
        "numbers. Validation and test always run in IEEE fp32.",
        PRECISIONS,
        short="{} training",
        option_aliases=("--precision",),
    )
    test_resize: str = _field(
        "standard",
        "Test resize",
        "standard (bilinear image, nearest mask) or pil-antialias (the authors' PIL code).",
        TEST_RESIZES,
        short="test resize {}",
    )
    deterministic: bool = _field(
        False,
        "Deterministic",
        "Ask torch for deterministic algorithms (cuDNN benchmark off); ops without one are "
        "named on the run (docs/protocol.md).",
        short="deterministic {}",
    )
    seed_streams: str = _field(
        "per-purpose",
        "Seed streams",
        "per-purpose (initialisation, shuffle and augmentation each from their own hash "
        "of the seed) or shared (seed, seed, seed + 1, as segbench before 0.2).",
        SEED_STREAMS,
        short="seed streams {}",
    )
    nsd_tolerance_mm: float = _field(
        2.0,
        "NSD tolerance (mm)",
        "Tolerance of the normalised surface Dice, in mm (default 2).",
        short="NSD tolerance {:g} mm",
    )
    boundary_mode: str = _field(
        "surface-area",
        "Boundary mode",
        "Surfaces of NSD and HD95: surface-area (marching cubes) or border-voxel.",
        BOUNDARY_MODES,
        short="boundary {}",
    )

    def __post_init__(self) -> None:
        if self.loss in LOSS_ALIASES:  # a deprecated name of a stored sweep
            object.__setattr__(self, "loss", LOSS_ALIASES[self.loss])
        check_choice("loss", self.loss, LOSSES, ProtocolError)
        check_choice("training precision", self.train_precision, PRECISIONS, ProtocolError)
        check_choice("test resize", self.test_resize, TEST_RESIZES, ProtocolError)
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**31
        ):
            raise ProtocolError(
                f"seed must be a whole number from 0 to {2**31 - 1}, got {self.seed}."
            )
        check_choice("boundary mode", self.boundary_mode, BOUNDARY_MODES, ProtocolError)
        check_choice("seed streams", self.seed_streams, SEED_STREAMS, ProtocolError)
        if not isinstance(self.deterministic, bool):
            raise ProtocolError(f"deterministic must be true or false, got {self.deterministic!r}.")
        tol = self.nsd_tolerance_mm
        if (
            isinstance(tol, bool)
            or not isinstance(tol, int | float)
            or not 0 < tol <= MAX_NSD_TOLERANCE_MM
        ):
            raise ProtocolError(
                f"NSD tolerance must be a number of mm above 0 and at most "
                f"{MAX_NSD_TOLERANCE_MM:g}, got {tol!r}."
            )
        object.__setattr__(self, "nsd_tolerance_mm", float(tol))
        check_choice("metric mode", self.metric_mode, METRIC_MODES, ProtocolError)
        check_choice("augmentation mode", self.augment_mode, AUGMENT_MODES, ProtocolError)
        for name, most in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ProtocolError(f"{name} must be a whole number from 1 to {most}, got {value}.")
        if self.image_size % 32:
            raise ProtocolError(
                f"image size must be a multiple of 32 (encoder depth 5), got {self.image_size}."
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Protocol:
        """A stored protocol: a field it lacks takes the value that protocol had
        before the field existed (LEGACY_VALUES), else the field's default."""
        names = {f.name for f in fields(cls)}
        stored = {**LEGACY_VALUES, **d}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def stream_seed(self, purpose: str) -> int:
        """The seed of one of a run's random streams: ``init`` (the global generators:
        initialisation, dropout), ``shuffle`` or ``augment``.

        per-purpose: the first 8 bytes of SHA-256("segbench-stream:<seed>:<purpose>"), so
        no stream of seed s is a stream of another seed; shared: seed, seed, seed + 1
        (then seed s's augmentation stream was seed s + 1's shuffle stream)."""
        check_choice("random stream", purpose, STREAM_PURPOSES, ProtocolError)
        if self.seed_streams == "shared":
            return self.seed + 1 if purpose == "augment" else self.seed
        digest = hashlib.sha256(f"segbench-stream:{self.seed}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1  # below 2**63

    @property
    def metric_eps(self) -> float:
        return METRIC_EPS[self.metric_mode]

    def hash(self) -> str:
        """Short hash of everything a sweep shares that changes a run's numbers: every
        field except the per-run seed (docs/protocol.md, "Protocol hash").

        A hash stored before a field existed is never recomputed; a protocol dict
        without a newer field loads with that field's default (fp32, standard resize)."""
        shared = {k: v for k, v in self.to_dict().items() if k not in PER_RUN_FIELDS}
        blob = json.dumps(shared, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def shared_dict(self) -> dict:
        """The fields of a sweep's protocol (all but the per-run seed)."""
        return {k: v for k, v in self.to_dict().items() if k not in PER_RUN_FIELDS}


@dataclass(frozen=True)
class ProtocolField:
    """One protocol field as every surface shows it: the command-line option
    (``--`` + the name with dashes), the Launch page's label, the help sentence."""

    name: str
    label: str
    help: str
    choices: tuple[str, ...] | None
    type: type
    default: Any
    per_run: bool
    short: str  # as protocol_line shows a value: "{} epochs"
    option_aliases: tuple[str, ...] = ()

    def show(self, value: Any) -> str:
        """The value as protocol_line shows it ("200 epochs", "augment on")."""
        if isinstance(value, bool):
            value = "on" if value else "off"
        return self.short.format(value)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}

PROTOCOL_FIELDS: tuple[ProtocolField, ...] = tuple(
    ProtocolField(
        name=f.name,
        label=f.metadata["label"],
        help=f.metadata["help"],
        choices=f.metadata["choices"],
        type=_TYPES[f.type] if isinstance(f.type, str) else f.type,
        default=f.default,
        per_run=f.name in PER_RUN_FIELDS,
        short=f.metadata["short"],
        option_aliases=f.metadata.get("option_aliases", ()),
    )
    for f in fields(Protocol)
)


def protocol_field(name: str) -> ProtocolField:
    """The declaration of one protocol field (KeyError for an unknown name)."""
    return {f.name: f for f in PROTOCOL_FIELDS}[name]


def environment_key(environment: dict) -> str:
    """A short hash of a run's environment (worker.training.device.DevicePolicy): runs
    are pooled only with runs of an equal key."""
    blob = json.dumps(environment, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    train_seconds: float
    val_seconds: float
    is_best: bool


@dataclass
class SliceCounts:
    index: int  # position in the test set (0..N-1)
    volume: int  # 0-based test volume
    slice: int  # slice index inside its volume
    tp: int
    fp: int
    fn: int
    tn: int


@dataclass
class VolumeMetrics:
    """Test metrics of one test volume (its test slices stacked in slice order)."""

    volume: int  # 0-based test volume
    slices: int  # test slices of the volume
    dice: float  # 3-D Dice, percent (100 when both masks are empty)
    nsd: float | None  # percent, at the protocol's tolerance; None: not computed
    # mm; the volume's diagonal when exactly one mask is empty; None: not computed
    hd95: float | None


@dataclass
class TestResult:
    slices: list[SliceCounts]
    sensitivity: float  # mean over slices, percent
    specificity: float
    dice: float
    dice_std: float
    pooled_dice: float  # Dice of the summed counts, percent
    metric_mode: str
    seconds: float = 0.0
    volumes: list[VolumeMetrics] = field(default_factory=list)
    nsd: float | None = None  # mean over volumes, percent
    hd95: float | None = None  # mean over volumes, mm
    nsd_volumes: int | None = None  # test volumes the NSD mean covers
    hd95_volumes: int | None = None  # test volumes the HD95 mean covers
    # metrics of db.metrics without a field here (a metric added later), percent
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """Everything a finished run hands to its recorder."""

    test: TestResult
    best_epoch: int
    best_val_loss: float
    parameters_m: float
    train_seconds_per_epoch: float
    val_seconds_per_epoch: float
    checkpoint_dir: str  # best model: safetensors + config.json
    checkpoint_sha256: str
    gallery: dict[int, bytes] = field(default_factory=dict)  # test index -> packed bits
    gallery_shape: tuple[int, int] = (0, 0)
    first_layer_before: bytes | None = None  # float32 raw, shape first_layer_shape
    first_layer_after: bytes | None = None
    first_layer_shape: tuple[int, ...] = ()
    # the environment the run really trained in (worker.training.device), when known
    environment: dict | None = None
