"""Integrity checks of a dataset folder: every volume read once and checked.

Each file is checked for being present, readable, a whole gzip stream (CRC and
length), a NIfTI volume, listed in manifest.json with the same sha256, 3-D, of the
same shape as its image (masks), with finite intensities (images) and valid labels
(masks). scan() also preprocesses the volumes when given an image size; verify()
lists the problems of a folder.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from worker.data.errors import DataError
from worker.data.layout import Layout, natural_key, read_layout
from worker.data.preprocess import (
    HU_MEAN,
    HU_STD,
    resize_bilinear,
    resize_mask_pil,
    resize_nearest,
    resize_pil_antialias,
    to_hu,
)

LABELS = {"lesions": frozenset({0, 1, 2, 3}), "lungs": frozenset({0, 1, 2})}


def nifti_from_bytes(data: bytes):
    try:
        return nib.Nifti1Image.from_bytes(data)
    except Exception:
        return nib.Nifti2Image.from_bytes(data)


def slices_of(arr: np.ndarray) -> np.ndarray:
    """(H, W, N) volume -> (N, H, W) view of the slices, volume[..., i] unchanged."""
    return np.moveaxis(arr, -1, 0)


def _read(layout: Layout, rel: str, role: str, problems: list[str]):
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
        return nifti_from_bytes(data), None
    except Exception as exc:  # nibabel raises many types for broken headers
        return None, f"{rel}: not a readable NIfTI volume ({exc}); {remedy}."


def _image_problem(rel: str, arr: np.ndarray) -> str | None:
    if not np.issubdtype(arr.dtype, np.number):
        return f"{rel}: voxel type {arr.dtype} is not numeric; expected intensities."
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            return f"{rel}: {bad} voxel(s) are NaN or infinite; expected finite intensities."
    return None


def _label_problem(rel: str, arr: np.ndarray, role: str, layout: Layout) -> str | None:
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


def _resize_mask(labels, binary: np.ndarray, rows: slice, size: int, pil: bool) -> np.ndarray:
    """Slices ``rows`` of a mask resized to ``size``: nearest on the 0/1 mask, or (pil) as
    the authors' 2020 code did, on the stored labels (preprocess.resize_mask_pil)."""
    if pil:
        return resize_mask_pil(slices_of(labels)[rows], size)
    return resize_nearest(binary[rows], size)


def scan(
    layout: Layout, image_size: int | None, test_resize: str = "standard"
) -> tuple[list[str], dict]:
    """Check every file of a layout once; with image_size, also preprocess.

    test_resize (Protocol.test_resize): ``standard`` resizes every slice bilinearly
    (masks nearest); ``pil-antialias`` resizes the test slices as the authors' PIL
    pipeline did (worker.data.preprocess.resize_pil_antialias / resize_mask_pil).

    Returns (problems, volumes) where volumes = {"parts": [per entry {"image", "lungs",
    "lesions", "volume", "slice"}], "spacing": {image path: (mm, mm, mm)}}.
    """
    problems = list(layout.problems)
    listed = (layout.manifest or {}).get("files") or {}
    for rel in sorted(listed, key=natural_key):
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
        hu = slices_of(to_hu(image, layout.intensity, layout.window))
        del image
        binary = {
            r: None if m is None else slices_of((m != 0).view(np.uint8)) for r, m in masks.items()
        }
        for i, (start, stop) in ranges.items():
            k = stop - start
            empty = np.zeros((k, image_size, image_size), np.uint8)
            pil = test_resize == "pil-antialias" and layout.entries[i].split == "test"
            resize_image = resize_pil_antialias if pil else resize_bilinear
            image = resize_image(hu[start:stop], image_size)
            image -= HU_MEAN  # in place: the paper's normalisation without a copy
            image /= HU_STD
            parts[i] = {
                "image": image,
                **{
                    r: empty
                    if b is None
                    else _resize_mask(masks[r], b, slice(start, stop), image_size, pil)
                    for r, b in binary.items()
                },
                "volume": np.full(k, layout.entries[i].volume, np.int64),
                "slice": np.arange(start, stop, dtype=np.int64),
            }
    return list(dict.fromkeys(problems)), {"parts": parts, "spacing": spacing}


def verify(path: str | Path) -> list[str]:
    """Problems that make a dataset folder unusable, one sentence each ([] = usable)."""
    try:
        layout = read_layout(path)
    except DataError as exc:
        return [str(exc)]
    problems, _ = scan(layout, image_size=None)
    return problems
