"""Named protocols: `--preset default`, `paper` and `authors-2020` (docs/protocol.md).

A preset is a set of Protocol fields; options given beside it override it
(Protocol defaults < preset < explicit option). Plain data, no torch import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from db.errors import check_choice
from db.protocol import PROTOCOL_FIELDS, Protocol, ProtocolError

_SHARED_TEXT = {
    "epochs": 200,
    "image_size": 512,
    "batch_size": 2,
    "lr": 1e-3,
    "augment": True,
    "augment_mode": "paper",
    "train_precision": "fp32",
    "test_resize": "standard",
    "deterministic": False,
    "seed_streams": "per-purpose",
}
PRESETS: dict[str, dict[str, Any]] = {
    # segbench's defaults (Protocol()): the paper's text except two documented readings,
    # the batch-summed soft Dice and the standard empty-case metrics.
    "default": {**_SHARED_TEXT, "loss": "soft-dice", "metric_mode": "standard"},
    # The paper's text as written: the soft Dice per image, "all metrics 1 when TP+FP=0".
    "paper": {**_SHARED_TEXT, "loss": "soft-dice-per-image", "metric_mode": "paper-text"},
    # Everything as the authors' 2020 code (the one that trained the paper's models).
    "authors-2020": {
        "epochs": 100,
        "image_size": 512,
        "batch_size": 2,
        "lr": 1e-3,
        "loss": "authors-2020-dice",
        "metric_mode": "authors-2020",
        "augment": True,
        "augment_mode": "authors-code",
        "train_precision": "fp32",
        "test_resize": "pil-antialias",
        "deterministic": False,
        "seed_streams": "per-purpose",
    },
}
# One sentence per preset, for --preset's help, the Launch page and the docs.
PRESET_DESCRIPTIONS: dict[str, str] = {
    "default": "segbench's default: the paper's text, except that the soft Dice sums over "
    "the batch and a 0/0 metric counts as 1 (standard), where the text writes the loss per "
    "image and sets every metric to 1 on a slice with no prediction",
    "paper": "the paper's text as written, both of those points included (soft-dice-per-image "
    "loss, paper-text metrics)",
    "authors-2020": "everything as the authors' 2020 code did it (the code that trained the "
    "paper's models)",
}
PRESET_NAMES = tuple(PRESETS)


def resolve(preset: str | None = None, **options: Any) -> Protocol:
    """The protocol of `preset` (None: Protocol's defaults, the paper's text) with every
    option that is not None put over it."""
    fields: dict[str, Any] = {}
    if preset is not None:
        fields.update(PRESETS[check_choice("preset", preset, PRESETS, ProtocolError)])
    fields.update({k: v for k, v in options.items() if v is not None})
    unknown = sorted(set(fields) - set(Protocol.__dataclass_fields__))
    if unknown:
        raise ProtocolError(f"Unknown protocol setting(s): {', '.join(unknown)}.")
    return Protocol(**fields)


def check_seeds(seeds: Iterable[int] | None) -> list[int]:
    """The seeds of a submit or of added seeds, without repeats, in the order given
    ([0] when none); each must be a whole number in the protocol's range (a bool or a
    float is refused, not rounded). The one seed rule of every surface."""
    chosen = list(dict.fromkeys(seeds or [0]))
    for s in chosen:
        Protocol(seed=s)  # the one range check
    return chosen


def matching_presets(protocol: Protocol | Mapping[str, Any]) -> list[str]:
    """The presets whose every field `protocol` has (for labels)."""
    d = protocol.to_dict() if isinstance(protocol, Protocol) else dict(protocol)
    return [n for n, p in PRESETS.items() if all(d.get(k) == v for k, v in p.items())]


def protocol_line(protocol: Protocol | Mapping[str, Any]) -> str:
    """One line naming every shared setting of a protocol (and the presets it matches),
    in the order of db.protocol.PROTOCOL_FIELDS."""
    d = protocol.to_dict() if isinstance(protocol, Protocol) else dict(protocol)
    p = Protocol.from_dict(d)
    named = matching_presets(p)
    shown = ", ".join(f.show(getattr(p, f.name)) for f in PROTOCOL_FIELDS if not f.per_run)
    return (f"preset {', '.join(named)}; " if named else "") + shown
