"""CT datasets: layouts, NIfTI reading and checks, preprocessing, the paper's splits,
the public download and generated stand-in data.

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

Where each concern lives: worker.data.layout (which files a folder has, its hash),
worker.data.nifti (reading and checking volumes), worker.data.preprocess (resize,
normalisation), worker.data.dataset (load_dataset: checked, preprocessed splits),
worker.data.fetch (the public download), worker.data.synth (generated stand-ins).
"""

from worker.data.dataset import Dataset, Split, clear_cache, dataset_info, load_dataset
from worker.data.errors import DataError
from worker.data.fetch import GOOGLE_DRIVE_IDS, fetch
from worker.data.layout import MEDSEG_FILES, sha256_file
from worker.data.nifti import verify
from worker.data.preprocess import (
    HU_MEAN,
    HU_STD,
    denormalise,
    normalise_hu,
    resize_bilinear,
    resize_nearest,
)
from worker.data.synth import synth

__all__ = [
    "GOOGLE_DRIVE_IDS",
    "HU_MEAN",
    "HU_STD",
    "MEDSEG_FILES",
    "DataError",
    "Dataset",
    "Split",
    "clear_cache",
    "dataset_info",
    "denormalise",
    "fetch",
    "load_dataset",
    "normalise_hu",
    "resize_bilinear",
    "resize_nearest",
    "sha256_file",
    "synth",
    "verify",
]
