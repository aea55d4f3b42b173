"""The Launch page's protocol inputs: one input per field of db.protocol.Protocol, built
by iterating the dataclass's fields, so a field added to the protocol (and hashed into
every run's identity) is reachable from the page without touching it.

How a field is asked for (its label, choices and help) is read from FIELD_INPUTS; a
field missing there still gets an input from its type, labelled with its name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from db.presets import PRESETS
from db.protocol import (
    AUGMENT_MODES,
    BOUNDARY_MODES,
    LIMITS,
    LOSSES,
    MAX_NSD_TOLERANCE_MM,
    METRIC_MODES,
    PER_RUN_FIELDS,
    PRECISIONS,
    TEST_RESIZES,
    Protocol,
)

COLUMNS = 4
IMAGE_STEP = 32  # image sizes are multiples of 32 (encoder depth 5)


@dataclasses.dataclass(frozen=True)
class FieldInput:
    label: str
    choices: tuple[str, ...] | None = None
    help: str | None = None


FIELD_INPUTS: dict[str, FieldInput] = {
    "epochs": FieldInput("Epochs", help="Paper: 200; the authors' code: 100."),
    "image_size": FieldInput(
        "Image size (px)",
        help="Slices are resized to this size. Defaults to the chosen dataset's slice size; "
        "the paper: 512.",
    ),
    "batch_size": FieldInput("Batch size", help="Paper: 2."),
    "lr": FieldInput("Learning rate", help="Adam's learning rate; paper: 0.001."),
    "loss": FieldInput(
        "Loss",
        LOSSES,
        "soft-dice: the paper's text; authors-2020-dice: the code that trained its models.",
    ),
    "metric_mode": FieldInput(
        "Metrics",
        METRIC_MODES,
        "standard: 0/0 counts as 1; authors-2020: the authors' 2020 evaluation code.",
    ),
    "augment": FieldInput("Augment", help="Flips, rotation and scaling of training slices."),
    "augment_mode": FieldInput(
        "Augmentation",
        AUGMENT_MODES,
        "paper: bilinear, zero padding; authors-code: nearest neighbour, padding with HU 0.",
    ),
    "train_precision": FieldInput(
        "Training precision",
        PRECISIONS,
        "fp32: the paper's. bf16 speeds up GPU training and can move Dice by points; "
        "validation and test always run in fp32.",
    ),
    "test_resize": FieldInput(
        "Test resize",
        TEST_RESIZES,
        "pil-antialias: the test slices resized as the authors' PIL code did.",
    ),
    "nsd_tolerance_mm": FieldInput(
        "NSD tolerance (mm)",
        help="Surface distance up to which a boundary point counts as matched (NSD).",
    ),
    "boundary_mode": FieldInput(
        "Boundary mode",
        BOUNDARY_MODES,
        "surface-area: area-weighted surfaces (DeepMind's surface-distance); border-voxel: "
        "border voxels weigh one each (MONAI, medpy).",
    ),
}
FLOAT_LIMITS = {"lr": (1e-7, 10.0), "nsd_tolerance_mm": (0.01, MAX_NSD_TOLERANCE_MM)}


def fields() -> list[dataclasses.Field]:
    """The protocol's fields a sweep shares (all but the per-run seed)."""
    return [f for f in dataclasses.fields(Protocol) if f.name not in PER_RUN_FIELDS]


def defaults(preset: str) -> dict[str, Any]:
    """Every shared field's value under `preset` (Protocol defaults < preset)."""
    base = Protocol().to_dict() | PRESETS[preset]
    return {f.name: base[f.name] for f in fields()}


def fitting_size(native: int | None) -> int | None:
    """A dataset's slice size as an image size the models take (a multiple of 32)."""
    if not native:
        return None
    return int(min(max(IMAGE_STEP, native // IMAGE_STEP * IMAGE_STEP), LIMITS["image_size"]))


def label(name: str) -> str:
    return FIELD_INPUTS[name].label if name in FIELD_INPUTS else name.replace("_", " ")


def protocol_inputs(preset: str, *, native_size: int | None = None) -> dict[str, Any]:
    """One input per shared protocol field, starting from `preset`; returns {field:
    value}. The image size starts at the dataset's slice size (`native_size`).

    Keys carry the preset (and the dataset's size), so changing either starts the
    inputs again from the new defaults."""
    start = defaults(preset)
    size = fitting_size(native_size)
    if size is not None:
        start["image_size"] = size
    columns = st.columns(COLUMNS)
    values: dict[str, Any] = {}
    for i, field in enumerate(fields()):
        name, value = field.name, start[field.name]
        spec = FIELD_INPUTS.get(name, FieldInput(label(name)))
        key = f"launch_{name}_{preset}" + (f"_{size}" if name == "image_size" else "")
        column = columns[i % COLUMNS]
        if spec.choices is not None:
            options = list(spec.choices)
            values[name] = column.selectbox(
                spec.label, options, index=options.index(value), key=key, help=spec.help
            )
        elif isinstance(value, bool):
            values[name] = column.checkbox(spec.label, value=value, key=key, help=spec.help)
        elif isinstance(value, int):
            step = IMAGE_STEP if name == "image_size" else 1
            values[name] = int(
                column.number_input(
                    spec.label,
                    min_value=step,
                    max_value=LIMITS.get(name, 1_000_000),
                    value=value,
                    step=step,
                    key=key,
                    help=spec.help,
                )  # fmt: skip
            )
        elif isinstance(value, float):
            low, high = FLOAT_LIMITS.get(name, (0.0, 1e9))
            values[name] = float(
                column.number_input(
                    spec.label,
                    min_value=low,
                    max_value=high,
                    value=value,
                    format="%g",
                    key=key,
                    help=spec.help,
                )  # fmt: skip
            )
        else:
            values[name] = column.text_input(spec.label, str(value), key=key, help=spec.help)
    return values


def summary(protocol: Protocol) -> str:
    """Every shared field of `protocol` as `label value`, in declaration order."""
    shared = protocol.shared_dict()
    return ", ".join(f"{label(f.name).lower()} {shared[f.name]}" for f in fields())
