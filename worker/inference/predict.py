"""Segment a CT volume with a saved model, on CPU by default (`segbench predict`).

A model folder holds ``model.safetensors`` + ``config.json`` (smp's save_pretrained,
no pickle) and ``segbench.json`` (run spec, protocol, preprocessing, test metrics).
Every axial slice ``volume[..., i]`` goes through the same preprocessing as the test
set during training (worker.data.preprocess): bilinear resize of the HU slice to the model's
image size, normalisation (HU + 500) / 500, for lesion-segmentation-b multiplication
by the binary lung mask (here predicted by a lung model), threshold 0.5. The binary
prediction is resized back to the slice's size by nearest neighbour.

So for an input at least as large as the image size, resizing the written mask back
to the image size by nearest neighbour (worker.data.preprocess.resize_nearest) gives exactly the
mask the model predicted, which is what the run's stored per-slice counts measure.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from db.errors import SegbenchError
from db.grid import EXPERIMENT_SPECS
from worker.data.preprocess import normalise_hu, resize_bilinear
from worker.training.device import resolve_device
from worker.training.models import MODEL_FILES, load_model

log = logging.getLogger(__name__)

MAX_IMAGE_SIZE = 2048  # a model folder cannot make predict allocate more
LOWEST_PLAUSIBLE_MIN = -200.0  # CT of a chest contains air (about -1000 HU)
HU_RANGE = (-10000.0, 40000.0)  # beyond these, values are not Hounsfield units


class PredictError(SegbenchError, ValueError):
    """A model folder or input volume that cannot be used, in one sentence."""


@dataclass
class SavedModel:
    """A model folder loaded for inference."""

    directory: Path
    model: torch.nn.Module
    meta: dict  # segbench.json

    @property
    def experiment(self) -> str:
        return str(self.meta.get("experiment", ""))

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.meta["preprocessing"].get("threshold", 0.5))

    @property
    def lung_masked_input(self) -> bool:
        return bool(self.meta["preprocessing"].get("lung_masked_input", False))

    @property
    def synthetic(self) -> bool:
        return bool((self.meta.get("dataset") or {}).get("synthetic"))

    @property
    def name(self) -> str:
        m = self.meta
        return f"{m.get('experiment')}-{m.get('architecture')}-{m.get('encoder')}-{m.get('init')}"


@dataclass
class Segmentation:
    """A volume's prediction: ``mask`` at the input's size (H, W, N), uint8 0/1, and
    ``model_mask`` at the model's size (N, S, S), as the model predicted it."""

    mask: np.ndarray
    model_mask: np.ndarray
    lungs: np.ndarray | None = None  # (N, S, S) lung mask used as input gate
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def read_meta(directory: Path) -> dict:
    """segbench.json of a model folder, checked for what inference needs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PredictError(
            f"Model folder {directory} does not exist; expected a folder with "
            f"{', '.join(MODEL_FILES)} (a run's checkpoint_best or `segbench export models`)."
        )
    missing = [n for n in MODEL_FILES if not (directory / n).is_file()]
    if missing:
        raise PredictError(
            f"Model folder {directory} lacks {', '.join(missing)}; expected "
            f"{', '.join(MODEL_FILES)} (a run's checkpoint_best or `segbench export models`)."
        )
    try:
        meta = json.loads((directory / "segbench.json").read_text())
        size = int(meta["preprocessing"]["image_size"])
        meta["experiment"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PredictError(
            f"{directory / 'segbench.json'} is not a segbench model description ({exc!r}); "
            "expected the file written with the model by `segbench train`."
        ) from exc
    if size < 32 or size % 32 or size > MAX_IMAGE_SIZE:
        raise PredictError(
            f"{directory / 'segbench.json'}: image_size {size} is not usable; expected a "
            f"multiple of 32 from 32 to {MAX_IMAGE_SIZE}."
        )
    return meta


def load_saved_model(directory: Path | str, device: str = "cpu") -> SavedModel:
    """Load model.safetensors + config.json with smp (no pickle) and segbench.json."""

    directory = Path(directory)
    meta = read_meta(directory)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # smp prints while loading
            model = load_model(directory)
    except Exception as exc:  # smp/safetensors raise many types for broken files
        raise PredictError(
            f"Cannot load the model in {directory} ({type(exc).__name__}: {exc}); expected "
            "model.safetensors and config.json written by segmentation-models-pytorch."
        ) from exc
    model.eval().to(device)
    return SavedModel(directory=directory, model=model, meta=meta)


def read_ct(path: Path | str) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """Load a 3-D NIfTI CT volume in Hounsfield units: (image, float32 array)."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(f"Input file {path} does not exist; expected a CT volume (.nii.gz).")
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise PredictError(
                f"{path} is a {type(img).__name__}, not a NIfTI volume; expected .nii or .nii.gz."
            )
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3 or 0 in shape:
            raise PredictError(
                f"{path} has shape {img.shape}; expected a 3-D volume (rows x columns x slices)."
            )
        hu = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except PredictError:
        raise
    except Exception as exc:  # nibabel raises many types for broken headers/data
        raise PredictError(
            f"{path} is not a readable NIfTI volume ({type(exc).__name__}: {exc}); "
            "expected a .nii or .nii.gz CT volume."
        ) from exc
    check_hu(hu, path)
    return img, hu


