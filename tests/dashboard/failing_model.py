"""A user model that fails on purpose while it trains, for the tests of a failed run's
page: one convolution, and a RuntimeError on its FAIL_AT-th training step (after the
first epoch on the tests' small datasets), so the run stores a real traceback and log
lines of the epochs it finished."""

import torch
from torch import nn

FAIL_AT = 12  # training steps: 16 training slices at batch 2 make 8 steps an epoch


class FailingNet(nn.Module):
    segbench_output = "logits"

    def __init__(self, in_channels: int = 1, classes: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, classes, 3, padding=1)
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.steps += 1
            if self.steps >= FAIL_AT:
                raise RuntimeError(f"boom: the failing test model stops at step {self.steps}")
        return self.conv(x)


def build(in_channels: int, classes: int) -> nn.Module:
    return FailingNet(in_channels, classes)
