"""Dice losses on probabilities (the models end in a sigmoid), named after what they are.

- ``soft-dice``: the paper's text, 1 - 2ΣYŶ / (ΣY² + ΣŶ² + 1e-5), sums over the
  whole batch (how the authors' code computes one loss per batch).
- ``soft-dice-per-image``: the same formula per image (the paper writes the sums per
  image), then the batch mean.
- ``smp-legacy-dice``: the authors' 2021 code, smp's legacy DiceLoss,
  1 - (2TP + 1) / (2TP + FP + FN + 1) over the batch, no squares.
- ``authors-2020-dice``: the authors' 2020 code, which trained the paper's models:
  per image 1 - 2TP / (ΣY + ΣŶ + 1e-6), 0 for an image whose target is empty, then
  the batch mean.
"""

from __future__ import annotations

import torch

from db.errors import check_choice
from db.protocol import LOSS_ALIASES, LOSSES


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The paper's text: 1 - 2*sum(Y*P) / (sum(Y^2) + sum(P^2) + eps), over the batch."""
    pred = pred.float()
    target = target.float()
    inter = (pred * target).sum()
    return 1 - 2 * inter / ((target * target).sum() + (pred * pred).sum() + eps)


def soft_dice_per_image_loss(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """The paper's formula with its sums per image, averaged over the batch."""
    p = pred.float().flatten(1)
    t = target.float().flatten(1)
    per_image = 1 - 2 * (p * t).sum(1) / ((t * t).sum(1) + (p * p).sum(1) + eps)
    return per_image.mean()


def smp_legacy_dice_loss(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1.0
) -> torch.Tensor:
    """The authors' 2021 code (smp's legacy DiceLoss): 1 - (2TP+1)/(2TP+FP+FN+1), no squares."""
    pred = pred.float()
    target = target.float()
    tp = (pred * target).sum()
    fp = pred.sum() - tp
    fn = target.sum() - tp
    return 1 - (2 * tp + eps) / (2 * tp + fp + fn + eps)


def authors_2020_dice_loss(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """The authors' 2020 code: per image 1 - 2TP/(ΣY + ΣŶ + eps), 0 where the target
    is empty, then the mean over the batch (empty images count in the mean)."""
    p = pred.float().flatten(1)
    t = target.float().flatten(1)
    tp = (p * t).sum(1)
    target_sum = t.sum(1)
    per_image = 1 - 2 * tp / (target_sum + p.sum(1) + eps)
    per_image = torch.where(target_sum > 0, per_image, torch.zeros_like(per_image))
    return per_image.mean()


LOSS_FUNCTIONS = {
    "soft-dice": soft_dice_loss,
    "soft-dice-per-image": soft_dice_per_image_loss,
    "smp-legacy-dice": smp_legacy_dice_loss,
    "authors-2020-dice": authors_2020_dice_loss,
}


def get_loss(name: str):
    name = LOSS_ALIASES.get(name, name)
    return LOSS_FUNCTIONS[check_choice("loss", name, LOSSES)]
