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

import gzip
import hashlib
import json
import logging
import numbers
import re
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

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
HU_MEAN, HU_STD = -500.0, 500.0  # normalisation of the paper: (HU - mean) / std
TRAIN_FILES = {
    "image": "tr_im.nii.gz",
    "lesions": "tr_mask.nii.gz",
    "lungs": "tr_lungmasks_updated.nii.gz",
}
TEST_DIRS = {"image": "rp_im", "lesions": "rp_msk", "lungs": "rp_lung_msk"}
TRAIN_FRACTION = 0.8
MEDSEG_NAME = "medseg-covid19"
LABELS = {"lesions": frozenset({0, 1, 2, 3}), "lungs": frozenset({0, 1, 2})}
INTENSITIES = ("hu", "normalised", "unit")
TOML_KEYS = {"name", "intensity", "window", "synthetic", "train", "validation", "test"}
ENTRY_KEYS = {"image", "lungs", "lesions", "slices"}
SPLITS = ("train", "validation", "test")


class DataError(Exception):
    """A dataset folder that cannot be used, said in one clear sentence."""


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


# -------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Entry:
    split: str
    image: str
    lungs: str | None
    lesions: str | None
    volume: int
    slices: tuple[int, int] | None = None
    share: tuple[float, float] | None = None  # fraction of the volume's slices
    where: str = ""


@dataclass
class _Layout:
    root: Path
    kind: str
    name: str
    synthetic: bool
    entries: list[_Entry]
    manifest: dict | None
    intensity: str = "hu"
    window: tuple[float, float] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def remedy(self) -> str:
        if self.kind == "nifti-folder":
            return "fix the file or dataset.toml"
        if self.synthetic:
            return "regenerate the folder with `segbench data synth`"
        return "re-download it with `segbench data fetch`"

    def files(self) -> list[str]:
        names = {self.kind_file}
        for e in self.entries:
            names.update(p for p in (e.image, e.lungs, e.lesions) if p)
        return sorted(names)

    @property
    def kind_file(self) -> str:
        return "dataset.toml" if self.kind == "nifti-folder" else TRAIN_FILES["image"]


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _nifti_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii"))]
    return sorted(found, key=_natural_key)


def _read_manifest(root: Path) -> dict | None:
    path = root / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); expected the manifest.") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise DataError(f"{path}: expected an object with a 'files' mapping of path to sha256.")
    return manifest


def _medseg_layout(root: Path, manifest: dict | None) -> _Layout:
    synthetic = bool(manifest and manifest.get("synthetic"))
    name = str((manifest or {}).get("dataset") or MEDSEG_NAME)
    layout = _Layout(root, "medseg", name, synthetic, [], manifest)
    tr = TRAIN_FILES
    for split, share in (("train", (0.0, TRAIN_FRACTION)), ("validation", (TRAIN_FRACTION, 1.0))):
        layout.entries.append(
            _Entry(split, tr["image"], tr["lungs"], tr["lesions"], 0, share=share)
        )
    images = _nifti_names(root / TEST_DIRS["image"])
    if not images:
        layout.problems.append(
            f"{TEST_DIRS['image']}/: no test volumes found; expected rp_im/1.nii.gz … "
            f"9.nii.gz (unpacked from rp_im.zip by `segbench data fetch`)."
        )
    for role in ("lesions", "lungs"):
        folder = TEST_DIRS[role]
        extra = sorted(set(_nifti_names(root / folder)) - set(images), key=_natural_key)
        for n in extra:
            layout.problems.append(
                f"{folder}/{n}: has no matching test image {TEST_DIRS['image']}/{n}; "
                f"expected one mask per test image, with the same file name."
            )
    for v, n in enumerate(images):
        layout.entries.append(
            _Entry(
                "test",
                f"{TEST_DIRS['image']}/{n}",
                f"{TEST_DIRS['lungs']}/{n}",
                f"{TEST_DIRS['lesions']}/{n}",
                v,
            )
        )
    return layout


def _toml_entry(split: str, i: int, raw: object, where_file: str) -> _Entry:
    where = f"{where_file} [[{split}]] entry {i + 1}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a table with an `image` path.")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise DataError(
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(ENTRY_KEYS))}."
        )
    for key in ("image", "lungs", "lesions"):
        if key in raw and not (isinstance(raw[key], str) and raw[key]):
            raise DataError(f"{where}: `{key}` must be a file path (string).")
    if "image" not in raw:
        raise DataError(f"{where}: missing `image`; expected the path of a NIfTI volume.")
    slices = raw.get("slices")
    if slices is not None:
        ok = (
            isinstance(slices, list)
            and len(slices) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in slices)
            and 0 <= slices[0] < slices[1]
        )
        if not ok:
            raise DataError(
                f"{where}: `slices` = {slices!r}; expected [start, stop] with 0 <= start < stop."
            )
        slices = (slices[0], slices[1])
    return _Entry(split, raw["image"], raw.get("lungs"), raw.get("lesions"), i, slices, None, where)


