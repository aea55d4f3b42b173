"""Reading a dataset folder: its layout, NIfTI bytes, hashes and preprocessing.

The layout (which files a medseg or nifti-folder dataset has, and how its slices
split) is read from the folder's names, manifest.json and dataset.toml without
opening any volume; worker.data_check reads and checks the volumes themselves.
The public names here are re-exported by worker.data, the module to import from.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

HU_MEAN, HU_STD = -500.0, 500.0  # normalisation of the paper: (HU - mean) / std
TRAIN_FILES = {
    "image": "tr_im.nii.gz",
    "lesions": "tr_mask.nii.gz",
    "lungs": "tr_lungmasks_updated.nii.gz",
}
TEST_DIRS = {"image": "rp_im", "lesions": "rp_msk", "lungs": "rp_lung_msk"}
TRAIN_FRACTION = 0.8
MEDSEG_NAME = "medseg-covid19"
INTENSITIES = ("hu", "normalised", "unit")
TOML_KEYS = {"name", "intensity", "window", "synthetic", "train", "validation", "test"}
ENTRY_KEYS = {"image", "lungs", "lesions", "slices"}
SPLITS = ("train", "validation", "test")


class DataError(Exception):
    """A dataset folder that cannot be used, said in one clear sentence."""


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


# -------------------------------------------------------------------- NIfTI reading


def _nifti_from_bytes(data: bytes):
    try:
        return nib.Nifti1Image.from_bytes(data)
    except Exception:
        return nib.Nifti2Image.from_bytes(data)


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
