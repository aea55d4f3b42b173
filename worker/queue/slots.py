"""How many runs a worker trains at once on its device (`segbench worker --slots`).

A slot is one pool process training one run. On the CPU the runs share its cores, so
`auto` is one slot. On a GPU several runs at once fill what one run leaves idle (the
team measured 6 processes of Unet-resnet18 on one H200 at 1.65x the throughput of
one at a time), but only as many as its memory holds: `auto` takes the peak memory
of the largest cell measured on that GPU model (a cell table written by
`bench/gpu_session.sh`, named by SEGBENCH_CELL_TABLE), adds each process's CUDA
context, and fits as many as 80 % of the GPU's memory allows, at most 8. Without a
measured table it stays at one slot: a guess could run a sweep out of memory hours
in. `--slots K` chooses K anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from db.errors import SegbenchError

MAX_SLOTS = 8
USABLE_FRACTION = 0.8  # of the GPU's memory: the allocator's fragmentation, cuDNN workspaces
CONTEXT_MIB = 600  # a process's CUDA context and kernels, beside what its tensors take


class SlotsError(SegbenchError, ValueError):
    """A --slots value or cell table that cannot be used."""


def table_column(table: str | Path, column: str) -> dict[str, float]:
    """One measured column of a cell table, by cell ("architecture/encoder")."""
    try:
        cells = json.loads(Path(table).read_text())["cells"]
        return {k: float(v[column]) for k, v in cells.items() if v.get(column)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise SlotsError(
            f"The cell table {table} cannot be read ({error}); write it with "
            "bench/gpu_session.sh or unset SEGBENCH_CELL_TABLE."
        ) from None


def step_seconds(table: str | Path) -> dict[tuple[str, str], float]:
    """Seconds per training step of each measured (architecture, encoder) cell."""
    measured = table_column(table, "eager_step_s")
    return {tuple(cell.split("/", 1)): s for cell, s in measured.items()}  # type: ignore[misc]


def largest_cell_mib(table: Path) -> tuple[float, str] | None:
    """(peak MiB, cell) of the largest cell in a cell table, None without memory rows."""
    measured = table_column(table, "memory_mib")
    if not measured:
        return None
    cell = max(measured, key=measured.get)
    return measured[cell], cell


def choose_slots(
    requested: str, *, device: str, gpu_memory_mib: int | None, table: str | Path | None
) -> tuple[int, str]:
    """(slots, the reason in a few words) for `--slots requested` on `device`."""
    text = str(requested).strip()
    if text.isdigit() and int(text) >= 1:
        return int(text), f"--slots {int(text)}"
    if text != "auto":
        raise SlotsError(f"--slots takes auto or a whole number from 1, got {requested!r}.")
    if device == "cpu":
        return 1, "one on the CPU (its cores train one run)"
    largest = largest_cell_mib(Path(table)) if table else None
    if largest is None or not gpu_memory_mib:
        return 1, "one per GPU: no measured cell table (SEGBENCH_CELL_TABLE); --slots K to choose"
    mib, cell = largest
    fits = int(USABLE_FRACTION * gpu_memory_mib // (mib + CONTEXT_MIB))
    slots = max(1, min(MAX_SLOTS, fits))
    return slots, (
        f"{slots} on this GPU: the largest measured cell ({cell}) peaks at {mib:,.0f} MiB, "
        f"+{CONTEXT_MIB} MiB of CUDA context each, in {USABLE_FRACTION:.0%} of "
        f"{gpu_memory_mib:,} MiB"
    )