def _nifti_folder_layout(root: Path, manifest: dict | None) -> _Layout:
    path = root / "dataset.toml"
    try:
        cfg = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid TOML ({exc}).") from exc
    unknown = sorted(set(cfg) - TOML_KEYS)
    if unknown:
        raise DataError(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(TOML_KEYS))}."
        )
    intensity = cfg.get("intensity", "hu")
    if intensity not in INTENSITIES:
        raise DataError(
            f"{path}: intensity = {intensity!r}; expected one of {', '.join(INTENSITIES)}."
        )
    window = cfg.get("window")
    if intensity == "unit":
        ok = (
            isinstance(window, list)
            and len(window) == 2
            and all(isinstance(w, int | float) for w in window)
            and window[0] < window[1]
        )
        if not ok:
            raise DataError(
                f'{path}: intensity = "unit" needs window = [low_hu, high_hu] (the HU that 0 '
                f"and 1 stand for), got {window!r}."
            )
        window = (float(window[0]), float(window[1]))
    synthetic = bool(cfg.get("synthetic", False)) or bool(manifest and manifest.get("synthetic"))
    name = str(cfg.get("name") or (manifest or {}).get("dataset") or root.resolve().name)
    layout = _Layout(root, "nifti-folder", name, synthetic, [], manifest, intensity, window)
    for split in SPLITS:
        tables = cfg.get(split)
        if not isinstance(tables, list) or not tables:
            raise DataError(
                f"{path}: no [[{split}]] tables; expected at least one per split "
                f"(train, validation, test), each with an `image` path."
            )
        layout.entries += [_toml_entry(split, i, t, "dataset.toml") for i, t in enumerate(tables)]
    return layout


def _layout(path: str | Path) -> _Layout:
    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder; expected a dataset folder (medseg or nifti-folder)."
        )
    manifest = _read_manifest(root)
    if (root / "dataset.toml").exists():
        layout = _nifti_folder_layout(root, manifest)
    elif (root / TRAIN_FILES["image"]).exists():
        layout = _medseg_layout(root, manifest)
    else:
        raise DataError(
            f"{root}: not a dataset folder; expected dataset.toml (nifti-folder) or "
            f"tr_im.nii.gz with the other MedSeg files (run `segbench data fetch --dir {root}` "
            f"or `segbench data synth --dir {root}`)."
        )
    if layout.synthetic and "synthetic" not in layout.name:
        layout.name = f"{layout.name}-synthetic"
    return layout


# -------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_hash(files: dict[str, str]) -> str:
    """sha256 of a {relative path: sha256} file list (the manifest hash)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


_CONTENT_HASHES: dict[tuple, str] = {}


def _fingerprint(layout: _Layout) -> tuple:
    out = []
    for rel in [*layout.files(), "manifest.json"]:
        p = layout.root / rel
        st = p.stat() if p.exists() else None
        out.append((rel, st.st_size if st else -1, st.st_mtime_ns if st else -1))
    return (str(layout.root.resolve()), tuple(out))


def _manifest_hash(layout: _Layout) -> str:
    if layout.manifest and layout.manifest.get("files"):
        return files_hash(layout.manifest["files"])
    key = _fingerprint(layout)
    if key not in _CONTENT_HASHES:
        files = {
            rel: sha256_file(layout.root / rel)
            for rel in layout.files()
            if (layout.root / rel).is_file()
        }
        _CONTENT_HASHES[key] = files_hash(files)
    return _CONTENT_HASHES[key]


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


# -------------------------------------------------------------------- preprocessing


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """Paper normalisation (HU - (-500)) / 500, as float32."""
    return ((np.asarray(hu, dtype=np.float32) - HU_MEAN) / HU_STD).astype(np.float32, copy=False)


def _linear_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def resize_bilinear(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to size x size, bilinear (align_corners=False), float32."""
    h, w = np.shape(stack)[-2:]
    if (h, w) == (size, size):
        return np.array(stack, dtype=np.float32, order="C")  # always a fresh copy
    a = np.ascontiguousarray(stack, dtype=np.float32)  # gathers are 10x faster on C order
    y0, y1, wy = _linear_index(h, size)
    x0, x1, wx = _linear_index(w, size)
    return _lerp(_lerp(a, y0, y1, wy[:, None], -2), x0, x1, wx, -1)


