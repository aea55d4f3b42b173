"""Everything segmentation-models-pytorch 0.6 can build, as plain data (no torch import).

The paper's grid (db.grid) is a subset: 4 of these 12 architectures and 25 of these
76 encoders. Beyond it, any architecture here can be paired with any encoder here or
any timm universal encoder (``tu-<timm model name>``); a user's own model is the
architecture ``custom`` with its builder reference as the encoder.

`static_refusal` holds the combinations smp 0.6 refuses whatever the image size (found
by building every pair once; tests/training/test_catalog.py checks a sample against
smp itself). Whether a pair builds at a given image size is checked by building it
(worker.training.catalog.check_buildable) when runs are submitted.
"""

from __future__ import annotations

import re

# segbench name -> segmentation_models_pytorch class name (smp 0.6.0)
SMP_ARCHITECTURES: dict[str, str] = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "manet": "MAnet",
    "linknet": "Linknet",
    "fpn": "FPN",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "pan": "PAN",
    "upernet": "UPerNet",
    "segformer": "Segformer",
    "dpt": "DPT",
}

CUSTOM = "custom"  # the architecture of a user's own model
CUSTOM_INIT = "own"  # its weights are whatever its builder makes
TIMM_PREFIX = "tu-"
TIMM_FAMILY = "timm-universal"


def _named(family: str, names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), family)


# encoder name -> family (smp 0.6.0's registry, in its order); families of the
# paper's encoders keep the paper's names
SMP_ENCODERS: dict[str, str] = {
    **_named("resnet", "resnet18 resnet34 resnet50 resnet101 resnet152"),
    **_named(
        "resnext",
        "resnext50_32x4d resnext101_32x4d resnext101_32x8d resnext101_32x16d "
        "resnext101_32x32d resnext101_32x48d",
    ),
    **_named("dpn", "dpn68 dpn68b dpn92 dpn98 dpn107 dpn131"),
    **_named("vgg", "vgg11 vgg11_bn vgg13 vgg13_bn vgg16 vgg16_bn vgg19 vgg19_bn"),
    **_named(
        "senet",
        "senet154 se_resnet50 se_resnet101 se_resnet152 se_resnext50_32x4d se_resnext101_32x4d",
    ),
    **_named("densenet", "densenet121 densenet169 densenet201 densenet161"),
    **_named("inceptionresnetv2", "inceptionresnetv2"),
    **_named("inception", "inceptionv4"),
    **_named("efficientnet", " ".join(f"efficientnet-b{i}" for i in range(8))),
    **_named("mobilenet", "mobilenet_v2"),
    **_named("xception", "xception"),
    **_named(
        "timm-efficientnet",
        " ".join(f"timm-efficientnet-b{i}" for i in range(9))
        + " timm-efficientnet-l2 "
        + " ".join(f"timm-tf_efficientnet_lite{i}" for i in range(5)),
    ),
    **_named("timm-sknet", "timm-skresnet18 timm-skresnet34 timm-skresnext50_32x4d"),
    **_named("mix-transformer", " ".join(f"mit_b{i}" for i in range(6))),
    **_named("mobileone", " ".join(f"mobileone_s{i}" for i in range(5))),
}

# smp encoders without ImageNet weights (only other pretraining, or none)
NO_IMAGENET: frozenset[str] = frozenset(
    [
        "resnext101_32x4d",
        "resnext101_32x16d",
        "resnext101_32x32d",
        "resnext101_32x48d",
        "dpn68b",
        "dpn92",
        "dpn107",
        "timm-efficientnet-l2",
    ]
)

# families whose downsampling is pooling: no dilated mode (DeepLabV3, V3+, PAN)
_NOT_DILATABLE = frozenset(("vgg", "densenet", "xception", "inception", "inceptionresnetv2"))

_TIMM_NAME = re.compile(r"[a-z0-9][a-z0-9_.]{0,58}")


def is_timm_universal(encoder: str) -> bool:
    """`tu-<name>` with a plausible timm model name (whether timm has it is checked
    where timm is imported)."""
    return encoder.startswith(TIMM_PREFIX) and bool(
        _TIMM_NAME.fullmatch(encoder[len(TIMM_PREFIX) :])
    )


def encoder_family(encoder: str) -> str:
    if encoder in SMP_ENCODERS:
        return SMP_ENCODERS[encoder]
    return TIMM_FAMILY if encoder.startswith(TIMM_PREFIX) else CUSTOM


def static_refusal(architecture: str, encoder: str) -> str | None:
    """Why smp 0.6 cannot build `architecture` with `encoder` at any image size, as
    one sentence, or None."""
    family = SMP_ENCODERS.get(encoder)
    timm = encoder.startswith(TIMM_PREFIX)
    if architecture == "dpt" and not timm:
        return f"DPT needs a timm universal ViT encoder (tu-vit_..., say), not '{encoder}'."
    if architecture in ("deeplabv3", "deeplabv3plus", "pan") and family in _NOT_DILATABLE:
        return (
            f"{SMP_ARCHITECTURES[architecture]} needs an encoder with a dilated mode, and "
            f"'{encoder}' ({family}) downsamples by pooling."
        )
    if architecture in ("unetplusplus", "linknet") and family == "mix-transformer":
        return f"{SMP_ARCHITECTURES[architecture]} does not support the encoder '{encoder}'."
    return None


def imagenet_refusal(encoder: str) -> str | None:
    """Why `encoder` cannot start from ImageNet weights in segbench, or None."""
    if encoder.startswith(TIMM_PREFIX):
        return (
            f"Encoder '{encoder}' can only start from random weights: segbench's weights "
            "cache holds smp's ImageNet encoders, not timm's; use --init random."
        )
    if encoder in NO_IMAGENET:
        return f"Encoder '{encoder}' has no ImageNet weights in smp 0.6; use --init random."
    return None
