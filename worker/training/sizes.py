"""Parameter counts of the grid's 100 models (4 architectures x 25 encoders), one
input channel, one class: what a run's checkpoints weigh, without building models.

Computed once with smp (``smp.create_model(..., encoder_weights=None, in_channels=1,
classes=1)``); tests/training/test_sizes.py rebuilds some of them and checks that the
table still matches the installed smp.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from db.grid import ARCHITECTURES, ENCODERS

# Each (architecture, encoder) cell runs once per experiment (3) and init (2).
RUNS_PER_CELL = 6

PARAMETERS: dict[tuple[str, str], int] = {
    ("unet", "vgg11"): 18_252_881,
    ("unet", "vgg13"): 18_437_393,
    ("unet", "vgg19"): 29_056_785,
    ("unet", "resnet18"): 14_321_937,
    ("unet", "resnet34"): 24_430_097,
    ("unet", "resnet50"): 32_514_833,
    ("unet", "resnet101"): 51_506_961,
    ("unet", "resnet152"): 67_150_609,
    ("unet", "densenet121"): 13_601_361,
    ("unet", "densenet161"): 38_728_913,
    ("unet", "densenet169"): 21_196_369,
    ("unet", "densenet201"): 28_574_289,
    ("unet", "resnext50_32x4d"): 31_986_705,
    ("unet", "dpn68"): 16_951_303,
    ("unet", "dpn98"): 71_332_177,
    ("unet", "mobilenet_v2"): 6_628_369,
    ("unet", "xception"): 28_768_825,
    ("unet", "inceptionv4"): 48_791_345,
    ("unet", "efficientnet-b0"): 6_250_893,
    ("unet", "efficientnet-b1"): 8_756_529,
    ("unet", "efficientnet-b2"): 10_045_715,
    ("unet", "efficientnet-b3"): 13_158_313,
    ("unet", "efficientnet-b4"): 20_224_825,
    ("unet", "efficientnet-b5"): 31_215_137,
    ("unet", "efficientnet-b6"): 43_824_185,
    ("linknet", "vgg11"): 10_483_137,
    ("linknet", "vgg13"): 10_667_649,
    ("linknet", "vgg19"): 21_287_041,
    ("linknet", "resnet18"): 11_657_505,
    ("linknet", "resnet34"): 21_765_665,
    ("linknet", "resnet50"): 31_171_505,
    ("linknet", "resnet101"): 50_163_633,
    ("linknet", "resnet152"): 65_807_281,
    ("linknet", "densenet121"): 10_421_745,
    ("linknet", "densenet161"): 40_734_289,
    ("linknet", "densenet169"): 19_144_785,
    ("linknet", "densenet201"): 28_261_393,
    ("linknet", "resnext50_32x4d"): 30_643_377,
    ("linknet", "dpn68"): 13_636_885,
    ("linknet", "dpn98"): 74_105_709,
    ("linknet", "mobilenet_v2"): 4_319_283,
    ("linknet", "xception"): 27_255_815,
    ("linknet", "inceptionv4"): 46_158_561,
    ("linknet", "efficientnet-b0"): 4_166_593,
    ("linknet", "efficientnet-b1"): 6_672_229,
    ("linknet", "efficientnet-b2"): 7_892_179,
    ("linknet", "efficientnet-b3"): 10_926_233,
    ("linknet", "efficientnet-b4"): 17_861_707,
    ("linknet", "efficientnet-b5"): 28_744_971,
    ("linknet", "efficientnet-b6"): 41_247_957,
    ("fpn", "vgg11"): 11_303_041,
    ("fpn", "vgg13"): 11_487_553,
    ("fpn", "vgg19"): 22_106_945,
    ("fpn", "resnet18"): 13_040_961,
    ("fpn", "resnet34"): 23_149_121,
    ("fpn", "resnet50"): 26_109_761,
    ("fpn", "resnet101"): 45_101_889,
    ("fpn", "resnet152"): 60_745_537,
    ("fpn", "densenet121"): 9_293_441,
    ("fpn", "densenet161"): 29_488_385,
    ("fpn", "densenet169"): 15_053_441,
    ("fpn", "densenet201"): 20_858_497,
    ("fpn", "resnext50_32x4d"): 25_581_633,
    ("fpn", "dpn68"): 13_915_383,
    ("fpn", "dpn98"): 61_910_401,
    ("fpn", "mobilenet_v2"): 4_214_849,
    ("fpn", "xception"): 23_240_297,
    ("fpn", "inceptionv4"): 43_570_017,
    ("fpn", "efficientnet-b0"): 5_758_909,
    ("fpn", "efficientnet-b1"): 8_264_545,
    ("fpn", "efficientnet-b2"): 9_464_643,
    ("fpn", "efficientnet-b3"): 12_474_073,
    ("fpn", "efficientnet-b4"): 19_350_889,
    ("fpn", "efficientnet-b5"): 30_167_633,
    ("fpn", "efficientnet-b6"): 42_586_985,
    ("pspnet", "vgg11"): 10_012_289,
    ("pspnet", "vgg13"): 10_196_801,
    ("pspnet", "vgg19"): 20_816_193,
    ("pspnet", "resnet18"): 11_323_553,
    ("pspnet", "resnet34"): 21_431_713,
    ("pspnet", "resnet50"): 24_294_721,
    ("pspnet", "resnet101"): 43_286_849,
    ("pspnet", "resnet152"): 58_930_497,
    ("pspnet", "densenet121"): 7_740_545,
    ("pspnet", "densenet161"): 27_845_825,
    ("pspnet", "densenet169"): 13_271_169,
    ("pspnet", "densenet201"): 18_879_617,
    ("pspnet", "resnext50_32x4d"): 23_766_593,
    ("pspnet", "dpn68"): 12_214_695,
    ("pspnet", "dpn98"): 60_255_553,
    ("pspnet", "mobilenet_v2"): 2_262_777,
    ("pspnet", "xception"): 21_140_137,
    ("pspnet", "inceptionv4"): 41_689_217,
    ("pspnet", "efficientnet-b0"): 4_055_235,
    ("pspnet", "efficientnet-b1"): 6_560_871,
    ("pspnet", "efficientnet-b2"): 7_757_591,
    ("pspnet", "efficientnet-b3"): 10_752_685,
    ("pspnet", "efficientnet-b4"): 17_613_963,
    ("pspnet", "efficientnet-b5"): 28_415_297,
    ("pspnet", "efficientnet-b6"): 40_819_367,
}

# What a run keeps in its artifacts folder, in float32 copies of its parameters. A
# finished run keeps its best model (safetensors); while it trains it also holds the
# latest and previous resume checkpoints (the model and Adam's two moments: 3 copies
# each) and the best epoch's weights, all removed when it finishes.
FINISHED_COPIES = 1
TRAINING_COPIES = FINISHED_COPIES + 2 * 3 + 1
BYTES_PER_PARAMETER = 4


def run_bytes(architecture: str, encoder: str, *, training: bool = False) -> int:
    """Disk one run of this cell keeps once finished (or at most while it trains)."""
    copies = TRAINING_COPIES if training else FINISHED_COPIES
    return PARAMETERS[(architecture, encoder)] * BYTES_PER_PARAMETER * copies


@dataclass(frozen=True)
class DiskEstimate:
    """What a selection of runs needs on the artifacts disk (estimates, bytes)."""

    finished: int  # every run finished: their best models
    peak: int  # the most at any moment: finished + the largest runs still training
    unknown: int  # runs of cells this table has no size for (not counted)


def sweep_bytes(cells: Iterable[tuple[str, str]], concurrent: int = 1) -> DiskEstimate:
    """Disk for runs of these (architecture, encoder) cells, `concurrent` at a time."""
    cells = list(cells)
    known = [(a, e) for a, e in cells if (a, e) in PARAMETERS]
    unknown = len(cells) - len(known)
    finished = sum(run_bytes(a, e) for a, e in known)
    extra = [run_bytes(a, e, training=True) - run_bytes(a, e) for a, e in known]
    extra.sort(reverse=True)
    return DiskEstimate(finished, finished + sum(extra[: max(1, concurrent)]), unknown)


def full_sweep_bytes(concurrent: int = 1) -> DiskEstimate:
    """Disk the 600-model benchmark's artifacts need (an estimate)."""
    return sweep_bytes(
        [(a, e) for a in ARCHITECTURES for e in ENCODERS for _ in range(RUNS_PER_CELL)],
        concurrent,
    )
