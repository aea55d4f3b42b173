import huggingface_hub.constants
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from db.grid import RunSpec
from worker.training.models import (
    WeightsError,
    build_model,
    count_parameters,
    first_conv,
    load_model,
    save_model,
)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _write_local_weights(cache, encoder: str) -> dict[str, torch.Tensor]:
    """A weights file laid out exactly as hf_hub_download caches it."""
    s = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    folder = cache / ("models--" + s["repo_id"].replace("/", "--")) / "snapshots" / s["revision"]
    folder.mkdir(parents=True)
    torch.manual_seed(123)
    rgb = smp.encoders.get_encoder(encoder, in_channels=3, weights=None)
    for p in rgb.parameters():
        p.data.normal_()
    state = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    return state


def test_imagenet_missing_weights_is_one_clear_sentence(hf_cache):
    with pytest.raises(WeightsError) as err:
        build_model(RunSpec("lung-segmentation", "unet", "resnet18", "imagenet"))
    msg = str(err.value)
    assert "resnet18" in msg and "segbench weights fetch --encoder resnet18" in msg


@pytest.mark.parametrize("architecture", ["unet", "pspnet"])  # depth 5 and depth 3
def test_imagenet_weights_load_from_local_cache(hf_cache, architecture):
    state = _write_local_weights(hf_cache, "resnet18")
    model = build_model(RunSpec("lung-segmentation", architecture, "resnet18", "imagenet"))
    conv = first_conv(model).weight
    assert conv.shape == (64, 1, 7, 7)
    # one input channel: smp sums the RGB kernels
    assert torch.allclose(conv, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    random = build_model(RunSpec("lung-segmentation", architecture, "resnet18", "random"))
    assert not torch.allclose(first_conv(random).weight, conv)


def test_saved_model_reloads_with_plain_smp(tmp_path):
    torch.manual_seed(0)
    model = build_model(RunSpec("lesion-segmentation-a", "fpn", "mobilenet_v2", "random")).eval()
    save_model(model, tmp_path / "m", metadata={"experiment": "lesion-segmentation-a"})
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert not list((tmp_path / "m").glob("*.pt")) and not list((tmp_path / "m").glob("*.pkl"))
    reloaded = smp.from_pretrained(str(tmp_path / "m")).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reloaded(x), atol=1e-6)
        assert torch.allclose(model(x), load_model(tmp_path / "m").eval()(x), atol=1e-6)
    assert 3 < count_parameters(model) < 5