def _lerp(a: np.ndarray, i0, i1, w, axis: int) -> np.ndarray:
    # a[i0] + (a[i1] - a[i0]) * w along axis, in place; np.take keeps C order
    # (fancy indexing a[..., idx, :] would not, and later passes would crawl).
    lo, hi = np.take(a, i0, axis=axis), np.take(a, i1, axis=axis)
    hi -= lo
    hi *= w
    hi += lo
    return hi


def resize_nearest(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to size x size, nearest (pixel centres), same dtype."""
    a = np.ascontiguousarray(stack)
    h, w = a.shape[-2:]
    iy = np.minimum(np.floor((np.arange(size) + 0.5) * (h / size)).astype(np.intp), h - 1)
    ix = np.minimum(np.floor((np.arange(size) + 0.5) * (w / size)).astype(np.intp), w - 1)
    return np.take(np.take(a, iy, axis=-2), ix, axis=-1)


# -------------------------------------------------------------------- checking + reading


def _read(layout: _Layout, rel: str, role: str, problems: list[str]):
    """Read one volume, appending its problems; returns (array | None, zooms)."""
    path, remedy = layout.root / rel, layout.remedy
    if not path.is_file():
        problems.append(f"{rel}: file is missing; {remedy}.")
        return None, ()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"{rel}: cannot be read ({exc.strerror or exc}).")
        return None, ()
    img, broken = _decode(rel, raw, remedy)
    if broken:  # one sentence per damaged file, even when its checksum differs too
        problems.append(broken)
        return None, ()
    listed = (layout.manifest or {}).get("files") or {}
    if listed and rel not in listed:
        problems.append(
            f"{rel}: not listed in manifest.json; expected only the files it lists "
            f"(remove the file or {remedy})."
        )
    elif listed and hashlib.sha256(raw).hexdigest() != listed[rel]:
        problems.append(
            f"{rel}: sha256 does not match manifest.json (changed or corrupt); {remedy}."
        )
    shape = img.shape
    if len(shape) != 3 or 0 in shape:
        what = "is empty" if 0 in shape else f"is {len(shape)}-D"
        problems.append(
            f"{rel}: shape {shape} {what}; expected a 3-D volume (rows x columns x slices)."
        )
        return None, ()
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for short or odd voxel data
        problems.append(f"{rel}: voxel data is not readable ({exc}); {remedy}.")
        return None, ()
    if role == "image":
        problem = _image_problem(rel, arr)
    else:
        problem = _label_problem(rel, arr, role, layout)
    if problem:
        problems.append(problem)
        return None, ()
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return arr, zooms


def _decode(rel: str, raw: bytes, remedy: str):
    """(NIfTI image, None) or (None, the problem) for the bytes of one file."""
    if not raw:
        return None, f"{rel}: file is empty (0 bytes); {remedy}."
    data = raw
    if rel.endswith(".gz"):
        try:
            data = gzip.decompress(raw)  # whole stream: checks CRC and length
        except (EOFError, OSError, zlib.error) as exc:
            return None, f"{rel}: gzip data is truncated or corrupt ({exc}); {remedy}."
    elif not rel.endswith(".nii"):
        return None, f"{rel}: not a .nii or .nii.gz file; expected a NIfTI volume."
    try:
        return _nifti_from_bytes(data), None
    except Exception as exc:  # nibabel raises many types for broken headers
        return None, f"{rel}: not a readable NIfTI volume ({exc}); {remedy}."


def _nifti_from_bytes(data: bytes):
    try:
        return nib.Nifti1Image.from_bytes(data)
    except Exception:
        return nib.Nifti2Image.from_bytes(data)


def _image_problem(rel: str, arr: np.ndarray) -> str | None:
    if not np.issubdtype(arr.dtype, np.number):
        return f"{rel}: voxel type {arr.dtype} is not numeric; expected intensities."
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            return f"{rel}: {bad} voxel(s) are NaN or infinite; expected finite intensities."
    return None


def _label_problem(rel: str, arr: np.ndarray, role: str, layout: _Layout) -> str | None:
    if not np.issubdtype(arr.dtype, np.number):
        return f"{rel}: voxel type {arr.dtype} is not numeric; expected integer labels."
    top = max(LABELS[role]) if layout.kind == "medseg" else None
    bad = arr < 0
    if np.issubdtype(arr.dtype, np.floating):
        bad |= ~np.isfinite(arr) | (arr != np.round(arr))
    if top is not None:
        bad |= arr > top
    if not bad.any():
        return None
    seen = ", ".join(f"{v:g}" for v in np.unique(arr[bad])[:5])
    expected = (
        f"labels {', '.join(map(str, sorted(LABELS[role])))}"
        if top is not None
        else "0 for background and positive integers for foreground"
    )
    return f"{rel}: {role} mask has value(s) {seen}; expected {expected}."


def _to_hu(arr: np.ndarray, layout: _Layout) -> np.ndarray:
    if layout.intensity == "normalised":
        return arr.astype(np.float32) * HU_STD + HU_MEAN
    if layout.intensity == "unit":
        lo, hi = layout.window
        return lo + arr.astype(np.float32) * (hi - lo)
    return arr


def _slices(arr: np.ndarray) -> np.ndarray:
    """(H, W, N) volume -> (N, H, W) view of the slices, volume[..., i] unchanged."""
    return np.moveaxis(arr, -1, 0)


def scan(layout: _Layout, image_size: int | None) -> tuple[list[str], dict]:
    """Check every file of a layout once; with image_size, also preprocess.

    Returns (problems, volumes) where volumes = {"parts": [per entry {"image", "lungs",
    "lesions", "volume", "slice"}], "spacing": {image path: (mm, mm, mm)}}.
    """
    problems = list(layout.problems)
    listed = (layout.manifest or {}).get("files") or {}
    for rel in sorted(listed, key=_natural_key):
        if not (layout.root / rel).is_file():
            problems.append(f"{rel}: listed in manifest.json but missing; {layout.remedy}.")
    parts: list[dict | None] = [None] * len(layout.entries)
    spacing: dict[str, tuple[float, float, float]] = {}
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(layout.entries):
        groups.setdefault((e.image, e.lungs, e.lesions), []).append(i)
    for (image_rel, lungs_rel, lesions_rel), members in groups.items():
        image, zooms = _read(layout, image_rel, "image", problems)
        masks = {}
        for role, rel in (("lungs", lungs_rel), ("lesions", lesions_rel)):
            if rel is None:
                masks[role] = None
                continue
            arr, _ = _read(layout, rel, role, problems)
            if arr is not None and image is not None and arr.shape != image.shape:
                problems.append(
                    f"{rel}: shape {arr.shape} differs from {image_rel} {image.shape}; "
                    f"expected a mask of the same shape as its image."
                )
                arr = None
            masks[role] = arr
        if image is None:
            continue
        n = image.shape[-1]
        ranges = {}
        for i in members:
            e = layout.entries[i]
            if e.share is not None:
                start, stop = round(e.share[0] * n), round(e.share[1] * n)
            else:
                start, stop = e.slices or (0, n)
            if stop > n or stop <= start:
                problems.append(
                    f"{e.where or image_rel}: {image_rel} has {n} slices, which leaves the "
                    f"{e.split} split empty or out of range (slices {start}..{stop - 1}); "
                    f"expected at least one slice per split."
                )
                continue
            ranges[i] = (start, stop)
        declared = {"lungs": lungs_rel, "lesions": lesions_rel}
        if image_size is None or any(declared[r] and m is None for r, m in masks.items()):
            continue
        rows, cols = image.shape[:2]
        spacing[image_rel] = (zooms[0] * rows / image_size, zooms[1] * cols / image_size, zooms[2])
        hu = _slices(_to_hu(image, layout))
        del image
        binary = {
            r: None if m is None else _slices((m != 0).view(np.uint8)) for r, m in masks.items()
        }
        for i, (start, stop) in ranges.items():
            k = stop - start
            empty = np.zeros((k, image_size, image_size), np.uint8)
            image = resize_bilinear(hu[start:stop], image_size)
            image -= HU_MEAN  # in place: the paper's normalisation without a copy
            image /= HU_STD
            parts[i] = {
                "image": image,
                **{
                    r: empty if b is None else resize_nearest(b[start:stop], image_size)
                    for r, b in binary.items()
                },
                "volume": np.full(k, layout.entries[i].volume, np.int64),
                "slice": np.arange(start, stop, dtype=np.int64),
            }
    return list(dict.fromkeys(problems)), {"parts": parts, "spacing": spacing}


def verify(path: str | Path) -> list[str]:
    """Problems that make a dataset folder unusable, one sentence each ([] = usable)."""
    try:
        layout = _layout(path)
    except DataError as exc:
        return [str(exc)]
    problems, _ = scan(layout, image_size=None)
    return problems


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
