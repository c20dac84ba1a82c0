import pytest
import torch

import train.augment as augment_module
from train.augment import AUGMENTATIONS, SeedAugmentation, SeedAugmentationV1, augment, build_augmentation


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


@pytest.mark.parametrize("kind", [SeedAugmentation, SeedAugmentationV1])
def test_half_the_samples_are_left_alone_and_the_rest_are_changed(kind):
    image, mask = _batch(400, 32)
    torch.manual_seed(0)
    out, _ = augment(kind(), image, mask)
    unchanged = (out == image).flatten(1).all(dim=1).float().mean()
    # p 0.5 overall; an augmented sample stays the same only if no operation at all was drawn (1.25 %).
    assert 0.43 < float(unchanged) < 0.59


def test_image_and_mask_go_through_the_same_warp(monkeypatch):
    monkeypatch.setattr(augment_module, "MAX_EXTRA_OPS", 0)  # geometry only: flips, crop, affine
    image, mask = _batch(64)
    image[:, 1:] = mask  # a copy of the mask in the image
    torch.manual_seed(1)
    out_image, out_mask = augment(SeedAugmentationV1(p=1.0), image, mask)
    assert not torch.equal(out_mask, mask)
    assert torch.equal((out_image[:, 1:] > 0.5).float(), out_mask)


def test_every_extra_operation_changes_the_image_only():
    image, mask = _batch(8)
    aug = SeedAugmentationV1()
    torch.manual_seed(2)
    for op in (aug._sharpen, aug._contrast, aug._dropout):
        assert not torch.equal(op(image), image)
    assert not torch.equal(aug.spline(torch.cat((image, mask), 1)), torch.cat((image, mask), 1))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        build_augmentation("heavy")


# --- "seed": the seed's imgaug operators, one by one --------------------------------------------------------

def test_the_seeds_values_per_operator():
    """utils/img_mask_aug.py data_aug_multimod (imgaug 0.4), petct_config.py augmentation_prob."""
    m = augment_module
    assert (m.SEED_P, m.SOMETIMES_P, m.FLIP_P, m.CROP_MAX) == (0.5, 0.5, 0.5, 0.2)
    assert (m.AFFINE_SCALE, m.AFFINE_TRANSLATE, m.ROTATION_DEG, m.SHEAR_DEG) == ((0.75, 1.25), (-0.25, 0.25), 45, 16)
    assert m.AFFINE_ORDERS == (0, 1) and m.AFFINE_CVAL == (0, 255)
    assert m.AFFINE_MODES == ("constant", "edge", "symmetric", "reflect", "wrap")  # imgaug's mode=ia.ALL
    assert m.SOMEOF == (0, 4) and m.SHARPEN_LIGHTNESS == (0.75, 1.25) and m.CONTRAST == (0.6, 1.4)
    assert m.PIXEL_DROPOUT == (0.01, 0.05) and m.COARSE_DROPOUT == (0.0, 0.05) and m.COARSE_CELL == (0.02, 0.05)


@pytest.mark.parametrize("mode", ["edge", "symmetric", "reflect", "wrap"])
def test_border_modes_are_numpy_pads(mode):
    import numpy as np

    size = 7
    coords = torch.arange(-2 * size, 3 * size, dtype=torch.float32)
    folded = augment_module._fold(coords, size, mode).round().long()
    assert torch.equal(folded, torch.from_numpy(np.pad(np.arange(size), 2 * size, mode=mode)))


def _lo_hi(image):
    return image.amin(dim=(2, 3), keepdim=True), image.amax(dim=(2, 3), keepdim=True)


