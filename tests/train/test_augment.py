import pytest
import torch

import train.augment as augment_module
from train.augment import AUGMENTATIONS, SeedAugmentation, augment, build_augmentation


def _batch(count: int = 64, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(count, 1, size, size)
    mask[:, :, 10:30, 14:26] = 1.0
    image = torch.randn(count, 2, size, size, generator=g)
    return image, mask


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_shapes_kept_masks_binary_and_draws_repeat_with_the_seed(kind):
    image, mask = _batch(16)
    aug = build_augmentation(kind)
    torch.manual_seed(3)
    a_image, a_mask = augment(aug, image, mask)
    torch.manual_seed(3)
    b_image, b_mask = augment(aug, image, mask)
    assert a_image.shape == image.shape and a_mask.shape == mask.shape
    assert set(a_mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a_image, b_image) and torch.equal(a_mask, b_mask)
    assert not torch.equal(a_image, image)


def test_half_the_samples_are_left_alone_and_the_rest_are_changed():
    image, mask = _batch(400, 32)
    torch.manual_seed(0)
    out, _ = augment(SeedAugmentation(), image, mask)
    unchanged = (out == image).flatten(1).all(dim=1).float().mean()
    # p 0.5 overall; an augmented sample stays the same only if no operation at all was drawn (1.25 %).
    assert 0.43 < float(unchanged) < 0.59


def test_image_and_mask_go_through_the_same_warp(monkeypatch):
    monkeypatch.setattr(augment_module, "MAX_EXTRA_OPS", 0)  # geometry only: flips, crop, affine
    image, mask = _batch(64)
    image[:, 1:] = mask  # a copy of the mask in the image
    torch.manual_seed(1)
    out_image, out_mask = augment(SeedAugmentation(p=1.0), image, mask)
    assert not torch.equal(out_mask, mask)
    assert torch.equal((out_image[:, 1:] > 0.5).float(), out_mask)


def test_every_extra_operation_changes_the_image_only():
    image, mask = _batch(8)
    aug = SeedAugmentation()
    torch.manual_seed(2)
    for op in (aug._sharpen, aug._contrast, aug._dropout):
        assert not torch.equal(op(image), image)
    assert not torch.equal(aug.spline(torch.cat((image, mask), 1)), torch.cat((image, mask), 1))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        build_augmentation("heavy")
