"""CT datasets: readers, integrity checks, preprocessing and the paper's splits.

A dataset is a folder. Two kinds are understood, told apart by what the folder holds:

``medseg`` (``tr_im.nii.gz`` present): the paper's public MedSeg files, as written by
``segbench data fetch`` (or ``segbench data synth`` for generated stand-ins)::

    tr_im.nii.gz                 H x W x 100 training slices, Hounsfield units
    tr_mask.nii.gz               lesion labels 0..3 (none, ground-glass, consolidation,
                                 pleural effusion)
    tr_lungmasks_updated.nii.gz  lung labels 0..2 (background, two lungs)
    rp_im/1.nii.gz ... 9.nii.gz  test volumes, 630 x 630 x N, Hounsfield units
    rp_msk/<same names>          lesion labels 0..3
    rp_lung_msk/<same names>     lung labels 0..2
    manifest.json                optional: {"dataset", "synthetic", "files": {path: sha256}}

Train = the first 80% of the training slices in file order (slices 0..79 of 100),
validation = the rest, test = every slice of every test volume (file names sorted
numerically).

``nifti-folder`` (``dataset.toml`` present): any NIfTI volumes, described by::

    name = "my-hospital-ct"      # optional; default: the folder's name
    intensity = "hu"             # "hu" (default): Hounsfield units;
                                 # "normalised": already (HU + 500) / 500, used as is;
                                 # "unit": values in [0, 1] standing for the HU `window`
    window = [-1000.0, 400.0]    # required with intensity = "unit": the HU of 0 and of 1
    synthetic = false            # optional; true labels the data as generated

    [[train]]                    # one table per volume; at least one train, one
    image = "img/a.nii.gz"       # validation and one test table. Paths are relative
    lungs = "lung/a.nii.gz"      # to the folder. Volumes are 3-D, slices along the
    lesions = "lesion/a.nii.gz"  # last axis. Masks: 0 = background, any positive
    slices = [0, 80]             # integer = foreground. `lungs` and `lesions` are each
                                 # optional, but an experiment needs its target mask
    [[validation]]               # (and lesion-segmentation-b needs lungs too).
    image = "img/a.nii.gz"       # `slices` is an optional half-open range [start, stop)
    slices = [80, 100]           # of slice indices; default: every slice.
    [[test]]
    image = "img/b.nii.gz"

An optional manifest.json (same form as above) is checked in both kinds.

Preprocessing (both kinds): every slice ``volume[..., i]`` as loaded (no reorienting)
is resized to ``image_size`` (bilinear, like ``torch.nn.functional.interpolate`` with
``align_corners=False``, for images; nearest for masks so they stay binary), masks
become binary (any non-zero label is positive) and images are normalised as
(HU - (-500)) / 500. For ``lesion-segmentation-b`` the normalised image is multiplied
by the binary lung mask.
"""

from __future__ import annotations

# The readers, checks and preprocessing live in worker.data_io and worker.data_check;
# this module re-exports their public names.
import logging
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.data_check import LABELS, scan, verify  # noqa: F401
from worker.data_io import (  # noqa: F401
    ENTRY_KEYS,
    HU_MEAN,
    HU_STD,
    INTENSITIES,
    MEDSEG_NAME,
    SPLITS,
    TEST_DIRS,
    TOML_KEYS,
    TRAIN_FILES,
    TRAIN_FRACTION,
    DataError,
    _fingerprint,
    _Layout,
    _layout,
    _manifest_hash,
    files_hash,
    normalise_hu,
    resize_bilinear,
    resize_nearest,
    sha256_file,
)
from worker.grid import EXPERIMENTS

__all__ = [
    "DataError",
    "Dataset",
    "GOOGLE_DRIVE_IDS",
    "HU_MEAN",
    "HU_STD",
    "MEDSEG_FILES",
    "Split",
    "dataset_info",
    "fetch",
    "load_dataset",
    "normalise_hu",
    "resize_bilinear",
    "resize_nearest",
    "synth",
    "verify",
]

log = logging.getLogger(__name__)

