"""`test_resize = pil-antialias` (the authors-2020 preset): the test slices resized as
the authors' 2020 code did, checked against a literal transcription of that code's
lines (torchvision.transforms.functional on PIL images, as its `preprocess()` called
them): the image as a float ("F") PIL image resized bilinearly, each label mask as an
8-bit ("L") PIL image of the stored labels resized bilinearly, then `to_tensor(...)
.bool()`."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import functional as tf

from db.presets import resolve
from tests.support.mask_oracle import MaskOracle
from worker import data
from worker.data.preprocess import HU_MEAN, HU_STD, resize_mask_pil, resize_pil_antialias
from worker.training.evaluate import evaluate


def authors_2020_image(image: np.ndarray, size: int) -> np.ndarray:
    """The 2020 code's lines for the image: to_pil_image(float32) -> resize. The mode "F"
    is what torchvision <= 0.7 chose for a float32 array; today's to_pil_image multiplies
    floats by 255 and casts them to uint8 unless told "F"."""
    image = tf.to_pil_image(image.astype("float32"), mode="F")
    return np.asarray(tf.resize(image, [size, size]))


def authors_2020_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """The 2020 code's lines for a label mask, literally:
    to_pil_image(mask.astype('uint8')) -> resize([size, size]) -> to_tensor -> bool."""
    m = tf.to_pil_image(mask.astype("uint8"))
    m = tf.resize(m, [size, size])
    return tf.to_tensor(m).bool()[0].numpy()


def binary_float_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """What segbench did before: the 0/1 mask as a float image, resized, any weight > 0."""
    m = Image.fromarray((mask != 0).astype(np.float32)).resize((size, size), Image.BILINEAR)
    return np.asarray(m) > 0


def multi_label_mask(rng: np.random.Generator, shape: tuple[int, int], top: int) -> np.ndarray:
    """Ellipses of labels 1..top (overlapping, the last drawn wins) and scattered pixels,
    like lesion (top 3) or lung (top 2) masks as stored, as float64 (nibabel's get_fdata)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros(shape)
    for _ in range(8):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, max(h / 4, 2)), rng.uniform(1, max(w / 4, 2))
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.integers(1, top + 1)
    speckle = rng.random(shape) < 0.01
    mask[speckle] = rng.integers(1, top + 1, int(speckle.sum()))
    return mask


SIZES = [((630, 630), 512), ((79, 79), 64), ((100, 80), 64), ((9, 7), 5), ((32, 32), 64),
         ((50, 50), 50)]  # fmt: skip


@pytest.mark.parametrize("shape,size", SIZES)
@pytest.mark.parametrize("top", [3, 2])
def test_masks_match_the_2020_code_on_multi_label_masks(shape, size, top):
    rng = np.random.default_rng(sum(shape) + size + top)
    masks = np.stack([multi_label_mask(rng, shape, top) for _ in range(3)])
    ours = resize_mask_pil(masks, size)
    assert ours.dtype == np.uint8 and ours.shape == (3, size, size)
    for k in range(3):
        assert np.array_equal(ours[k].astype(bool), authors_2020_mask(masks[k], size))


def test_pil_rounds_after_each_pass():
    """By hand, 4 -> 2 px: Pillow's antialiased bilinear gives output pixel 0 the input
    pixels 0, 1, 2 with weights 3/7, 3/7, 1/7 along each axis, columns first, and
    rounds to an integer after each pass."""
    mask = np.zeros((4, 4))
    mask[0, 0] = 1  # pass 1: 3/7 -> 0: gone (binarising first kept it: 9/49 > 0)
    assert not resize_mask_pil(mask, 2).any() and binary_float_mask(mask, 2)[0, 0]
    mask[0, 0] = 3  # pass 1: 9/7 -> 1, pass 2: 3/7 -> 0: gone (unrounded: 27/49 >= 0.5)
    assert not resize_mask_pil(mask, 2).any()
    mask[1, 0] = 3  # two rows: pass 1: 1 and 1, pass 2: 6/7 -> 1: kept
    assert resize_mask_pil(mask, 2)[0, 0] == 1
    mask[:2, 0] = 1  # the same pair of label 1: pass 1: 3/7 -> 0: gone
    assert not resize_mask_pil(mask, 2).any()
    for labels in (1, 3):
        mask[:2, 0] = labels
        assert np.array_equal(resize_mask_pil(mask, 2).astype(bool), authors_2020_mask(mask, 2))


