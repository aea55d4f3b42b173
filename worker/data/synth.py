"""GENERATED stand-in CT data in the MedSeg layout (no patient data; for tests and demos).

Each slice is drawn from a simple chest model in Hounsfield units: air outside a body
ellipse (-1000), subcutaneous fat (-100), soft tissue (+40), a spine (bone), a heart
(+35) and two air-filled lungs (-900 to -760 by patient, textured, denser at the back)
holding bright vessels (+40, blobs and short segments) and airways. Lesions sit inside
the lungs, mostly at the periphery: ground-glass (label 1, -680 to -380, patchy),
consolidation (label 2, about 0, dense cores) and, now and then, pleural effusion at
the back of the lung (label 3, about +15). Lungs are labelled 1 and 2.

No intensity threshold inside the lungs finds the lesions (the best one scores 30-40%
mean Dice on slices with lesions; tests/data/test_synth_difficulty.py): as on real CT,
normal lung reaches lesion HU through a dependent density gradient at the back,
partial volume with the chest wall at its border, vessels with blurred edges and
airway walls, while ground glass is patchy, from faint to dense, and consolidation
holds air bronchograms. Vessels inside the lungs and soft tissue outside them have the
same HU as consolidation. Training slices each
come from a different "patient" (as in the real set, which pools patients); test
volumes run from above the lungs to below them, so their first and last slices have no
lungs, and lesions cover a band of slices in the middle (about half of all slices).
Test volumes are written at round(image_size * 630 / 512) pixels, like the real 630 x
630 test volumes, so the resize path of the loader is exercised.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from worker.data.errors import DataError
from worker.data.layout import TEST_DIRS, TRAIN_FILES, TRAIN_FRACTION, sha256_file
from worker.data.preprocess import resize_bilinear

log = logging.getLogger(__name__)

DEFAULT_SLICES_PER_VOLUME = 92  # 9 x 92 = 828 slices, close to the real test set's 829
FIELD_OF_VIEW_MM = 360.0
TRAIN_LESION_SHARE = 0.6  # share of training slices with lesions


@dataclass
class _Patient:
    cx: float
    cy: float
    body_a: float
    body_b: float
    fat: float
    tissue: float
    sep: float
    lung_rx: float
    lung_ry: float
    a2: float
    a3: float
    phi: float
    lung_hu: float
    vessels: float
    z_top: float
    z_bottom: float
    consolidation: float
    ggo_hu: float
    dependent: float
    airways: float


def _patient(rng: np.random.Generator) -> _Patient:
    return _Patient(
        cx=rng.uniform(-0.04, 0.04),
        cy=rng.uniform(-0.04, 0.04),
        body_a=rng.uniform(0.78, 0.9),
        body_b=rng.uniform(0.55, 0.68),
        fat=rng.uniform(0.88, 0.94),
        tissue=rng.uniform(25, 55),
        sep=rng.uniform(0.42, 0.48),
        lung_rx=rng.uniform(0.33, 0.41),
        lung_ry=rng.uniform(0.62, 0.74),
        a2=rng.uniform(-0.08, 0.08),
        a3=rng.uniform(-0.05, 0.05),
        phi=rng.uniform(0, math.pi),
        lung_hu=rng.uniform(-900, -760),  # inspiration depth varies between patients
        vessels=rng.uniform(140, 240),
        z_top=rng.uniform(0.04, 0.12),
        z_bottom=rng.uniform(0.88, 0.96),
        consolidation=rng.uniform(0.1, 0.45),
        ggo_hu=rng.uniform(-680, -380),
        dependent=rng.uniform(220, 420),  # normal density at the back (lying supine)
        airways=rng.uniform(2, 6),
    )


def _profile(z: float, z0: float, z1: float) -> float:
    return math.sin(math.pi * (z - z0) / (z1 - z0)) if z0 < z < z1 else 0.0


def _span(coords: np.ndarray, centre: float, half: float) -> slice:
    lo, hi = np.searchsorted(coords, [centre - half, centre + half])
    return slice(int(lo), int(hi))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance-ish noise smooth over about size / cells pixels."""
    coarse = rng.standard_normal((cells + 2, cells + 2), dtype=np.float32)
    big = resize_bilinear(coarse, size + 2 * (size // cells))
    m = size // cells
    return big[m : m + size, m : m + size]


def _slice(
    rng: np.random.Generator,
    size: int,
    pt: _Patient,
    z: float,
    burden: float,
    effusion: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axial slice: (HU int16, lesion labels uint8, lung labels uint8), size x size."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    y, x = c[:, None], c[None, :]
    noise = rng.standard_normal((size, size), dtype=np.float32)
    hu = -1000 + 8 * noise
    r_body = ((x - pt.cx) / pt.body_a) ** 2 + ((y - pt.cy) / pt.body_b) ** 2
    body, inner = r_body < 1, r_body < pt.fat**2
    np.copyto(hu, -100 + 15 * noise, where=body)
    np.copyto(hu, pt.tissue + 12 * noise, where=inner)
    r_spine = ((x - pt.cx) ** 2 + (y - pt.cy - 0.72 * pt.body_b) ** 2) / 0.085**2
    spine = r_spine < 1
    np.copyto(hu, (r_spine > 0.6) * np.float32(550) + 350 + 50 * noise, where=spine)

    lung = np.zeros((size, size), np.uint8)
    radial = np.zeros((size, size), np.float32)  # 0 at a lung's centre, 1 at its border
    back = np.zeros((size, size), np.float32)  # sine of the angle: > 0 towards the back
    p = _profile(z, pt.z_top, pt.z_bottom) ** 0.5
    p_heart = _profile(z, 0.4, 1.05) ** 0.5
    heart = np.zeros((size, size), bool)
    if p_heart > 0:
        hx = (x - pt.cx - 0.12 * pt.body_a) / (0.3 * pt.body_a * p_heart)
        hy = (y - pt.cy - 0.12 * pt.body_b) / (0.32 * pt.body_b * p_heart)
        heart = hx**2 + hy**2 < 1
        np.copyto(hu, 35 + 15 * noise, where=heart)
    if p > 0:
        blocked = ~inner | heart | spine
        for label, side in ((1, -1.0), (2, 1.0)):
            cx, cy = pt.cx + side * pt.sep * pt.body_a, pt.cy - 0.06 * pt.body_b
            rx, ry = pt.lung_rx * pt.body_a * p, pt.lung_ry * pt.body_b * p
            box = (_span(c, cy, 1.25 * ry), _span(c, cx, 1.25 * rx))  # lung <= 1.2 radii
            dx, dy = (x[:, box[1]] - cx) / rx, (y[box[0], :] - cy) / ry
            rho = np.sqrt(dx * dx + dy * dy) + 1e-6
            cos, sin = dx / rho, dy / rho
            cos2, sin2 = cos * cos - sin * sin, 2 * cos * sin
            cos3 = (4 * cos * cos - 3) * cos
            edge = 1 + pt.a2 * (cos2 * math.cos(pt.phi) - sin2 * math.sin(pt.phi))
            edge += pt.a3 * side * cos3
            edge += 0.06 * sin - 0.2 * np.maximum(0, -side * cos) ** 2  # flat medial side
            inside = (rho < edge) & ~blocked[box]
            lung[box][inside] = label
            np.copyto(radial[box], rho / edge, where=inside)
            np.copyto(back[box], sin, where=inside)
    lungs = lung > 0
    lesion = np.zeros((size, size), np.uint8)
    if not lungs.any():
        return _hu(hu), lesion, lung

    texture = _smooth_noise(rng, size, 24)
    # Normal lung is not one level: patient, texture, a dependent (posterior) density
    # gradient, partial volume with the chest wall at the border, vessels and airway
    # walls all reach the HU of lesions, as on real CT.
    dependent = pt.dependent * np.clip(back * radial, 0, 1) ** 1.5
    parenchyma = pt.lung_hu + 55 * texture + dependent + 18 * noise
    np.copyto(hu, parenchyma, where=lungs)
    border = np.clip((radial - 0.9) / 0.1, 0, 1) * 0.8
    np.copyto(hu, hu * (1 - border) + pt.tissue * border, where=lungs & (border > 0))
    _airways(rng, hu, lung, pt.airways)
    vessel = _vessels(rng, lungs, pt.vessels)
    dense = np.zeros((size, size), bool)
    if burden > 0:
        score = _smooth_noise(rng, size, 10) + 1.5 * radial**2 + 0.5 * np.clip(back, 0, 1)
        values = score[lungs]
        t_ggo = np.quantile(values, 1 - burden)
        t_cons = np.quantile(values, 1 - burden * pt.consolidation)
        ggo, dense = lungs & (score > t_ggo), lungs & (score > t_cons)
        # Ground glass is patchy (crazy paving): its opacity varies from faint, close
        # to the lung around it, to dense, on a grain finer than the lesion.
        ramp = np.clip((score - t_ggo) / (0.5 * values.std() + 1e-6), 0, 1)
        grain = np.clip(0.5 + 0.6 * _smooth_noise(rng, size, max(4, size // 6)), 0, 1)
        alpha = (0.05 + 0.95 * ramp) * (0.1 + 0.9 * grain)
        np.copyto(hu, hu * (1 - alpha) + (pt.ggo_hu + 50 * noise) * alpha, where=ggo)
        np.copyto(hu, 5 + 30 * noise, where=dense)
        # air bronchograms: air-filled airways through consolidation, labelled lesion
        bronchi = dense & (np.abs(_smooth_noise(rng, size, max(4, size // 8))) < 0.12)
        np.copyto(hu, -880 + 40 * noise, where=bronchi)
        lesion[ggo] = 1
        lesion[dense] = 2
    if effusion > 0:
        fluid = lungs & (radial > 1 - effusion) & (back > 0.5)
        np.copyto(hu, 15 + 10 * noise, where=fluid)
        lesion[fluid] = 3
        dense |= fluid
    # vessels with partial volume: their edges pass through every lesion HU
    np.copyto(hu, hu * (1 - vessel) + (40 + 25 * noise) * vessel, where=(vessel > 0) & ~dense)
    return _hu(hu), lesion, lung


def _airways(rng: np.random.Generator, hu: np.ndarray, lung: np.ndarray, per_lung: float) -> None:
    """Airways seen end-on near each hilum: a dark lumen in a soft-tissue wall."""
    size = hu.shape[0]
    c = np.arange(size, dtype=np.float32)
    for label in (1, 2):
        ys, xs = np.nonzero(lung == label)
        if len(ys) < 20:
            continue
        medial = xs > xs.mean() if label == 1 else xs < xs.mean()
        for _ in range(rng.poisson(per_lung)):
            i = rng.choice(np.flatnonzero(medial)) if medial.any() else rng.integers(len(ys))
            r = rng.uniform(0.008, 0.02) * size + 0.6
            box = (_span(c, ys[i], 2 * r), _span(c, xs[i], 2 * r))
            d = np.hypot(c[box[0], None] - ys[i], c[None, box[1]] - xs[i])
            wall = np.clip(1 - np.abs(d - r) / (0.45 * r), 0, 1)
            inside = lung[box] == label
            part = hu[box]
            np.copyto(part, -950.0, where=inside & (d < r * 0.7))
            np.copyto(part, part * (1 - wall) + 20 * wall, where=inside & (wall > 0))


def _vessels(rng: np.random.Generator, lungs: np.ndarray, per_image: float) -> np.ndarray:
    """How much of each pixel is vessel (0..1, float32): blobs (vessels cut across) and
    short segments (vessels in plane), blurred as CT blurs them."""
    size = lungs.shape[0]
    sigma = max(0.55, size * 0.004)
    idx = np.flatnonzero(lungs)
    # Fewer vessels when they cannot shrink with the image (tiny sizes).
    scale = min(1.0, (size * 0.004 / sigma) ** 2)
    k = rng.poisson(per_image * len(idx) / (0.15 * size * size) * scale)
    if k == 0:
        return np.zeros(lungs.shape, np.float32)
    field = np.zeros((size, size), np.float32)
    ys, xs = np.divmod(rng.choice(idx, k), size)
    field[ys, xs] = rng.uniform(0.4, 2.5, k)
    segments = k // 3  # a third of the vessels run in the slice plane
    if segments:
        n = max(4, size // 24)
        angle = rng.uniform(0, 2 * math.pi, segments)
        length = rng.uniform(0.02, 0.08, segments) * size
        t = np.linspace(0, 1, n, dtype=np.float32)[None, :] * length[:, None]
        py = np.clip(ys[:segments, None] + np.sin(angle)[:, None] * t, 0, size - 1)
        px = np.clip(xs[:segments, None] + np.cos(angle)[:, None] * t, 0, size - 1)
        np.add.at(field, (np.rint(py).astype(np.intp), np.rint(px).astype(np.intp)), 0.5)
    field = gaussian_filter(field, sigma) * (2 * math.pi * sigma**2)
    return np.where(lungs, np.clip(field / 0.6, 0, 1), 0).astype(np.float32)


def _hu(hu: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(hu, -1024, 3000)).astype(np.int16)


def _write(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    img = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
    img.header.set_xyzt_units("mm")
    # mtime=0 and no file name in the header: same seed, same bytes, same manifest.
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def _volume(slices: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    return tuple(np.stack([s[k] for s in slices], axis=-1) for k in range(3))


def _check_target(root: Path) -> None:
    manifest = root / "manifest.json"
    if manifest.exists():
        try:
            synthetic = json.loads(manifest.read_text()).get("synthetic")
        except (OSError, ValueError, AttributeError):
            synthetic = None
        if synthetic is not True:
            raise DataError(
                f"{root} holds data that synth did not write (manifest.json is not marked "
                f"synthetic); expected an empty folder or earlier synthetic data."
            )
    elif (root / TRAIN_FILES["image"]).exists() or (root / "dataset.toml").exists():
        raise DataError(
            f"{root} already holds a dataset without a synthetic manifest.json; expected "
            f"an empty folder or earlier synthetic data."
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
    """Write GENERATED stand-in CT data in exactly the MedSeg layout; returns the folder.

    Same arguments, same bytes. Dtypes: images int16 HU, masks uint8 labels.
    """
    spv = DEFAULT_SLICES_PER_VOLUME if slices_per_volume is None else slices_per_volume
    for name, value, low in (
        ("image size", image_size, 16),
        ("train slices", train_slices, 2),
        ("test volumes", test_volumes, 1),
        ("slices per volume", spv, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise DataError(f"{name} must be an integer of at least {low}, got {value!r}.")
    root = Path(path)
    _check_target(root)
    test_size = round(image_size * 630 / 512)
    streams = [
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(1 + test_volumes)
    ]
    tmp = root / ".synth-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in TEST_DIRS.values():
        (tmp / folder).mkdir(parents=True)

    rng = streams[0]
    # Exactly TRAIN_LESION_SHARE of the train part and of the validation part have
    # lesions, so both splits have positives even when tiny.
    n_train = round(train_slices * TRAIN_FRACTION)
    sick = np.zeros(train_slices, bool)
    for lo, hi in ((0, n_train), (n_train, train_slices)):
        chosen = rng.permutation(hi - lo)[: max(1, round((hi - lo) * TRAIN_LESION_SHARE))]
        sick[lo + chosen] = True
    train = []
    for i in range(train_slices):
        burden = rng.uniform(0.04, 0.35) if sick[i] else 0.0
        effusion = rng.uniform(0.15, 0.3) if burden and rng.random() < 0.08 else 0.0
        train.append(
            _slice(rng, image_size, _patient(rng), rng.uniform(0.25, 0.8), burden, effusion)
        )
    hu, lesion, lung = _volume(train)
    spacing = (FIELD_OF_VIEW_MM / image_size, FIELD_OF_VIEW_MM / image_size, 5.0)
    for key, array in (("image", hu), ("lesions", lesion), ("lungs", lung)):
        _write(tmp / TRAIN_FILES[key], array, spacing)

    for v in range(test_volumes):
        rng = streams[1 + v]
        pt = _patient(rng)
        centre, half, peak = rng.uniform(0.4, 0.65), rng.uniform(0.2, 0.32), rng.uniform(0.12, 0.4)
        effusion = rng.uniform(0.15, 0.3) if rng.random() < 0.3 else 0.0
        slices = []
        for i in range(spv):
            z = (i + 0.5) / spv
            burden = peak * max(0.0, 1 - ((z - centre) / half) ** 2)
            burden = burden if burden >= 0.01 else 0.0
            fluid = effusion if burden and z > 0.6 else 0.0
            slices.append(_slice(rng, test_size, pt, z, burden, fluid))
        hu, lesion, lung = _volume(slices)
        thickness = float(rng.choice([1.0, 2.5, 5.0]))
        spacing = (FIELD_OF_VIEW_MM / test_size, FIELD_OF_VIEW_MM / test_size, thickness)
        for key, array in (("image", hu), ("lesions", lesion), ("lungs", lung)):
            _write(tmp / TEST_DIRS[key] / f"{v + 1}.nii.gz", array, spacing)

    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*.nii.gz"))}
    manifest = {
        "dataset": "medseg-synthetic",
        "synthetic": True,
        "generator": "segbench data synth",
        "note": "GENERATED stand-in data, not CT scans of patients.",
        "parameters": {
            "image_size": image_size,
            "test_size": test_size,
            "train_slices": train_slices,
            "test_volumes": test_volumes,
            "slices_per_volume": spv,
            "seed": seed,
        },
        "files": files,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for name in TRAIN_FILES.values():
        os.replace(tmp / name, root / name)
    for folder in TEST_DIRS.values():
        shutil.rmtree(root / folder, ignore_errors=True)
        os.replace(tmp / folder, root / folder)
    os.replace(tmp / "manifest.json", root / "manifest.json")
    tmp.rmdir()
    log.info("wrote synthetic data to %s (%d files)", root, len(files))
    return root
