"""The parameter table behind `segbench doctor`'s disk estimate matches smp."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp

from db.grid import ARCHITECTURES, ENCODERS
from worker.training.models import count_parameters
from worker.training.sizes import (
    PARAMETERS,
    DiskEstimate,
    full_sweep_bytes,
    run_bytes,
    sweep_bytes,
)


def test_the_table_covers_every_cell_of_the_grid():
    assert set(PARAMETERS) == {(a, e) for a in ARCHITECTURES for e in ENCODERS}


@pytest.mark.parametrize(
    ("architecture", "encoder"),
    [("unet", "resnet18"), ("fpn", "vgg11"), ("linknet", "mobilenet_v2"),
     ("pspnet", "efficientnet-b0"), ("unet", "densenet121")],
)  # fmt: skip
def test_parameter_counts_match_the_installed_smp(architecture, encoder):
    model = smp.create_model(
        ARCHITECTURES[architecture], encoder_name=encoder, encoder_weights=None,
        in_channels=1, classes=1, activation="sigmoid",
    )  # fmt: skip
    assert PARAMETERS[(architecture, encoder)] == round(count_parameters(model) * 1e6)


def test_the_full_sweep_estimate_adds_up():
    assert run_bytes("unet", "resnet18") == PARAMETERS[("unet", "resnet18")] * 4
    assert run_bytes("unet", "resnet18", training=True) == PARAMETERS[("unet", "resnet18")] * 32
    need = full_sweep_bytes()
    assert need.finished == 6 * sum(run_bytes(a, e) for a, e in PARAMETERS)
    largest = max(PARAMETERS.values()) * 4 * 7  # the largest run's resume state
    assert need.peak == need.finished + largest
    assert full_sweep_bytes(concurrent=4).peak > need.peak
    assert 10e9 < need.finished < 200e9


def test_a_selection_counts_what_it_knows_and_says_what_it_does_not():
    need = sweep_bytes([("unet", "resnet18"), ("unet", "resnet18"), ("unetplusplus", "tu-x")])
    assert need.finished == 2 * run_bytes("unet", "resnet18")
    assert need.unknown == 1
    assert sweep_bytes([]) == DiskEstimate(0, 0, 0)
