"""load_dataset: a dataset folder checked, preprocessed and split for one experiment."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from db.errors import check_choice
from db.grid import EXPERIMENT_SPECS, EXPERIMENTS
from db.protocol import TEST_RESIZES
from worker.data.errors import DataError
from worker.data.layout import SPLITS, Layout, fingerprint, manifest_hash, read_layout
from worker.data.nifti import scan
from worker.data.preprocess import denormalise


@dataclass
class Split:
    """Slices ready for a model. All arrays share the first axis (N)."""

    images: np.ndarray  # float32 (N, H, W): normalised model input
    masks: np.ndarray  # uint8 (N, H, W): binary target of the experiment
    lungs: np.ndarray  # uint8 (N, H, W): binary lung mask (zeros if unknown)
    volume: np.ndarray  # int64 (N,): 0-based volume index
    slice: np.ndarray  # int64 (N,): slice index inside its volume

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Dataset:
    """A loaded dataset: train / validation / test splits for one experiment."""

    name: str
    kind: str  # "medseg" | "nifti-folder"
    synthetic: bool
    manifest_hash: str
    train: Split
    validation: Split
    test: Split
    # Voxel spacing (mm) of each test volume as the slices are stored in `test`,
    # i.e. the header's spacing with rows/columns scaled by the resize.
    test_spacing: list[tuple[float, float, float]] = field(default_factory=list)
    test_hu: np.ndarray | None = None  # float32 (N, H, W) resized HU, if asked for


# -------------------------------------------------------------------- loading


def dataset_info(path: str | Path) -> dict:
    """{"name", "kind", "synthetic", "manifest_hash"} without loading any array.

    With a manifest.json this reads nothing else; without one the hash is the same
    hash of the files' sha256 that a manifest would give (files are read once).
    """
    layout = read_layout(path)
    return {
        "name": layout.name,
        "kind": layout.kind,
        "synthetic": layout.synthetic,
        "manifest_hash": manifest_hash(layout),
    }


_CACHE: dict[tuple, dict] = {}


def clear_cache() -> None:
    """Forget the preprocessed arrays kept by load_dataset."""
    _CACHE.clear()


def check_targets(layout: Layout, experiment: str) -> None:
    """DataError unless every volume has the masks `experiment` needs."""
    for role in EXPERIMENT_SPECS[experiment].needs:
        for e in layout.entries:
            if getattr(e, role) is None:
                raise DataError(
                    f"{e.where or layout.root}: no `{role}` mask for {e.image}, which "
                    f'{experiment} needs; add `{role} = "..."` to that table in dataset.toml.'
                )


def load_dataset(
    path: str | Path,
    experiment: str,
    image_size: int,
    *,
    keep_hu: bool = False,
    cache: bool = True,
    test_resize: str = "standard",
) -> Dataset:
    """Load, check and preprocess a dataset folder for one experiment.

    Raises DataError when the folder fails verify() (listing the first problems),
    or when the experiment's target mask is not part of the dataset. With cache=True
    the preprocessed volumes of the last folder/size are kept in this process, so
    the next run in the same worker skips reading and checking unchanged files.
    test_resize: how the test slices are resized (Protocol.test_resize).
    """
    check_choice("experiment", experiment, EXPERIMENTS, DataError)
    check_choice("test resize", test_resize, TEST_RESIZES, DataError)
    if not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise DataError(f"image size must be a positive integer, got {image_size!r}.")
    image_size = int(image_size)
    layout = read_layout(path)
    check_targets(layout, experiment)
    key = (fingerprint(layout), image_size, test_resize)
    volumes = _CACHE.get(key)
    if volumes is None:
        problems, volumes = scan(layout, image_size=image_size, test_resize=test_resize)
        if problems:
            raise DataError(
                f"{layout.root} is not usable ({len(problems)} problem(s); `segbench data "
                f"verify --dir {layout.root}` lists them all): {' '.join(problems[:3])}"
            )
        if cache:
            _CACHE.clear()
            _CACHE[key] = volumes
    splits = {s: _assemble(layout, volumes, s, experiment) for s in SPLITS}
    test_entries = [e for e in layout.entries if e.split == "test"]
    test_hu = None
    if keep_hu:
        test_hu = denormalise(
            np.concatenate([volumes["parts"][i]["image"] for i in _indices(layout, "test")])
        )
    return Dataset(
        name=layout.name,
        kind=layout.kind,
        synthetic=layout.synthetic,
        manifest_hash=manifest_hash(layout),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        test_spacing=[volumes["spacing"][e.image] for e in test_entries],
        test_hu=test_hu,
    )


def _indices(layout: Layout, split: str) -> list[int]:
    return [i for i, e in enumerate(layout.entries) if e.split == split]


def _assemble(layout: Layout, volumes: dict, split: str, experiment: str) -> Split:
    parts = [volumes["parts"][i] for i in _indices(layout, split)]
    images = np.concatenate([p["image"] for p in parts])
    lungs = np.concatenate([p["lungs"] for p in parts])
    spec = EXPERIMENT_SPECS[experiment]
    if spec.lung_masked_input:
        images *= lungs
    masks = np.concatenate([p[spec.target] for p in parts])
    return Split(
        images=images,
        masks=masks,
        lungs=lungs,
        volume=np.concatenate([p["volume"] for p in parts]).astype(np.int64),
        slice=np.concatenate([p["slice"] for p in parts]).astype(np.int64),
    )