def test_binarising_first_grew_the_masks_at_630_to_512():
    """The old path kept every pixel with any positive weight: larger masks than the
    2020 code's on the same labels (here generated lesion-like labels)."""
    rng = np.random.default_rng(1)
    masks = np.stack([multi_label_mask(rng, (630, 630), 3) for _ in range(2)])
    authors = resize_mask_pil(masks, 512).sum()
    old = sum(binary_float_mask(m, 512).sum() for m in masks)
    assert old > authors * 1.01


def test_images_match_the_2020_code():
    rng = np.random.default_rng(0)
    for shape, size in SIZES:
        hu = rng.normal(-500, 400, shape).astype(np.float32)
        ours = resize_pil_antialias(hu[None], size)[0]
        np.testing.assert_allclose(ours, authors_2020_image(hu, size), rtol=0, atol=1e-3)


def read(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_loader_resizes_only_the_test_slices_the_2020_way(synthetic_data: Path):
    standard = data.load_dataset(synthetic_data, "lesion-segmentation-a", 64, cache=False)
    pil = data.load_dataset(
        synthetic_data, "lesion-segmentation-a", 64, cache=False, test_resize="pil-antialias"
    )
    for split in ("train", "validation"):
        assert np.array_equal(getattr(pil, split).images, getattr(standard, split).images)
        assert np.array_equal(getattr(pil, split).masks, getattr(standard, split).masks)
    first = sorted((synthetic_data / "rp_im").iterdir())[0]
    hu = read(first).astype(np.float32)  # (79, 79, slices), 79 px like 630 for 512
    lesions = read(synthetic_data / "rp_msk" / first.name)
    assert set(np.unique(lesions)) > {0, 1}  # multi-label, as stored
    for k in range(hu.shape[-1]):
        expected = (authors_2020_image(hu[..., k], 64) - HU_MEAN) / HU_STD
        np.testing.assert_allclose(pil.test.images[k], expected, rtol=0, atol=1e-5)
        assert np.array_equal(
            pil.test.masks[k].astype(bool), authors_2020_mask(lesions[..., k], 64)
        )
    with pytest.raises(data.DataError, match="Unknown test resize"):
        data.load_dataset(synthetic_data, "lesion-segmentation-a", 64, test_resize="lanczos")


def test_the_authors_resized_ground_truth_scores_100_under_the_preset(synthetic_data: Path):
    p = resolve("authors-2020", image_size=64)
    assert (p.test_resize, p.metric_mode) == ("pil-antialias", "authors-2020")
    ds = data.load_dataset(synthetic_data, "lesion-segmentation-a", 64, test_resize=p.test_resize)
    truth = []
    for path in sorted((synthetic_data / "rp_msk").iterdir()):
        labels = read(path)
        truth += [authors_2020_mask(labels[..., k], 64) for k in range(labels.shape[-1])]
    oracle = MaskOracle(ds.test.images, np.stack(truth))
    result, _ = evaluate(
        oracle, ds.test, metric_mode=p.metric_mode, spacing=ds.test_spacing,
        nsd_tolerance_mm=p.nsd_tolerance_mm, boundary_mode=p.boundary_mode,
    )  # fmt: skip
    # the 2020 metrics add eps = 1e-6 to each denominator: 2TP / (2TP + 1e-6)
    assert result.dice == pytest.approx(100.0, abs=1e-4)
    assert result.sensitivity == pytest.approx(100.0, abs=1e-4)
    assert all(s.fp == 0 and s.fn == 0 for s in result.slices)
    assert (result.nsd, result.hd95) == (100.0, 0.0)
    standard, _ = evaluate(oracle, ds.test, metric_mode="standard")
    assert standard.dice == 100.0
