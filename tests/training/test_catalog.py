"""Beyond the paper's grid: the catalog of what smp 0.6 offers, checked against smp
itself; a sample across encoder families built on a small input; the submit-time
build check; an architecture outside the paper and a timm universal encoder trained
end to end on generated data. The paper's grid is still exactly 600 runs."""

from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch
from typer.testing import CliRunner

from db.catalog import NO_IMAGENET, SMP_ARCHITECTURES, SMP_ENCODERS, static_refusal
from db.grid import ARCHITECTURES, ENCODERS, GridError, RunSpec, expand, expand_all
from db.protocol import Protocol
from worker import data
from worker.cli import load_commands
from worker.training.catalog import NotBuildable, build_refusal, check_buildable
from worker.training.models import build_model
from worker.training.trainer import TrainSpec, fit


def test_paper_grid_is_still_exactly_600_and_marked():
    specs = expand()
    assert len(specs) == 600 and len(set(specs)) == 600
    assert all(s.paper for s in specs)
    assert {s.architecture for s in specs} == set(ARCHITECTURES)
    assert {s.encoder for s in specs} == set(ENCODERS)


def test_grid_json_marks_paper_rows():
    runner = CliRunner()
    paper = json.loads(runner.invoke(load_commands(), ["grid", "--format", "json"]).stdout)
    assert len(paper) == 600 and all(r["paper"] is True for r in paper)
    result = runner.invoke(load_commands(), ["grid", "--all", "--format", "json"])
    rows = json.loads(result.stdout)
    assert sum(r["paper"] for r in rows) == 600
    assert len(rows) == len(expand_all()) > 600
    assert {r["architecture"] for r in rows} == set(SMP_ARCHITECTURES) - {"dpt"}
    one = json.loads(
        runner.invoke(
            load_commands(),
            ["grid", "-x", "lung-segmentation", "-a", "unetplusplus", "-e", "tu-resnet18",
             "--format", "json"],
        ).stdout
    )  # fmt: skip
    assert one == [
        {"experiment": "lung-segmentation", "architecture": "unetplusplus",
         "encoder": "tu-resnet18", "family": "timm-universal", "init": "random", "paper": False}
    ]  # fmt: skip


def test_catalog_is_smps_registry():
    """The plain-data catalog (db has no torch) equals what the installed smp offers."""
    assert smp.__version__.startswith("0.6")
    assert {c.lower() for c in SMP_ARCHITECTURES.values()} == set(smp.MODEL_ARCHITECTURES_MAPPING)
    registry = smp.encoders.encoders
    assert list(SMP_ENCODERS) == list(registry)
    no_imagenet = {e for e, v in registry.items() if "imagenet" not in v["pretrained_settings"]}
    assert no_imagenet == NO_IMAGENET
    assert all(SMP_ENCODERS[e] == f for e, f in ENCODERS.items())


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("dpt", "resnet18"), ("deeplabv3", "vgg11"), ("pan", "densenet121"),
     ("unetplusplus", "mit_b0"), ("linknet", "mit_b0")],
)  # fmt: skip
def test_static_refusals_are_what_smp_refuses(arch, encoder):
    """Each statically refused pair really fails in smp (built on the meta device)."""
    assert static_refusal(arch, encoder)
    with pytest.raises(ValueError), torch.device("meta"):
        smp.create_model(
            SMP_ARCHITECTURES[arch], encoder_name=encoder, encoder_weights=None, in_channels=1
        ).eval()(torch.zeros(1, 1, 64, 64))
    with pytest.raises(GridError, match=r"^[A-Z].*\.$"):
        RunSpec("lung-segmentation", arch, encoder, "random")


SAMPLE = [  # one or two of each family beyond the paper, every architecture
    ("unetplusplus", "resnet18", 64),
    ("manet", "mobilenet_v2", 64),
    ("deeplabv3", "resnet18", 64),
    ("deeplabv3plus", "efficientnet-b0", 64),
    ("pan", "resnet18", 128),
    ("upernet", "vgg11_bn", 64),
    ("segformer", "mit_b0", 64),
    ("linknet", "timm-efficientnet-b0", 64),
    ("fpn", "mobileone_s0", 64),
    ("unet", "se_resnet50", 64),
    ("pspnet", "timm-skresnet18", 64),
    ("unet", "tu-resnet18", 64),
    ("dpt", "tu-vit_tiny_patch16_224", 224),
]


