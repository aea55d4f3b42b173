import json
import subprocess
import sys

import pytest
import torch

from db.errors import InvalidInput
from db.grid import (
    ARCHITECTURES,
    ENCODERS,
    EXPERIMENTS,
    FAMILIES,
    INITS,
    GridError,
    RunSpec,
    expand,
)


def test_grid_has_600_runs_with_paper_names():
    specs = expand()
    assert len(specs) == 600
    assert len(set(specs)) == 600
    assert len(ENCODERS) == 25
    assert "efficientnet-b2" in ENCODERS  # the paper's bullet list forgets it
    assert set(EXPERIMENTS) == {
        "lung-segmentation",
        "lesion-segmentation-a",
        "lesion-segmentation-b",
    }
    assert set(ARCHITECTURES) == {"unet", "linknet", "fpn", "pspnet"}
    assert set(INITS) == {"random", "imagenet"}
    assert set(FAMILIES) == {
        "vgg",
        "resnet",
        "densenet",
        "resnext",
        "dpn",
        "mobilenet",
        "xception",
        "inception",
        "efficientnet",
    }


def test_filters_combine():
    assert len(expand(experiments=["lung-segmentation"])) == 200
    assert len(expand(architectures=["unet"], inits=["random"])) == 75
    vgg = expand(families=["vgg"])
    assert {s.encoder for s in vgg} == {"vgg11", "vgg13", "vgg19"}
    union = expand(families=["vgg"], encoders=["resnet18"], architectures=["fpn"])
    assert {s.encoder for s in union} == {"vgg11", "vgg13", "vgg19", "resnet18"}
    assert len(union) == 4 * 3 * 2


def test_unknown_names_list_valid_ones():
    with pytest.raises(GridError, match="Unknown encoder 'resnet19'.*resnet18"):
        expand(encoders=["resnet19"])
    with pytest.raises(GridError, match="architecture"):
        RunSpec("lung-segmentation", "deeplab", "resnet18", "random")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_grid_json_is_600():
    out = _cli("grid", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 600
    assert set(rows[0]) == {"experiment", "architecture", "encoder", "family", "init", "paper"}
    assert all(r["paper"] is True for r in rows)
    out = _cli("grid", "--format", "json", "--family", "dpn", "--init", "imagenet")
    assert len(json.loads(out.stdout)) == 3 * 4 * 2


def test_cli_bad_name_is_one_sentence():
    out = _cli("grid", "--encoder", "resnet19")
    assert out.returncode != 0
    assert "resnet19" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_model_builds_with_one_channel(architecture, encoder):
    from worker.training.models import build_model

    model = build_model(RunSpec("lung-segmentation", architecture, encoder, "random")).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 1, 64, 64))
    assert y.shape == (1, 1, 64, 64)
    assert float(y.min()) >= 0 and float(y.max()) <= 1  # sigmoid output


def test_experiments_are_data_that_the_data_pipeline_reads(synthetic_data):
    """Each experiment's target and lung-masked input come from db.grid's table: the
    assembled split's masks are the target's, and only lung-masked experiments have
    zeros outside the lungs."""
    import numpy as np

    from db.grid import EXPERIMENT_SPECS, EXPERIMENTS, experiment
    from worker.data.dataset import load_dataset

    assert list(EXPERIMENT_SPECS) == list(EXPERIMENTS)
    assert experiment("lesion-segmentation-b").needs == ("lesions", "lungs")
    with pytest.raises(InvalidInput, match="Unknown experiment 'lungs'"):
        experiment("lungs")
    lungs = load_dataset(synthetic_data, "lung-segmentation", 64).test
    for spec in EXPERIMENT_SPECS.values():
        split = load_dataset(synthetic_data, spec.name, 64).test
        outside = split.lungs == 0
        assert np.all(split.images[outside] == 0) == spec.lung_masked_input, spec.name
        assert np.array_equal(split.masks, lungs.masks) == (spec.target == "lungs"), spec.name
