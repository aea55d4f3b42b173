"""Per-slice confusion counts and the paper's metrics.

Two modes:
- ``standard`` (default): sensitivity TP/(TP+FN), specificity TN/(TN+FP),
  Dice 2TP/(2TP+FP+FN); a 0/0 ratio counts as 1.
- ``authors-2020``: what the authors' 2020 code computed. It swapped its FP and FN
  variables, so its "all metrics = 1 when TP+FP = 0" rule fires when the GROUND
  TRUTH is empty, its "sensitivity" is precision TP/(TP+FP) and its "specificity"
  is the negative predictive value TN/(TN+FN); eps = 1e-6 in every denominator,
  as in that code (db.protocol.METRIC_EPS).
  Only for comparing with the paper's Table 2.
"""

from __future__ import annotations

import numpy as np
import torch

from db.errors import check_choice
from db.protocol import METRIC_EPS, METRIC_MODES


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


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.ones_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def slice_metrics(counts: np.ndarray, mode: str = "standard") -> dict[str, np.ndarray]:
    """Sensitivity, specificity and Dice per slice (fractions in [0, 1]).

    counts: (N, 4) array of TP, FP, FN, TN.
    """
    check_choice("metric mode", mode, METRIC_MODES)
    c = np.asarray(counts, dtype=np.float64).reshape(-1, 4)
    tp, fp, fn, tn = c.T
    if mode == "standard":
        return {
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        }
    eps = METRIC_EPS[mode]
    empty_truth = (tp + fn) == 0
    sens = tp / (tp + fp + eps)
    spec = tn / (tn + fn + eps)
    dice = 2 * tp / (2 * tp + fp + fn + eps)
    return {
        "sensitivity": np.where(empty_truth, 1.0, sens),
        "specificity": np.where(empty_truth, 1.0, spec),
        "dice": np.where(empty_truth, 1.0, dice),
    }


def summarize(counts: np.ndarray, mode: str = "standard") -> dict[str, float]:
    """Means over slices in percent, Dice std, and Dice of the pooled counts."""
    m = slice_metrics(counts, mode)
    c = np.asarray(counts, dtype=np.float64).reshape(-1, 4)
    tp, fp, fn, _ = c.sum(0)
    pooled = 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return {
        "sensitivity": float(100 * m["sensitivity"].mean()) if len(c) else float("nan"),
        "specificity": float(100 * m["specificity"].mean()) if len(c) else float("nan"),
        "dice": float(100 * m["dice"].mean()) if len(c) else float("nan"),
        "dice_std": float(100 * m["dice"].std()) if len(c) else float("nan"),
        "pooled_dice": float(100 * pooled),
    }
