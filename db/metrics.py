"""What every number segbench reports means: the metric registry, as plain data.

One entry per metric: its name (the key in stored rows and frames), label, unit,
direction, level, a one-line help text and how many decimals to show. Every surface
that shows metrics (the leaderboard, Table 2, `segbench report` in every format,
`segbench status --wide`, the Statistics page) iterates over this table at call
time and takes labels, units, direction and help from here. The numbers are
computed in one place each: per-slice ratios of the confusion counts in
worker.training.metrics (``COUNT_FORMULAS``), per-volume metrics in
worker.training.volumes. docs/architecture.md, "Adding a metric", has the recipe.

Levels:
- ``slice``: one value per test slice, reported as the mean over the test slices;
- ``volume``: one value per test volume, reported as the mean over the test volumes
  (with the number of volumes the mean covers, ``<name>_volumes``);
- ``run``: one value per run (pooled over the test set, or a cost of training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from db.errors import check_choice

LEVELS = ("slice", "volume", "run")
KINDS = ("test", "cost")


@dataclass(frozen=True)
class Metric:
    """One reported number. ``higher_is_better`` None: neither (no best is marked).

    ``from_counts``: a per-slice ratio of TP, FP, FN, TN (its formula is
    worker.training.metrics.COUNT_FORMULAS[name]); ``compact``: also shown where
    space is short (Table 2's columns, `status --wide`, the report's run table),
    not only on the leaderboard."""

    name: str
    label: str
    unit: str
    higher_is_better: bool | None
    level: str
    help: str
    decimals: int = 2
    kind: str = "test"
    from_counts: bool = False
    compact: bool = True

    def __post_init__(self) -> None:
        check_choice("metric level", self.level, LEVELS)
        check_choice("metric kind", self.kind, KINDS)

    @property
    def header(self) -> str:
        """Column header with the unit: "Dice (%)", "HD95 (mm)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def coverage(self) -> str | None:
        """Key of the count of test volumes a volume-level mean covers."""
        return f"{self.name}_volumes" if self.level == "volume" else None

    def fmt(self, value: object, missing: str = "–") -> str:
        """The value with this metric's decimals; ``missing`` for None or NaN."""
        if value is None or not isinstance(value, int | float) or value != value:
            return missing
        return f"{value:.{self.decimals}f}"

    def cell(self, row: Mapping[str, object], missing: str = "–") -> str:
        """This metric's value in a row of results; a volume-level mean that covers fewer
        of the run's test volumes (``test_volumes``) than it has says so: "3.20 (2/3)"."""
        text = self.fmt(row.get(self.name), missing)
        covered, total = row.get(self.coverage or ""), row.get("test_volumes")
        partial = isinstance(covered, int) and isinstance(total, int) and covered < total
        if self.coverage and partial:
            text += f" ({covered}/{total})"
        return text


METRICS: tuple[Metric, ...] = (
    Metric(
        "sensitivity", "Sens", "%", True, "slice",
        "Sensitivity TP / (TP + FN) of each test slice (0/0 counts as 1), mean over the "
        "test slices; in the authors-2020 metric mode the 2020 code's precision.",
        from_counts=True,
    ),
    Metric(
        "specificity", "Spec", "%", True, "slice",
        "Specificity TN / (TN + FP) of each test slice (0/0 counts as 1), mean over the "
        "test slices; in the authors-2020 metric mode the 2020 code's negative "
        "predictive value.",
        from_counts=True,
    ),
    Metric(
        "dice", "Dice", "%", True, "slice",
        "Dice 2TP / (2TP + FP + FN) of each test slice (0/0 counts as 1), mean over the "
        "test slices: the paper's headline number.",
        from_counts=True,
    ),
    Metric(
        "dice_std", "Dice std", "%", None, "slice",
        "Standard deviation of the per-slice Dice over the test slices (ddof=0), in "
        "points: how much Dice varies from slice to slice, not the uncertainty of the "
        "mean (see the intervals of segbench report).",
        compact=False,
    ),
    Metric(
        "pooled_dice", "pooled Dice", "%", True, "run",
        "Dice of the confusion counts summed over every test slice (one Dice of the "
        "whole test set, so large lesions weigh more).",
        compact=False,
    ),
    Metric(
        "nsd", "NSD", "%", True, "volume",
        "Normalised surface Dice of each test volume at the protocol's tolerance (mm), "
        "mean over the test volumes; a volume with exactly one empty mask scores 0.",
    ),
    Metric(
        "hd95", "HD95", "mm", False, "volume",
        "95th-percentile Hausdorff distance of each test volume, mean over the test "
        "volumes; a volume with exactly one empty mask scores its diagonal (the "
        "largest distance the volume holds).",
    ),
    Metric(
        "parameters_m", "Params", "M", None, "run",
        "Trainable parameters of the model, in millions.", kind="cost",
    ),
    Metric(
        "train_seconds_per_epoch", "train", "s/epoch", False, "run",
        "Training seconds per epoch (mean over the run's epochs).", kind="cost",
    ),
    Metric(
        "val_seconds_per_epoch", "val", "s/epoch", False, "run",
        "Validation seconds per epoch (mean over the run's epochs).", kind="cost",
        compact=False,
    ),
)  # fmt: skip


def all_metrics() -> tuple[Metric, ...]:
    """Every metric, in display order (read at call time, so an added one shows)."""
    return METRICS


def get(name: str) -> Metric:
    """The metric called ``name`` (InvalidInput listing the known ones otherwise)."""
    found = {m.name: m for m in METRICS}
    return found[check_choice("metric", name, found)]


def select(
    *,
    kind: str | None = None,
    level: str | None = None,
    compact: bool | None = None,
    from_counts: bool | None = None,
) -> tuple[Metric, ...]:
    """The metrics with the given properties (None: any), in display order."""
    return tuple(
        m
        for m in METRICS
        if (kind is None or m.kind == kind)
        and (level is None or m.level == level)
        and (compact is None or m.compact == compact)
        and (from_counts is None or m.from_counts == from_counts)
    )


def names(**properties: object) -> list[str]:
    """Names of ``select(**properties)``."""
    return [m.name for m in select(**properties)]  # type: ignore[arg-type]


def resolution_note(image_size: int | None) -> str:
    """The sentence that says at which resolution a run's test metrics were measured."""
    size = f"{image_size} x {image_size} px" if image_size else "the protocol's image size"
    return (
        f"Test metrics are measured on the test slices resized to {size}, the model's input "
        "size, not at the scans' own resolution (segbench predict --reference scores there)."
    )


# Statistics defaults: one value each, read by the CLI, the report and the dashboard.
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
# Intervals of a mean over test slices (worker.results.intervals): the cluster-robust t
# interval (the default: it reaches its nominal coverage with 9 unequal test volumes in
# bench/interval_coverage.py) or the hierarchical percentile bootstrap.
INTERVAL_METHODS = ("cluster-t", "percentile")
INTERVAL_METHOD = "cluster-t"
