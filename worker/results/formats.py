"""How segbench writes a statistic as text: p-values, intervals, numbers. One rule each,
used by the report (Markdown, LaTeX), `segbench compare` and the dashboard."""

from __future__ import annotations

import math
from collections.abc import Sequence

MISSING = "–"
SMALLEST_P = 1e-4  # below it a p-value is written "< 1e-4"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, decimals: int = 2) -> str:
    """``value`` with ``decimals`` decimals, or an en dash where there is none."""
    return MISSING if _missing(value) else f"{value:.{decimals}f}"


def interval(pair: Sequence[float | None] | None, decimals: int = 2) -> str:
    """ "[low, high]" with ``decimals`` decimals, or an en dash."""
    if not pair or _missing(pair[0]) or _missing(pair[1]):
        return MISSING
    return f"[{number(pair[0], decimals)}, {number(pair[1], decimals)}]"


def p_value(p: float | None) -> str:
    """A p-value with 3 significant digits, "< 1e-4" below 1e-4 (where the
    approximations behind it stop meaning much), an en dash where there is none."""
    if _missing(p):
        return MISSING
    if p < SMALLEST_P:
        return "< 1e-4"
    return f"{p:.3g}"


def bootstrap_p(p: float | None, resamples: int, *, bounded: bool = False) -> str:
    """A bootstrap p-value: 0 means no resample crossed 0, i.e. p < 1/B, and is written
    so; ``bounded``: the value is an upper bound (a Holm adjustment of such a p)."""
    if _missing(p):
        return MISSING
    if p == 0:
        return f"< 1/{resamples}"
    text = p_value(p)
    return f"≤ {text}" if bounded and not text.startswith("<") else text