# The six public downloads (Bizopoulos et al. download them from Google Drive by id).
MEDSEG_FILES: tuple[str, ...] = (
    "tr_im.nii.gz",
    "tr_mask.nii.gz",
    "tr_lungmasks_updated.nii.gz",
    "rp_im.zip",
    "rp_msk.zip",
    "rp_lung_msk.zip",
)
GOOGLE_DRIVE_IDS: dict[str, str] = {
    "tr_im.nii.gz": "1SJoMelgRqb0EuqlTuq6dxBWf2j9Kno8S",
    "tr_mask.nii.gz": "1MEqpbpwXjrLrH42DqDygWeSkDq0bi92f",
    "tr_lungmasks_updated.nii.gz": "1zj4N_KV0LBko1VSQ7FPZ38eaEGNU0K6-",
    "rp_im.zip": "1ruTiKdmqhqdbE9xOEmjQGing76nrTK2m",
    "rp_msk.zip": "1gVuDwFeAGa6jIVX9MeJV5ByIHFpOo5Bp",
    "rp_lung_msk.zip": "1MIp89YhuAKh4as2v_5DUoExgt6-y3AnH",
}


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
    layout = _layout(path)
    return {
        "name": layout.name,
        "kind": layout.kind,
        "synthetic": layout.synthetic,
        "manifest_hash": _manifest_hash(layout),
    }


_CACHE: dict[tuple, dict] = {}


def clear_cache() -> None:
    """Forget the preprocessed arrays kept by load_dataset."""
    _CACHE.clear()


def _needs(experiment: str) -> tuple[str, ...]:
    if experiment == "lung-segmentation":
        return ("lungs",)
    if experiment == "lesion-segmentation-a":
        return ("lesions",)
    return ("lesions", "lungs")


def load_dataset(
    path: str | Path,
    experiment: str,
    image_size: int,
    *,
    keep_hu: bool = False,
    cache: bool = True,
) -> Dataset:
    """Load, check and preprocess a dataset folder for one experiment.

    Raises DataError when the folder fails verify() (listing the first problems),
    or when the experiment's target mask is not part of the dataset. With cache=True
    the preprocessed volumes of the last folder/size are kept in this process, so
    the next run in the same worker skips reading and checking unchanged files.
    """
    if experiment not in EXPERIMENTS:
        raise DataError(
            f"Unknown experiment '{experiment}'; expected one of: {', '.join(EXPERIMENTS)}."
        )
    if not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise DataError(f"image size must be a positive integer, got {image_size!r}.")
    image_size = int(image_size)
    layout = _layout(path)
    for role in _needs(experiment):
        for e in layout.entries:
            if getattr(e, role) is None:
                raise DataError(
                    f"{e.where or layout.root}: no `{role}` mask for {e.image}, which "
                    f'{experiment} needs; add `{role} = "..."` to that table in dataset.toml.'
                )
    key = (_fingerprint(layout), image_size)
    volumes = _CACHE.get(key)
    if volumes is None:
        problems, volumes = scan(layout, image_size=image_size)
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
        test_hu = np.concatenate([volumes["parts"][i]["image"] for i in _indices(layout, "test")])
        test_hu *= HU_STD
        test_hu += HU_MEAN
    return Dataset(
        name=layout.name,
        kind=layout.kind,
        synthetic=layout.synthetic,
        manifest_hash=_manifest_hash(layout),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        test_spacing=[volumes["spacing"][e.image] for e in test_entries],
        test_hu=test_hu,
    )


def _indices(layout: _Layout, split: str) -> list[int]:
    return [i for i, e in enumerate(layout.entries) if e.split == split]


def _assemble(layout: _Layout, volumes: dict, split: str, experiment: str) -> Split:
    parts = [volumes["parts"][i] for i in _indices(layout, split)]
    images = np.concatenate([p["image"] for p in parts])
    lungs = np.concatenate([p["lungs"] for p in parts])
    if experiment == "lesion-segmentation-b":
        images *= lungs
    target = "lungs" if experiment == "lung-segmentation" else "lesions"
    masks = np.concatenate([p[target] for p in parts])
    return Split(
        images=images,
        masks=masks,
        lungs=lungs,
        volume=np.concatenate([p["volume"] for p in parts]).astype(np.int64),
        slice=np.concatenate([p["slice"] for p in parts]).astype(np.int64),
    )


def synth(
    path: str | Path,
    *,
    image_size: int = 512,
    train_slices: int = 100,
    test_volumes: int = 9,
    slices_per_volume: int | None = None,
    seed: int = 0,
) -> Path:
    """Write GENERATED stand-in CT data in the medseg layout (see worker.data_synth)."""
    from worker.data_synth import synth as _synth

    return _synth(
        path,
        image_size=image_size,
        train_slices=train_slices,
        test_volumes=test_volumes,
        slices_per_volume=slices_per_volume,
        seed=seed,
    )


def fetch(path: str | Path, *, urls: dict[str, str] | None = None, progress: bool = True) -> Path:
    """Download the six public MedSeg files (see worker.data_fetch)."""
    from worker.data_fetch import fetch as _fetch

    return _fetch(path, urls=urls, progress=progress)