@pytest.mark.parametrize(("arch", "encoder", "size"), SAMPLE)
def test_sample_across_families_builds_and_segments(arch, encoder, size):
    """The submit check says yes, and the real model (CPU, random weights) turns one
    slice into one probability mask of the same size."""
    assert build_refusal(arch, encoder, size) is None
    spec = RunSpec("lung-segmentation", arch, encoder, "random")
    assert not spec.paper
    torch.manual_seed(0)
    with torch.no_grad():
        y = build_model(spec).eval()(torch.randn(2, 1, size, size))
    assert y.shape == (2, 1, size, size)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_submit_check_refuses_what_cannot_be_built():
    pan = RunSpec("lung-segmentation", "pan", "resnet18", "random")
    with pytest.raises(NotBuildable, match=r"PAN .* 64-pixel slices .*\.$"):
        check_buildable([pan], 64)
    check_buildable([pan], 128)
    with pytest.raises(NotBuildable, match="timm has no model 'nonexistent_net'"):
        check_buildable([RunSpec("lung-segmentation", "unet", "tu-nonexistent_net", "random")], 64)
    with pytest.raises(NotBuildable, match="random weights"):
        check_buildable([RunSpec("lung-segmentation", "unet", "tu-resnet18", "imagenet")], 64)
    with pytest.raises(NotBuildable, match="no ImageNet weights"):
        check_buildable([RunSpec("lung-segmentation", "unet", "dpn92", "imagenet")], 64)
    check_buildable(expand(), 64)  # the paper's cells are not asked


def test_selection_beyond_the_paper_skips_pairs_smp_refuses():
    specs = expand(experiments=["lung-segmentation"], architectures=["deeplabv3"])
    assert {s.encoder for s in specs} == set(ENCODERS) - {
        e for e in ENCODERS if static_refusal("deeplabv3", e)
    }
    with pytest.raises(GridError, match="DPT needs a timm universal ViT encoder"):
        expand(architectures=["dpt"], encoders=["resnet18"])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("beyond")
    data.synth(path, image_size=64, train_slices=8, test_volumes=1, slices_per_volume=4, seed=5)
    return path


@pytest.mark.parametrize("cell", [("unetplusplus", "resnet18"), ("unet", "tu-resnet18")])
def test_beyond_the_paper_trains_end_to_end(cell, tiny_data, tmp_path):
    spec = TrainSpec(
        run=RunSpec("lung-segmentation", *cell, "random"),
        protocol=Protocol(epochs=1, image_size=64),
        data_dir=tiny_data,
        artifacts_dir=tmp_path,
    )
    outcome = fit(spec)
    assert outcome.best_epoch == 1
    assert 0 <= outcome.test.dice <= 100
    assert (tmp_path / "checkpoint_best" / "model.safetensors").is_file()


def test_user_model_output_kind_by_attribute_or_probe(monkeypatch):
    from pathlib import Path

    from worker.training import custom

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "fixtures"))
    logits = custom.check("tiny_model:build", 64)
    assert (logits["output"], logits["output_from"]) == ("logits", "attribute")
    probs = custom.check("tiny_model:build_probabilities", 64)
    assert (probs["output"], probs["output_from"]) == ("probabilities", "probe")
    model, _ = custom.build("tiny_model:build")
    assert isinstance(model, custom.WithSigmoid)  # logits get a sigmoid
    with pytest.raises(custom.ModelImportError, match=r"no function 'nothing'\.$"):
        custom.check("tiny_model:nothing", 64)


def test_entry_point_shows_up_by_name_with_its_package_version(tmp_path, monkeypatch):
    """An installed package (a dist-info folder on sys.path, as pip writes it) that
    registers a `segbench.models` entry point."""
    import shutil
    from pathlib import Path

    from worker.training import custom

    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model.py", tmp_path)
    info = tmp_path / "tinylab-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinylab\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[segbench.models]\ntiny = tiny_model:build\n")
    (info / "top_level.txt").write_text("tiny_model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert custom.entry_points()["tiny"] == "tiny_model:build"
    provenance = custom.check("tiny", 64)
    assert provenance["name"] == "tiny" and provenance["module"] == "tiny_model"
    assert (provenance["package"], provenance["version"]) == ("tinylab", "1.2.3")
    with pytest.raises(custom.ModelImportError, match="No `segbench.models` entry point"):
        custom.check("not-registered", 64)


def test_readme_example_model_builds_and_declares_logits(monkeypatch):
    from pathlib import Path

    from worker.training import custom

    examples = Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    code = [line for line in (examples / "tiny_unet.py").read_text().splitlines() if line.strip()]
    assert len(code) <= 40
    provenance = custom.check("tiny_unet:build", 64)
    assert (provenance["output"], provenance["output_from"]) == ("logits", "attribute")
