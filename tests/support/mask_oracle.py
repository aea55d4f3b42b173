"""A stand-in model for evaluation tests: it predicts given masks exactly."""

from __future__ import annotations

import numpy as np
import torch


class MaskOracle(torch.nn.Module):
    """Outputs, for each test image it is given, the mask stored for that image (looked
    up by the image's bytes), as a probability map (N, 1, H, W)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        super().__init__()
        pairs = zip(images, masks, strict=True)
        self.masks = {img.tobytes(): m.astype(np.float32) for img, m in pairs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found = [self.masks[img.tobytes()] for img in x[:, 0].cpu().numpy()]
        return torch.from_numpy(np.stack(found))[:, None]
