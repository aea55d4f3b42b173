"""Per-slice confusion counts and every metric computed from them.

The ratios are written once here (``dice_from_counts``, ``sensitivity_from_counts``,
``specificity_from_counts``; numpy, vectorised, a plain float for scalars) and
``COUNT_FORMULAS`` maps each count metric of the registry (db.metrics) to its formula;
per-slice metrics, their means over slices, the pooled Dice, per-volume 3-D Dice and
the statistics of worker.results all call them.

Three modes:
- ``standard`` (default): sensitivity TP/(TP+FN), specificity TN/(TN+FP),
  Dice 2TP/(2TP+FP+FN); a 0/0 ratio counts as 1.
- ``authors-2020``: what the authors' 2020 code computed. It swapped its FP and FN
  variables, so its "all metrics = 1 when TP+FP = 0" rule fires when the GROUND
  TRUTH is empty, its "sensitivity" is precision TP/(TP+FP) and its "specificity"
  is the negative predictive value TN/(TN+FN); eps = 1e-6 in every denominator,
  as in that code (db.protocol.METRIC_EPS). A count metric the 2020 code did not
  compute takes its standard formula with that eps and that empty-truth rule.
  Only for comparing with the paper's Table 2.
- ``paper-text``: the paper's text as written: the standard ratios with eps = 1e-5 in
  every denominator, and "when TP+FP = 0 all metrics are set to 1", i.e. every metric
  is 1 on a slice where nothing is predicted, whatever the ground truth (so a missed
  lesion scores a perfect Dice: the reason it is not segbench's default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from db import metrics as registry
from db.errors import check_choice
from db.protocol import METRIC_EPS, METRIC_MODES, TestResult


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5):
    """TP, FP, FN, TN per slice for (N, 1, H, W) or (N, H, W) probabilities and masks.

    Returns an (N, 4) int64 tensor computed in one pass on the tensors' device.
    """
    p = (pred > threshold).flatten(1)
    t = (target > 0.5).flatten(1)
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=1).to(torch.int64)


def _out(x: np.ndarray) -> Any:
    return float(x) if np.ndim(x) == 0 else x


def ratio(num, den, eps: float = 0.0):
    """num / den as float64; with eps = 0 a 0/0 ratio counts as 1, else num / (den + eps).
    Arrays element-wise (same shape out), scalars as a float."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    if eps:
        return _out(n / (d + eps))
    out = np.ones(np.broadcast(n, d).shape)
    np.divide(n, d, out=out, where=d > 0)
    return _out(out)


def dice_from_counts(tp, fp, fn, eps: float = 0.0):
    """Dice 2TP / (2TP + FP + FN) as a fraction; 0/0 = 1 (both masks empty)."""
    tp = np.asarray(tp, dtype=np.float64)
    return ratio(2 * tp, 2 * tp + np.asarray(fp) + np.asarray(fn), eps)


def sensitivity_from_counts(tp, fn, eps: float = 0.0):
    """Sensitivity TP / (TP + FN) as a fraction; 0/0 = 1 (nothing to find)."""
    return ratio(tp, np.asarray(tp, dtype=np.float64) + np.asarray(fn), eps)


def specificity_from_counts(tn, fp, eps: float = 0.0):
    """Specificity TN / (TN + FP) as a fraction; 0/0 = 1."""
    return ratio(tn, np.asarray(tn, dtype=np.float64) + np.asarray(fp), eps)


Formula = Callable[..., Any]  # (tp, fp, fn, tn, eps) -> fraction(s)

# The count metrics of db.metrics (from_counts=True), standard definitions.
COUNT_FORMULAS: dict[str, Formula] = {
    "sensitivity": lambda tp, fp, fn, tn, eps: sensitivity_from_counts(tp, fn, eps),
    "specificity": lambda tp, fp, fn, tn, eps: specificity_from_counts(tn, fp, eps),
    "dice": lambda tp, fp, fn, tn, eps: dice_from_counts(tp, fp, fn, eps),
}
# What the authors' 2020 code computed under the same names (its FP and FN swapped).
AUTHORS_2020_FORMULAS: dict[str, Formula] = {
    "sensitivity": lambda tp, fp, fn, tn, eps: ratio(tp, tp + fp, eps),  # precision
    "specificity": lambda tp, fp, fn, tn, eps: ratio(tn, tn + fn, eps),  # NPV
}


def _as_counts(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64).reshape(-1, 4)


def slice_metrics(counts: np.ndarray, mode: str = "standard") -> dict[str, np.ndarray]:
    """Every count metric of the registry per slice (fractions in [0, 1]).

    counts: (N, 4) array of TP, FP, FN, TN.
    """
    check_choice("metric mode", mode, METRIC_MODES)
    tp, fp, fn, tn = _as_counts(counts).T
    eps = METRIC_EPS[mode]
    out = {}
    for name in registry.names(from_counts=True):
        formula = COUNT_FORMULAS[name]
        if mode == "authors-2020":
            formula = AUTHORS_2020_FORMULAS.get(name, formula)
        out[name] = np.asarray(formula(tp, fp, fn, tn, eps), dtype=np.float64).reshape(-1)
    if mode == "authors-2020":
        empty_truth = (tp + fn) == 0
        out = {k: np.where(empty_truth, 1.0, v) for k, v in out.items()}
    elif mode == "paper-text":
        empty_prediction = (tp + fp) == 0  # "when TP+FP=0 all metrics are set to 1"
        out = {k: np.where(empty_prediction, 1.0, v) for k, v in out.items()}
    return out


def summarize(counts: np.ndarray, mode: str = "standard") -> dict[str, float]:
    """Means over slices in percent of every count metric, Dice std (ddof=0) and the
    Dice of the pooled counts; NaN means for an empty test set."""
    m = slice_metrics(counts, mode)
    c = _as_counts(counts)
    tp, fp, fn, _ = c.sum(0)
    out = {k: float(100 * v.mean()) if len(c) else float("nan") for k, v in m.items()}
    out["dice_std"] = float(100 * m["dice"].std()) if len(c) else float("nan")
    out["pooled_dice"] = float(100 * dice_from_counts(tp, fp, fn))
    return out


_RESULT_FIELDS = frozenset(f.name for f in fields(TestResult))


def result_fields(summary: dict[str, float]) -> dict[str, Any]:
    """A summary as TestResult keyword arguments: the metrics TestResult has a field
    for, and every other one in ``extra`` (stored without a schema change)."""
    own = {k: v for k, v in summary.items() if k in _RESULT_FIELDS}
    return {**own, "extra": {k: v for k, v in summary.items() if k not in _RESULT_FIELDS}}