def test_contrast_scales_about_the_slice_minimum_with_one_factor_for_both_channels():
    image, mask = _batch(16)
    lo, hi = _lo_hi(image)
    torch.manual_seed(0)
    out, same_mask = SeedAugmentation._contrast(image, mask, lo, hi)
    factor = (out - lo) / (image - lo).clamp(min=1e-3)
    ratio = factor.flatten(2)[:, :, 100]
    assert torch.equal(same_mask, mask) and torch.allclose(ratio[:, 0], ratio[:, 1], atol=1e-4)
    assert ((ratio >= 0.6 - 1e-4) & (ratio <= 1.4 + 1e-4)).all()
    assert torch.allclose(out.amin(dim=(2, 3), keepdim=True), lo, atol=1e-5)  # the minimum stays put


def test_dropout_sets_the_same_pixels_of_both_channels_to_the_slice_minimum():
    image, mask = _batch(32)
    image[:, :, 0, 0] = -100.0  # both channels' minimum at one pixel, so that every other drop shows
    lo, hi = _lo_hi(image)
    torch.manual_seed(0)
    out, _ = SeedAugmentation._dropout(image, mask, lo, hi)
    dropped = out != image
    assert torch.equal(dropped[:, 0], dropped[:, 1])
    assert torch.equal(out[dropped], lo.expand_as(out)[dropped])
    assert 0 < float(dropped.float().mean()) < 0.1  # 1-5 % of pixels, or 0-5 % of cells of at least 3 x 3


def test_one_shear_for_x_and_y_and_the_fill_between_min_and_max(monkeypatch):
    monkeypatch.setattr(augment_module, "AFFINE_SCALE", (1.0, 1.0))
    monkeypatch.setattr(augment_module, "AFFINE_TRANSLATE", (0.0, 0.0))
    monkeypatch.setattr(augment_module, "ROTATION_DEG", 0.0)
    torch.manual_seed(0)
    xs, ys = SeedAugmentation._affine_coordinates(32, 48, 48, torch.device("cpu"))
    # A pure shear [[1, t], [t, 1]]: its inverse is symmetric, so dx/dv == dy/du, and nonzero.
    dx_dv, dy_du = xs[:, 1, 0] - xs[:, 0, 0], ys[:, 0, 1] - ys[:, 0, 0]
    assert torch.allclose(dx_dv, dy_du, atol=1e-4) and (dx_dv.abs() > 0).any()
    monkeypatch.setattr(augment_module, "AFFINE_SCALE", (0.5, 0.5))  # shrink: the border shows
    image, mask = _batch(64)
    lo, hi = _lo_hi(image)
    out, out_mask = SeedAugmentation()._affine(image, mask, lo, hi)
    corner = out[:, :, 0, 0]
    fraction = (corner - lo[:, :, 0, 0]) / (hi - lo)[:, :, 0, 0]
    assert ((fraction >= -1e-4) & (fraction <= 1 + 1e-4)).all()
    assert (out_mask[:, :, 0, 0] == 0).all() and set(out_mask.unique().tolist()) <= {0.0, 1.0}  # nearest, 0
    constant = torch.isclose(fraction[:, 0], fraction[:, 1], atol=1e-3)  # constant mode: one fill fraction
    assert 0 < int(constant.sum()) < 64  # the other modes (edge, reflect, ...) fill from the image


def test_operators_apply_in_a_random_order_per_sample():
    def times_two(image, mask, lo, hi):
        return image * 2, mask

    def plus_one(image, mask, lo, hi):
        return image + 1, mask

    image, mask = torch.zeros(400, 1, 2, 2), torch.zeros(400, 1, 2, 2)
    lo = hi = torch.zeros(400, 1, 1, 1)
    torch.manual_seed(0)
    out, _ = augment_module._in_random_order((times_two, plus_one), torch.ones(400, 2, dtype=torch.bool),
                                             image, mask, lo, hi)
    first_times = (out[:, 0, 0, 0] == 1).float().mean()  # 0 * 2 + 1 = 1; (0 + 1) * 2 = 2
    assert set(out.unique().tolist()) == {1.0, 2.0} and 0.4 < float(first_times) < 0.6
