"""Where runs trained, and the one sentence that says so when runs of several
environments meet in one table or test.

A run's environment (worker.training.device.DevicePolicy.environment: device model,
thread count, torch version, effective math mode, kernel switches) is stored with it,
keyed by ``environment_key``. The protocol fixes what a run computes; the environment
can still move its last digits (a thread count moved CPU Dice by 0.05 points with one
seed). So segbench never pools runs of different environments silently: over seeds it
pools only within one environment, and the leaderboard, Table 2, the report and
`segbench compare` say when the runs they show come from several.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

UNRECORDED = "unrecorded"  # runs trained before environments were recorded


def describe(environment: Mapping[str, Any] | None) -> str:
    """An environment in a few words: "NVIDIA H200, tf32, cuDNN benchmark, torch 2.11"."""
    if not environment:
        return "environment not recorded"
    env = dict(environment)
    words = [env.get("device_model") or env.get("device", "?")]
    if env.get("device") == "cpu" and env.get("threads") is not None:
        words.append(f"{env['threads']} threads")
    words.append(env.get("math", "?"))
    if env.get("deterministic"):
        words.append("deterministic")
    if env.get("cudnn_benchmark"):
        words.append("cuDNN benchmark")
    if env.get("cuda_graphs"):
        words.append("CUDA graphs")
    words.append(f"torch {env.get('torch', '?')}")
    if env.get("earlier"):
        words.append(f"resumed after {len(env['earlier'])} other environment(s)")
    return ", ".join(str(w) for w in words)


def key_of(value: object) -> str:
    """A run's environment key, UNRECORDED for None (or pandas' NaN) or an empty one."""
    return value if isinstance(value, str) and value else UNRECORDED


def note(
    keys: Iterable[str | None], environments: Mapping[str, Mapping] | None = None
) -> str | None:
    """One sentence when `keys` (runs' environment keys) name more than one environment,
    else None. `environments`: key -> environment, to describe each."""
    distinct = sorted({key_of(k) for k in keys})
    if len(distinct) < 2:
        return None
    named = "; ".join(
        f"{k}: {describe((environments or {}).get(k))}" if k != UNRECORDED else f"{k}"
        for k in distinct
    )
    return (
        f"These runs trained in {len(distinct)} environments ({named}); the same protocol "
        "and seed can differ in the last digits between them, so they are shown apart, "
        "never pooled over seeds."
    )
