"""The parameter table behind `segbench doctor`'s disk estimate matches smp."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp

from db.grid import ARCHITECTURES, ENCODERS
from worker.training.models import count_parameters
from worker.training.sizes import PARAMETERS, full_sweep_bytes, run_bytes


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
    assert run_bytes("unet", "resnet18") == PARAMETERS[("unet", "resnet18")] * 4 * 5
    assert full_sweep_bytes() == 6 * sum(run_bytes(a, e) for a, e in PARAMETERS)
    assert 100e9 < full_sweep_bytes() < 1000e9
