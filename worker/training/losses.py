"""Dice losses on probabilities (the models end in a sigmoid)."""

from __future__ import annotations

import torch

from db.errors import check_choice
from db.protocol import LOSSES


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The paper's text: 1 - 2*sum(Y*P) / (sum(Y^2) + sum(P^2) + eps), over the batch."""
    pred = pred.float()
    target = target.float()
    inter = (pred * target).sum()
    return 1 - 2 * inter / ((target * target).sum() + (pred * pred).sum() + eps)


def authors_dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """The authors' code (smp's legacy DiceLoss): 1 - (2TP+1)/(2TP+FP+FN+1), no squares."""
    pred = pred.float()
    target = target.float()
    tp = (pred * target).sum()
    fp = pred.sum() - tp
    fn = target.sum() - tp
    return 1 - (2 * tp + eps) / (2 * tp + fp + fn + eps)


def get_loss(name: str):
    losses = {"soft-dice": soft_dice_loss, "authors-dice": authors_dice_loss}
    return losses[check_choice("loss", name, LOSSES)]