def check_hu(hu: np.ndarray, path: Path | str = "input") -> None:
    """Refuse volumes that do not look like CT in Hounsfield units."""
    if not np.isfinite(hu).all():
        bad = int(np.count_nonzero(~np.isfinite(hu)))
        raise PredictError(f"{path} has {bad} NaN or infinite voxels; expected finite HU values.")
    lo, hi = float(hu.min()), float(hu.max())
    if lo < HU_RANGE[0] or hi > HU_RANGE[1]:
        raise PredictError(
            f"{path} has values from {lo:g} to {hi:g}, outside any CT range; expected "
            "Hounsfield units (air about -1000, water 0, bone up to a few thousand)."
        )
    if hi < -1100:
        raise PredictError(
            f"{path} has its highest value at {hi:g}, below air (-1000 HU); expected a CT "
            "volume in Hounsfield units."
        )
    if lo > LOWEST_PLAUSIBLE_MIN:
        raise PredictError(
            f"{path} has its lowest value at {lo:g}, but a chest CT in Hounsfield units "
            "contains air at about -1000; it looks normalised, windowed or not CT "
            "(convert it to HU first)."
        )


def _resize_nearest_hw(stack: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest resize of the last two axes to (h, w), pixel centres (as worker.data)."""
    sh, sw = stack.shape[-2:]
    iy = np.minimum(np.floor((np.arange(h) + 0.5) * (sh / h)).astype(np.intp), sh - 1)
    ix = np.minimum(np.floor((np.arange(w) + 0.5) * (sw / w)).astype(np.intp), sw - 1)
    return stack[..., iy, :][..., ix]


def model_input(hu: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, N) HU volume -> (N, S, S) normalised slices, as training prepares them."""
    slices = np.ascontiguousarray(np.moveaxis(hu, -1, 0))
    return normalise_hu(resize_bilinear(slices, image_size))


def predict_slices(
    saved: SavedModel, x: np.ndarray, *, device: str = "cpu", batch_size: int = 8
) -> np.ndarray:
    """Binary masks (N, S, S) for normalised slices (N, S, S), in batches."""
    out = np.zeros(x.shape, dtype=bool)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            prob = saved.model(xb[:, None].to(device)).float()
            out[start : start + batch_size] = (prob[:, 0] > saved.threshold).cpu().numpy()
    return out


def check_cascade(saved: SavedModel, lung_model: SavedModel | None) -> None:
    """A lesion-segmentation-b model needs a lung-segmentation model in front of it."""
    if saved.lung_masked_input and lung_model is None:
        raise PredictError(
            f"Model {saved.name} was trained on lung-masked input (lesion-segmentation-b); "
            "pass a lung-segmentation model with --lung-model."
        )
    lung_experiments = [e.name for e in EXPERIMENT_SPECS.values() if e.target == "lungs"]
    if lung_model is not None and lung_model.experiment not in lung_experiments:
        raise PredictError(
            f"--lung-model {lung_model.directory} is a {lung_model.experiment!r} model; "
            "expected a lung-segmentation model."
        )


def segment(
    saved: SavedModel,
    hu: np.ndarray,
    *,
    lung_model: SavedModel | None = None,
    device: str = "cpu",
    batch_size: int = 8,
) -> Segmentation:
    """Segment every axial slice of an (H, W, N) HU volume."""
    check_cascade(saved, lung_model)
    t0 = time.perf_counter()
    h, w = hu.shape[:2]
    x = model_input(hu, saved.image_size)
    lungs = None
    if saved.lung_masked_input:
        size = lung_model.image_size
        xl = x if size == saved.image_size else model_input(hu, size)
        lungs = predict_slices(lung_model, xl, device=device, batch_size=batch_size)
        if size != saved.image_size:
            lungs = _resize_nearest_hw(lungs, saved.image_size, saved.image_size)
        x = x * lungs
    model_mask = predict_slices(saved, x, device=device, batch_size=batch_size)
    mask = np.moveaxis(_resize_nearest_hw(model_mask, h, w), 0, -1).astype(np.uint8)
    return Segmentation(
        mask=np.ascontiguousarray(mask),
        model_mask=model_mask,
        lungs=lungs,
        seconds=time.perf_counter() - t0,
    )


def write_mask(path: Path | str, mask: np.ndarray, like: nib.spatialimages.SpatialImage) -> Path:
    """Write a uint8 0/1 mask with the affine and header of ``like``, atomically."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise PredictError(f"Output {path} must end in .nii or .nii.gz.")
    if not path.parent.is_dir():
        raise PredictError(f"Output folder {path.parent} does not exist; create it first.")
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(like)(mask.reshape(mask.shape[:3]).astype(np.uint8), like.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = 0, 1
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        out.to_filename(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def predict_file(
    model_dir: Path | str,
    input_path: Path | str,
    output_path: Path | str,
    *,
    lung_model_dir: Path | str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
) -> dict:
    """`segbench predict`: read, segment, write; returns a summary for the user."""

    resolve_device(device)
    saved = load_saved_model(model_dir, device)
    lungs = load_saved_model(lung_model_dir, device) if lung_model_dir else None
    check_cascade(saved, lungs)
    img, hu = read_ct(input_path)
    seg = segment(saved, hu, lung_model=lungs, device=device, batch_size=batch_size)
    write_mask(output_path, seg.mask, img)
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    voxels = int(seg.mask.sum())
    return {
        "model": saved.name,
        "input": str(input_path),
        "output": str(output_path),
        "shape": list(seg.mask.shape),
        "voxels": voxels,
        "volume_ml": voxels * float(np.prod(zooms)) / 1000.0,
        "slices_with_foreground": int(seg.mask.reshape(-1, seg.mask.shape[-1]).any(0).sum()),
        "seconds": seg.seconds,
        "synthetic_training_data": saved.synthetic or bool(lungs and lungs.synthetic),
    }
