"""The Launch page's protocol inputs: one input per shared field of the protocol, built
by iterating db.protocol.PROTOCOL_FIELDS (each field's label, help and choices are
declared once there), so a field added to the protocol, and hashed into every run's
identity, is reachable from the page without touching it."""

from __future__ import annotations

from typing import Any

import streamlit as st

from db.presets import PRESETS
from db.protocol import LIMITS, MAX_NSD_TOLERANCE_MM, PROTOCOL_FIELDS, Protocol, ProtocolField

COLUMNS = 4
IMAGE_STEP = 32  # image sizes are multiples of 32 (encoder depth 5)
FLOAT_LIMITS = {"lr": (1e-7, 10.0), "nsd_tolerance_mm": (0.01, MAX_NSD_TOLERANCE_MM)}


def fields() -> list[ProtocolField]:
    """The protocol's fields a sweep shares (all but the per-run seed)."""
    return [f for f in PROTOCOL_FIELDS if not f.per_run]


def defaults(preset: str) -> dict[str, Any]:
    """Every shared field's value under `preset` (Protocol defaults < preset)."""
    base = Protocol().to_dict() | PRESETS[preset]
    return {f.name: base[f.name] for f in fields()}


def fitting_size(native: int | None) -> int | None:
    """A dataset's slice size as an image size the models take (a multiple of 32)."""
    if not native:
        return None
    return int(min(max(IMAGE_STEP, native // IMAGE_STEP * IMAGE_STEP), LIMITS["image_size"]))


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
        key = f"launch_{name}_{preset}" + (f"_{size}" if name == "image_size" else "")
        common = {"label": field.label, "key": key, "help": field.help}
        column = columns[i % COLUMNS]
        if field.choices is not None:
            options = list(field.choices)
            values[name] = column.selectbox(options=options, index=options.index(value), **common)
        elif field.type is bool:
            values[name] = column.checkbox(value=value, **common)
        elif field.type is int:
            step = IMAGE_STEP if name == "image_size" else 1
            most = LIMITS.get(name, 1_000_000)
            values[name] = int(
                column.number_input(
                    min_value=step, max_value=most, value=value, step=step, **common
                )
            )
        elif field.type is float:
            low, high = FLOAT_LIMITS.get(name, (0.0, 1e9))
            values[name] = float(
                column.number_input(
                    min_value=low, max_value=high, value=float(value), format="%g", **common
                )
            )
        else:
            values[name] = column.text_input(value=str(value), **common)
    return values
