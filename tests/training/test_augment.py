import torch

from worker.training.augment import AugmentConfig, augment_batch, config_for, random_affine


def test_identity_when_all_transforms_off():
    cfg = AugmentConfig(hflip=0, vflip=0, rotation_degrees=0, scale=(1, 1))
    x = torch.rand(3, 1, 16, 16)
    m = (torch.rand(3, 1, 16, 16) > 0.5).float()
    xa, ma = augment_batch(x, m, torch.Generator().manual_seed(0), cfg)
    assert torch.allclose(xa, x, atol=1e-5)
    assert torch.equal(ma, m)


def test_flip_only_is_exact_mirror():
    cfg = AugmentConfig(hflip=1, vflip=0, rotation_degrees=0, scale=(1, 1))
    x = torch.rand(2, 1, 8, 8)
    xa, _ = augment_batch(x, x.round(), torch.Generator().manual_seed(0), cfg)
    assert torch.allclose(xa, x.flip(-1), atol=1e-5)


def test_masks_stay_binary_and_padding_is_zero():
    x = torch.ones(16, 1, 32, 32)
    m = torch.ones(16, 1, 32, 32)
    xa, ma = augment_batch(x, m, torch.Generator().manual_seed(1))
    assert set(torch.unique(ma).tolist()) <= {0.0, 1.0}
    assert float(xa.min()) == 0.0  # zoomed-out / rotated corners are padded with 0
    assert ma.shape == m.shape


def test_parameters_in_paper_ranges_and_fresh_per_sample():
    theta = random_affine(2000, AugmentConfig(), torch.Generator().manual_seed(0))
    scale = 1 / theta[:, 0, :2].norm(dim=1)
    assert float(scale.min()) >= 0.5 - 1e-4 and float(scale.max()) <= 1.5 + 1e-4
    det_sign = torch.sign(torch.det(theta[:, :, :2]))
    assert 0.4 < float((det_sign < 0).float().mean()) < 0.6  # one flip in ~half the samples
    assert len(torch.unique(theta[:, 0, 0])) == 2000


def test_same_seed_same_augmentation():
    x = torch.rand(4, 1, 16, 16)
    a, _ = augment_batch(x, x.round(), torch.Generator().manual_seed(5))
    b, _ = augment_batch(x, x.round(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_authors_code_mode_pads_with_water():
    cfg = config_for("lung-segmentation", "authors-code")
    x = torch.zeros(8, 1, 16, 16)
    xa, _ = augment_batch(x, x, torch.Generator().manual_seed(0), cfg)
    assert float(xa.max()) == 1.0  # HU 0 normalised = (0 + 500) / 500
