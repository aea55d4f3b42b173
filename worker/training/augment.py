"""Training augmentation applied to whole batches on the model's device.

The paper: horizontal flip p=0.5, vertical flip p=0.5, rotation uniform in
[-180, 180] degrees, scale uniform in [0.5, 1.5], zero padding; drawn fresh for
every sample of every epoch. One affine matrix per sample, one grid_sample for
the batch: no per-sample Python, so it is not the bottleneck on a GPU.

``mode="authors-code"`` follows the authors' code instead: nearest-neighbour
for the image too, and padding with HU 0 (water), i.e. the normalised value
``(0 + 500) / 500 = 1`` for experiments whose input is not lung-masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from db.errors import check_choice
from db.grid import EXPERIMENT_SPECS
from db.protocol import AUGMENT_MODES
from worker.data.preprocess import normalise_hu


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.5
    rotation_degrees: float = 180.0
    scale: tuple[float, float] = (0.5, 1.5)
    image_mode: str = "bilinear"
    pad_value: float = 0.0  # in normalised input units


def random_affine(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices for F.affine_grid, drawn on the CPU from ``generator``
    so the random stream is identical on every device."""
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    angle = (u[:, 0] * 2 - 1) * math.radians(cfg.rotation_degrees)
    lo, hi = cfg.scale
    scale = lo + u[:, 1] * (hi - lo)
    fx = torch.where(u[:, 2] < cfg.hflip, -1.0, 1.0)
    fy = torch.where(u[:, 3] < cfg.vflip, -1.0, 1.0)
    # output->input mapping: undo the zoom (1/scale), rotate, then flip
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos * fx
    theta[:, 0, 1] = -sin * fx
    theta[:, 1, 0] = sin * fy
    theta[:, 1, 1] = cos * fy
    return theta.float()


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    cfg: AugmentConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment (N, 1, H, W) images and binary masks with the same random affine."""
    cfg = cfg or AugmentConfig()
    theta = random_affine(images.shape[0], cfg, generator)
    return apply_affine(images, masks, theta, cfg)


def apply_affine(
    images: torch.Tensor,
    masks: torch.Tensor,
    theta: torch.Tensor,
    cfg: AugmentConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp (N, 1, H, W) images and binary masks with given (N, 2, 3) matrices.

    Training draws a whole epoch's matrices at once (one host-to-device copy per
    epoch instead of one per step, which would stall a GPU); same numbers."""
    cfg = cfg or AugmentConfig()
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.dtype)
    shifted = images - cfg.pad_value if cfg.pad_value else images
    out = F.grid_sample(
        shifted, grid, mode=cfg.image_mode, padding_mode="zeros", align_corners=False
    )
    if cfg.pad_value:
        out = out + cfg.pad_value
    out_mask = F.grid_sample(
        masks.to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out, out_mask


def config_for(experiment: str, compat: str = "paper") -> AugmentConfig:
    """Paper text (default) or the authors' code behaviour."""
    check_choice("augmentation mode", compat, AUGMENT_MODES)
    if compat == "paper":
        return AugmentConfig()
    # the authors pad with water (HU 0) before normalising; lung-masked inputs (lesion B)
    # are 0 outside the lungs, so they pad with 0
    masked = EXPERIMENT_SPECS[experiment].lung_masked_input
    pad = 0.0 if masked else float(normalise_hu(0.0))
    return AugmentConfig(image_mode="nearest", pad_value=pad)
