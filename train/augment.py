"""Batch augmentation on the training device (kornia): image and mask go through the same warp.

``seed`` rebuilds the seed code's imgaug pipeline; ``light`` is this project's earlier, smaller set (what
a training config's ``"augment": true`` meant, kept so that such configs and runs resume unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

AUGMENTATIONS = ("seed", "light")

# The seed code's values (its imgaug pipeline, utils/img_mask_aug.py data_aug_multimod, applied to a slice
# with p 0.5): crop 0-20 % of each side (resized back); affine scale 0.75-1.25 per axis, translation +-25 %,
# rotation +-45 deg, shear +-16 deg; then 0 to 4 of sharpen (alpha 0-1, lightness 0.75-1.25), piecewise
# affine (scale 0.01-0.05, itself with p 0.5), linear contrast 0.6-1.4 (per channel for half the samples),
# and one of dropout (1-5 % of the pixels, per channel for half the samples) or coarse dropout (0-5 % of the
# cells of a grid 2-5 % of the image's size, per channel for a fifth of the samples).
CROP_MAX = 0.2
ROTATION_DEG = 45.0
SHARPEN_LIGHTNESS = (0.75, 1.25)
CONTRAST = (0.6, 1.4)
CONTRAST_PER_CHANNEL_P = 0.5
PIXEL_DROPOUT = (0.01, 0.05)
PIXEL_DROPOUT_PER_CHANNEL_P = 0.5
COARSE_DROPOUT = (0.0, 0.05)
COARSE_CELL = (0.02, 0.05)
COARSE_DROPOUT_PER_CHANNEL_P = 0.2
# imgaug's piecewise affine moves its grid points by up to about 5 % of the image; kornia's thin-plate
# spline moves its control points by up to ``scale`` in coordinates from -1 to 1 (a width of 2).
TPS_SCALE = 0.1
MAX_EXTRA_OPS = 4


class SeedAugmentation(torch.nn.Module):
    """The seed's augmentation, per sample. With p 0.5 a sample is left as it is; otherwise, each with p 0.5:
    horizontal flip, vertical flip, crop 0-20 % of each side (resized back), affine (scale 0.75-1.25 per
    axis, translation +-25 %, rotation +-45 deg, shear +-16 deg); then 0 to 4 (uniformly many, distinct, in
    this order) of: sharpen, piecewise affine (kornia's thin-plate spline, with p 0.5), linear contrast
    0.6-1.4 (about 0: the inputs are normalised), dropout (pixels, or coarse cells). Warps are bilinear with
    zero padding, on image and mask together; intensity changes touch the image only. Every draw comes from
    torch's global generator, so that a seed fixes them all.
    """

    def __init__(self, p: float = 0.5, op_p: float = 0.5):
        super().__init__()
        import kornia.augmentation as K

        self.p, self.op_p = p, op_p
        self.flips = torch.nn.ModuleList([K.RandomHorizontalFlip(p=op_p), K.RandomVerticalFlip(p=op_p)])
        self.affine = K.RandomAffine(degrees=ROTATION_DEG, translate=(0.25, 0.25), scale=(0.75, 1.25, 0.75, 1.25),
                                     shear=(-16.0, 16.0, -16.0, 16.0), padding_mode="zeros", p=op_p)
        self.spline = K.RandomThinPlateSpline(scale=TPS_SCALE, p=op_p)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = image.clone(), mask.clone()
        chosen = torch.nonzero(torch.rand(image.shape[0]) < self.p).to(image.device).flatten()
        if chosen.numel():
            image[chosen], mask[chosen] = self._augment(image[chosen], mask[chosen])
        return image, mask

    def _augment(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = image.shape[1]
        both = torch.cat((image, mask), dim=1)  # one warp for image and mask
        for flip in self.flips:
            both = flip(both)
        both = self._crop(both)
        both = self.affine(both)
        # 0 to MAX_EXTRA_OPS distinct extra operations per sample, applied in a fixed order.
        count = both.shape[0]
        how_many = torch.randint(0, MAX_EXTRA_OPS + 1, (count,))
        ranks = torch.rand(count, 4).argsort(dim=1).argsort(dim=1)  # a random order of the four
        takes = (ranks < how_many[:, None]).to(both.device)
        both = self._where(takes[:, 0], both, lambda x: torch.cat((self._sharpen(x[:, :channels]),
                                                                    x[:, channels:]), dim=1))
        both = self._where(takes[:, 1], both, self.spline)
        image, mask = both[:, :channels], both[:, channels:]
        image = self._where(takes[:, 2], image, self._contrast)
        image = self._where(takes[:, 3], image, self._dropout)
        return image, mask

    @staticmethod
    def _where(take: torch.Tensor, x: torch.Tensor, op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``op`` applied to the samples where ``take`` is true."""
        index = torch.nonzero(take).flatten()
        if index.numel():
            x = x.clone()
            x[index] = op(x[index])
        return x

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """With p op_p, each side cropped by 0-20 % of the size and the rest resized back."""
        from kornia.geometry.transform import crop_and_resize

        count, _, height, width = x.shape
        sides = torch.rand(count, 4) * CROP_MAX * (torch.rand(count, 1) < self.op_p)
        top, bottom = sides[:, 0] * (height - 1), (1 - sides[:, 1]) * (height - 1)
        left, right = sides[:, 2] * (width - 1), (1 - sides[:, 3]) * (width - 1)
        boxes = torch.stack([torch.stack(corner, dim=1) for corner in
                             ((left, top), (right, top), (right, bottom), (left, bottom))], dim=1)
        return crop_and_resize(x, boxes.to(x), (height, width), mode="bilinear", align_corners=True)

    @staticmethod
    def _sharpen(x: torch.Tensor) -> torch.Tensor:
        """imgaug's Sharpen: kernel alpha x [[-1]*3, [-1, 8 + lightness, -1], [-1]*3] + (1 - alpha) x identity."""
        from kornia.filters import filter2d

        count = x.shape[0]
        alpha = torch.rand(count, 1, 1)
        lightness = torch.empty(count, 1, 1).uniform_(*SHARPEN_LIGHTNESS)
        effect = -torch.ones(count, 3, 3)
        effect[:, 1, 1] = 8 + lightness[:, 0, 0]
        identity = torch.zeros(3, 3)
        identity[1, 1] = 1
        kernel = alpha * effect + (1 - alpha) * identity
        return filter2d(x, kernel.to(x), border_type="reflect")

    @staticmethod
    def _contrast(x: torch.Tensor) -> torch.Tensor:
        """imgaug's LinearContrast about 0: one factor per sample, or per channel for some samples."""
        count, channels = x.shape[:2]
        factor = torch.empty(count, channels, 1, 1).uniform_(*CONTRAST)
        shared = torch.rand(count, 1, 1, 1) >= CONTRAST_PER_CHANNEL_P
        return x * torch.where(shared, factor[:, :1], factor).to(x)

    @staticmethod
    def _dropout(x: torch.Tensor) -> torch.Tensor:
        """imgaug's Dropout (pixels) for half of the samples, CoarseDropout (cells of a coarse grid, enlarged
        to the image) for the other half; per channel for some samples, else one mask for all channels."""
        count, channels, height, width = x.shape
        keep = torch.empty(count, channels, height, width)
        for k in range(count):
            if float(torch.rand(())) < 0.5:
                fraction = float(torch.empty(()).uniform_(*COARSE_DROPOUT))
                cell = float(torch.empty(()).uniform_(*COARSE_CELL))
                grid = (max(round(height * cell), 1), max(round(width * cell), 1))
                per_channel_p = COARSE_DROPOUT_PER_CHANNEL_P
            else:
                fraction = float(torch.empty(()).uniform_(*PIXEL_DROPOUT))
                grid, per_channel_p = (height, width), PIXEL_DROPOUT_PER_CHANNEL_P
            planes = channels if float(torch.rand(())) < per_channel_p else 1
            kept = (torch.rand(1, planes, *grid) >= fraction).float()
            keep[k] = torch.nn.functional.interpolate(kept, size=(height, width), mode="nearest")[0]
        return x * keep.to(x)


def _light() -> torch.nn.Module:
    """Flips, affine (scale 0.75-1.25, rotation +-45 deg, translation +-10 %, shear +-10 deg), contrast."""
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomAffine(degrees=45.0, translate=(0.1, 0.1), scale=(0.75, 1.25), shear=10.0, p=0.7,
                       padding_mode="reflection"),
        # Intensity changes apply to the image only; normalised inputs are scaled around 0.
        K.RandomContrast(contrast=(0.8, 1.2), clip_output=False, p=0.5),
        data_keys=["input", "mask"],
    )


def build_augmentation(kind: str = "seed") -> torch.nn.Module:
    """The augmentation called ``kind`` (one of AUGMENTATIONS); call it through ``augment``."""
    if kind == "seed":
        return SeedAugmentation()
    if kind == "light":
        return _light()
    raise ValueError(f"augmentation must be one of {list(AUGMENTATIONS)}, got {kind!r}")


def augment(aug: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) images and (N, 1, H, W) masks through ``aug``; masks come back 0/1."""
    image, mask = aug(image, mask)
    return image, (mask > 0.5).to(image.dtype)
