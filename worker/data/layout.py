"""Reading a dataset folder: its layout, NIfTI bytes, hashes and preprocessing.

The layout (which files a medseg or nifti-folder dataset has, and how its slices
split) is read from the folder's names, manifest.json and dataset.toml without
opening any volume; worker.data.nifti reads and checks the volumes themselves.
The public names here are re-exported by worker.data, the module to import from.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from worker.data.errors import DataError

TRAIN_FILES = {
    "image": "tr_im.nii.gz",
    "lesions": "tr_mask.nii.gz",
    "lungs": "tr_lungmasks_updated.nii.gz",
}
TEST_DIRS = {"image": "rp_im", "lesions": "rp_msk", "lungs": "rp_lung_msk"}
TRAIN_FRACTION = 0.8
MEDSEG_NAME = "medseg-covid19"
INTENSITIES = ("hu", "normalised", "unit")
TOML_KEYS = {
    "name",
    "intensity",
    "window",
    "synthetic",
    "allow_outside_paths",
    "train",
    "validation",
    "test",
}
ENTRY_KEYS = {"image", "lungs", "lesions", "slices"}
SPLITS = ("train", "validation", "test")
# The six public downloads of the paper's data (worker.data.fetch gets them).
MEDSEG_FILES: tuple[str, ...] = (
    "tr_im.nii.gz",
    "tr_mask.nii.gz",
    "tr_lungmasks_updated.nii.gz",
    "rp_im.zip",
    "rp_msk.zip",
    "rp_lung_msk.zip",
)


# -------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Entry:
    split: str
    image: str
    lungs: str | None
    lesions: str | None
    volume: int
    slices: tuple[int, int] | None = None
    share: tuple[float, float] | None = None  # fraction of the volume's slices
    where: str = ""


@dataclass
class Layout:
    root: Path
    kind: str
    name: str
    synthetic: bool
    entries: list[Entry]
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


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _nifti_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii"))]
    return sorted(found, key=natural_key)


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


def _medseg_layout(root: Path, manifest: dict | None) -> Layout:
    synthetic = bool(manifest and manifest.get("synthetic"))
    name = str((manifest or {}).get("dataset") or MEDSEG_NAME)
    layout = Layout(root, "medseg", name, synthetic, [], manifest)
    tr = TRAIN_FILES
    for split, share in (("train", (0.0, TRAIN_FRACTION)), ("validation", (TRAIN_FRACTION, 1.0))):
        layout.entries.append(Entry(split, tr["image"], tr["lungs"], tr["lesions"], 0, share=share))
    images = _nifti_names(root / TEST_DIRS["image"])
    if not images:
        layout.problems.append(
            f"{TEST_DIRS['image']}/: no test volumes found; expected rp_im/1.nii.gz … "
            f"9.nii.gz (unpacked from rp_im.zip by `segbench data fetch`)."
        )
    for role in ("lesions", "lungs"):
        folder = TEST_DIRS[role]
        extra = sorted(set(_nifti_names(root / folder)) - set(images), key=natural_key)
        for n in extra:
            layout.problems.append(
                f"{folder}/{n}: has no matching test image {TEST_DIRS['image']}/{n}; "
                f"expected one mask per test image, with the same file name."
            )
    for v, n in enumerate(images):
        layout.entries.append(
            Entry(
                "test",
                f"{TEST_DIRS['image']}/{n}",
                f"{TEST_DIRS['lungs']}/{n}",
                f"{TEST_DIRS['lesions']}/{n}",
                v,
            )
        )
    return layout


def _toml_entry(split: str, i: int, raw: object, where_file: str) -> Entry:
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
    return Entry(split, raw["image"], raw.get("lungs"), raw.get("lesions"), i, slices, None, where)


def _nifti_folder_layout(root: Path, manifest: dict | None) -> Layout:
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
    layout = Layout(root, "nifti-folder", name, synthetic, [], manifest, intensity, window)
    for split in SPLITS:
        tables = cfg.get(split)
        if not isinstance(tables, list) or not tables:
            raise DataError(
                f"{path}: no [[{split}]] tables; expected at least one per split "
                f"(train, validation, test), each with an `image` path."
            )
        layout.entries += [_toml_entry(split, i, t, "dataset.toml") for i, t in enumerate(tables)]
    allow_outside = cfg.get("allow_outside_paths", False) is True
    for entry in layout.entries:
        for rel in (entry.image, entry.lungs, entry.lesions):
            if rel and not allow_outside and not _inside(root, rel):
                raise DataError(
                    f"{path}: {entry.where} names {rel}, which is outside the dataset folder; "
                    "expected paths inside it (or set allow_outside_paths = true)."
                )
    return layout


def _inside(root: Path, rel: str) -> bool:
    target = (root / rel).resolve()
    return target == root.resolve() or root.resolve() in target.parents


def read_layout(path: str | Path) -> Layout:
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


def fingerprint(layout: Layout) -> tuple:
    out = []
    for rel in [*layout.files(), "manifest.json"]:
        p = layout.root / rel
        st = p.stat() if p.exists() else None
        out.append((rel, st.st_size if st else -1, st.st_mtime_ns if st else -1))
    return (str(layout.root.resolve()), tuple(out))


def manifest_hash(layout: Layout) -> str:
    if layout.manifest and layout.manifest.get("files"):
        return files_hash(layout.manifest["files"])
    key = fingerprint(layout)
    if key not in _CONTENT_HASHES:
        files = {
            rel: sha256_file(layout.root / rel)
            for rel in layout.files()
            if (layout.root / rel).is_file()
        }
        _CONTENT_HASHES[key] = files_hash(files)
    return _CONTENT_HASHES[key]
