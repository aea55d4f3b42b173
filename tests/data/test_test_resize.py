"""`test_resize = pil-antialias`: the test slices resized as the authors' PIL pipeline
did, checked against Pillow itself (antialiased bilinear on a float image; masks
resized bilinearly, then cast to bool)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from worker import data
from worker.data.preprocess import HU_MEAN, HU_STD, resize_mask_pil, resize_pil_antialias


def pil_image(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((size, size), Image.BILINEAR))


def pil_mask(m: np.ndarray, size: int) -> np.ndarray:
    return pil_image((m != 0).astype(np.float32), size).astype(bool)


@pytest.mark.parametrize("shape,size", [((630, 630), 512), ((79, 79), 64), ((100, 80), 64),
                                        ((32, 32), 64), ((50, 50), 50)])  # fmt: skip
def test_resize_matches_pillow(shape, size):
    rng = np.random.default_rng(sum(shape) + size)
    hu = rng.normal(-500, 400, shape).astype(np.float32)
    ours = resize_pil_antialias(hu[None], size)[0]
    np.testing.assert_allclose(ours, pil_image(hu, size), rtol=0, atol=1e-3)
    mask = (rng.random(shape) < 0.02).astype(np.uint8)
    mask[5:20, 10:30] = 2
    assert np.array_equal(resize_mask_pil(mask[None], size)[0].astype(bool), pil_mask(mask, size))


def read(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_loader_resizes_only_the_test_slices_the_pil_way(synthetic_data: Path):
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
    for k in range(hu.shape[-1]):
        expected = (pil_image(hu[..., k], 64) - HU_MEAN) / HU_STD
        np.testing.assert_allclose(pil.test.images[k], expected, rtol=0, atol=1e-5)
        assert np.array_equal(pil.test.masks[k].astype(bool), pil_mask(lesions[..., k], 64))
    # bilinear + bool grows the masks compared with nearest neighbour
    assert pil.test.masks.sum() > standard.test.masks.sum()
    with pytest.raises(data.DataError, match="Unknown test resize"):
        data.load_dataset(synthetic_data, "lesion-segmentation-a", 64, test_resize="lanczos")
