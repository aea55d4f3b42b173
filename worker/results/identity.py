"""When two runs may be compared: one rule, ``comparable(a, b)``, used by `segbench
compare A B` and `segbench compare --run X --against S`.

Two runs are compared on the test slices they share, so they must have been tested
on the same thing the same way: the same experiment (the same target), the same image
size (the same resized slices), the same protocol (every setting that changes
numbers, hashed; the seed aside) and the same test data (the dataset's manifest).
More identity fields are added to ``IDENTITY`` as they appear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from db import queries
from db.protocol import PROTOCOL_FIELDS
from worker.results import environments

# (key, how a sentence names it, how a value is written)
IDENTITY: tuple[tuple[str, str, str], ...] = (
    ("experiment", "experiment", "{}"),
    ("image_size", "image size", "{} px"),
    ("protocol_hash", "protocol", "{}"),
    ("manifest_hash", "test data (manifest)", "{:.12}"),
)


def identity(run: Mapping[str, Any], protocol: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of IDENTITY of a run row (with id, experiment, protocol_hash,
    manifest_hash) whose sweep's protocol is ``protocol``, and its environment key."""
    return {
        "id": run["id"],
        "environment_key": run.get("environment_key"),
        "experiment": run["experiment"],
        "image_size": (protocol or {}).get("image_size"),
        "protocol_hash": run["protocol_hash"],
        "manifest_hash": run["manifest_hash"],
        "protocol": dict(protocol or {}),
    }


def run_identity(session: Session, run: Mapping[str, Any]) -> dict[str, Any]:
    """identity() of a row of db.queries.run_detail."""
    return identity(run, queries.sweep_row(session, sweep=run["sweep"])["protocol"])


def comparable(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """None when runs a and b (identity() dicts) may be compared, else the one sentence
    that says why not."""
    differ = [
        f"{name} ({_settings(a, b) if key == 'protocol_hash' else ''}"
        f"{shown.format(a[key])} vs {shown.format(b[key])})"
        for key, name, shown in IDENTITY
        if a[key] != b[key]
    ]
    if not differ:
        return None
    return (
        f"Runs {a['id']} and {b['id']} differ in {' and '.join(differ)}; compare only runs of "
        "the same experiment, image size, protocol and test data."
    )


def environment_note(session: Session, runs: list[Mapping[str, Any]]) -> str | None:
    """One sentence when identity() dicts of comparable runs trained in different
    environments (worker.results.environments): compared, but never silently."""
    keys = [r.get("environment_key") for r in runs]
    return environments.note(keys, queries.environments(session, keys))


def _settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """The protocol settings that differ, besides those named on their own, as
    protocol_line writes them: "2 epochs vs 3 epochs, " ("" without the protocols)."""
    pa, pb = a.get("protocol") or {}, b.get("protocol") or {}
    named = {key for key, _, _ in IDENTITY}
    return "".join(
        f"{f.show(pa.get(f.name))} vs {f.show(pb.get(f.name))}, "
        for f in PROTOCOL_FIELDS
        if not f.per_run and f.name not in named and pa.get(f.name) != pb.get(f.name)
    )
