"""The paper's published Dice, as data, to draw beside a user's own results.

Bizopoulos, Vretos and Daras (2020), "Comprehensive Comparison of Deep Learning
Models for Lung and COVID-19 Lesion Segmentation in CT scans", Table 2: the mean test
Dice (percent, mean over test slices) of each architecture's models (25 encoders x 2
inits) per experiment, and the mean ± std and best model over all 200 models of each
experiment. The paper's models were evaluated by the authors' 2020 code, so these
numbers are comparable with segbench's ``authors-2020`` metric mode, not with
``standard`` (whose empty-slice rule scores a false positive on an empty slice 0).
"""

from __future__ import annotations

import pandas as pd

from db.grid import EXPERIMENTS

COMPARABLE_MODE = "authors-2020"

# Dice (%) per architecture: lung-segmentation, lesion-segmentation-a, lesion-segmentation-b
BY_ARCHITECTURE = {
    "unet": (93.77, 85.84, 86.86),
    "linknet": (93.96, 86.14, 86.5),
    "fpn": (92.9, 85.29, 86.52),
    "pspnet": (92.09, 84.61, 85.86),
}
EXPERIMENT_ORDER = EXPERIMENTS
# mean ± std over all models of an experiment, and its best model
BY_EXPERIMENT = {
    "lung-segmentation": {"mean": 93.18, "std": 1.3, "best": 95.58},
    "lesion-segmentation-a": {"mean": 85.47, "std": 1.17, "best": 87.56},
    "lesion-segmentation-b": {"mean": 86.44, "std": 1.04, "best": 89.0},
}
NOTE = (
    "The paper's numbers come from its authors' 2020 evaluation code: compare them with "
    "the authors-2020 metric mode, not with the standard one."
)


def architecture_means() -> pd.DataFrame:
    """Rows (experiment, architecture, dice) of the paper's per-architecture means."""
    return pd.DataFrame(
        [
            {"experiment": x, "architecture": arch, "dice": values[i]}
            for arch, values in BY_ARCHITECTURE.items()
            for i, x in enumerate(EXPERIMENT_ORDER)
        ]
    )
