"""Batch augmentation on the training device (kornia and torch): image and mask go through the same warp.

``seed`` rebuilds the seed code's imgaug pipeline (ZZZsn/MICCAI2022-autopet utils/img_mask_aug.py,
data_aug_multimod, imgaug 0.4) operator by operator; ``seed_v1`` is this project's first rebuild of it
(zero padding, bilinear masks, contrast and dropout about 0, a fixed order), kept unchanged because demo.json
and the shipped demo weights were trained with it; ``light`` is the earlier, smaller set (what a training
config's ``"augment": true`` meant, kept so that such configs and runs resume unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

AUGMENTATIONS = ("seed", "seed_v1", "light")

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


# The seed's imgaug values (utils/img_mask_aug.py, data_aug_multimod), per operator. The seed maps each channel
# to 0-255 by the slice's own min and max before imgaug and back after it, so imgaug's 0 is the slice minimum
# and 255 its maximum: "about 0" and "to 0" below act about and to the slice minimum.
SEED_P = 0.5  # petct_config.py augmentation_prob 0.5: a slice is augmented at all with p 0.5
SOMETIMES_P = 0.5  # iaa.Sometimes(0.5, ...) around the crop, the affine and the piecewise affine
FLIP_P = 0.5  # iaa.Fliplr(0.5), iaa.Flipud(0.5)
AFFINE_SCALE = (0.75, 1.25)  # scale={"x": (0.75, 1.25), "y": (0.75, 1.25)}: one draw per axis
AFFINE_TRANSLATE = (-0.25, 0.25)  # translate_percent per axis
# rotate=(-45, 45) is ROTATION_DEG; shear=(-16, 16), a tuple: imgaug 0.4 Affine._draw_samples draws one
# value and uses it for x and for y.
SHEAR_DEG = 16.0
AFFINE_ORDERS = (0, 1)  # order=[0, 1]: nearest or bilinear, per image; segmentation maps always nearest
# mode=ia.ALL: imgaug's Affine picks one of these per image; segmentation maps are always padded with 0.
AFFINE_MODES = ("constant", "edge", "symmetric", "reflect", "wrap")
AFFINE_CVAL = (0.0, 255.0)  # cval=(0, 255), uniform: a fill between the slice's min and max
SOMEOF = (0, 4)  # iaa.SomeOf((0, 4), [...], random_order=True)
DROPOUT_OR_COARSE_P = 0.5  # iaa.OneOf([Dropout, CoarseDropout])
COARSE_MIN_GRID = 3

Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _in_random_order(ops: Sequence[Op], enabled: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                     lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ops[j]`` on the samples where ``enabled[:, j]``, each sample taking them in its own random order
    (imgaug's Sequential and SomeOf with random_order=True)."""
    order = torch.rand(image.shape[0], len(ops)).argsort(dim=1)
    image, mask = image.clone(), mask.clone()
    for position in range(len(ops)):
        for j, op in enumerate(ops):
            index = torch.nonzero((order[:, position] == j) & enabled[:, j].cpu()).flatten().to(image.device)
            if index.numel():
                image[index], mask[index] = op(image[index], mask[index], lo[index], hi[index])
    return image, mask


def _fold(coord: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Pixel coordinates outside [0, size - 1] mapped inside as numpy.pad's (and skimage.warp's) ``mode``."""
    if mode == "edge":
        return coord.clamp(0, size - 1)
    if mode == "reflect":  # about the edge pixels' centres, edge not repeated: period 2 (size - 1)
        period = max(2 * (size - 1), 1)
        coord = torch.remainder(coord, period)
        return torch.where(coord > size - 1, period - coord, coord)
    if mode == "symmetric":  # about the image's border, edge repeated: period 2 size
        coord = torch.remainder(coord + 0.5, 2 * size) - 0.5
        return torch.where(coord > size - 0.5, 2 * size - 1 - coord, coord).clamp(0, size - 1)
    if mode == "wrap":
        return torch.remainder(coord, size).clamp(0, size - 1)
    return coord  # constant: outside stays outside and takes the fill


def _sample(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, mode: str) -> torch.Tensor:
    """x (N, C, H, W) read at pixel coordinates (N, H, W); outside the image: 0."""
    height, width = x.shape[2:]
    grid = torch.stack((xs / max(width - 1, 1) * 2 - 1, ys / max(height - 1, 1) * 2 - 1), dim=-1)
    return torch.nn.functional.grid_sample(x, grid.to(x), mode=mode, padding_mode="zeros", align_corners=True)


class _PerSlice(torch.nn.Module):
    """Augments each slice of a batch with probability ``self.p`` through ``self._augment`` (the others pass
    unchanged): the seed's outer ``Sometimes``, shared by both of its rebuilds."""

    p: float

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = image.clone(), mask.clone()
        chosen = torch.nonzero(torch.rand(image.shape[0]) < self.p).to(image.device).flatten()
        if chosen.numel():
            image[chosen], mask[chosen] = self._augment(image[chosen], mask[chosen])
        return image, mask

    def _augment(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SeedAugmentation(_PerSlice):
    """The seed's augmentation (``seed``), per sample, operator by operator.

    With p 0.5 a sample is left as it is. Otherwise, in a random order per sample: horizontal flip (p 0.5),
    vertical flip (p 0.5), crop 0-20 % per side resized back (p 0.5), affine (p 0.5: scale 0.75-1.25 per axis,
    translation +-25 % per axis, rotation +-45 deg, one shear +-16 deg for x and y; nearest or bilinear; border
    constant with a fill between the slice's min and max, edge, symmetric, reflect or wrap; the mask nearest
    and padded with 0), and 0 to 4 distinct ones, in a random order, of: sharpen, piecewise affine (p 0.5),
    linear contrast 0.6-1.4 about the slice minimum, and one of dropout (1-5 % of the pixels) or coarse
    dropout, to the slice minimum. The seed augments each channel in its own call of one deterministic
    sequence (seq.to_deterministic()), so PET and CT get the same draws: imgaug's per_channel has nothing to
    act on in a one-channel call, and one contrast factor and one dropout mask serve both channels here.
    Every draw comes from torch's global generator, so that a seed fixes them all.
    """

    def __init__(self, p: float = SEED_P, op_p: float = SOMETIMES_P):
        super().__init__()
        import kornia.augmentation as K

        self.p, self.op_p = p, op_p
        self.spline = K.RandomThinPlateSpline(scale=TPS_SCALE, p=1.0)

    def _augment(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The slice's min and max before the pipeline: the seed's 0 and 255.
        lo, hi = image.amin(dim=(2, 3), keepdim=True), image.amax(dim=(2, 3), keepdim=True)
        count = image.shape[0]
        steps = (self._flip_lr, self._flip_ud, self._crop, self._affine, self._some_of)
        draws = torch.rand(count, 4) < torch.tensor([FLIP_P, FLIP_P, self.op_p, self.op_p])
        enabled = torch.cat((draws, torch.ones(count, 1, dtype=torch.bool)), dim=1)  # SomeOf always runs
        return _in_random_order(steps, enabled, image, mask, lo, hi)

    @staticmethod
    def _flip_lr(image, mask, lo, hi):
        return image.flip(3), mask.flip(3)

    @staticmethod
    def _flip_ud(image, mask, lo, hi):
        return image.flip(2), mask.flip(2)

    @staticmethod
    def _crop(image, mask, lo, hi):
        """iaa.Crop(percent=(0, 0.2)): each side 0-20 %, resized back (the mask nearest)."""
        count, _, height, width = image.shape
        top, bottom, left, right = (torch.rand(count, 4) * CROP_MAX).to(image.device).unbind(dim=1)
        v, u = torch.meshgrid(torch.arange(height, device=image.device, dtype=torch.float32),
                              torch.arange(width, device=image.device, dtype=torch.float32), indexing="ij")
        y0, y1 = top * (height - 1), (1 - bottom) * (height - 1)
        x0, x1 = left * (width - 1), (1 - right) * (width - 1)
        ys = y0[:, None, None] + v / max(height - 1, 1) * (y1 - y0)[:, None, None]
        xs = x0[:, None, None] + u / max(width - 1, 1) * (x1 - x0)[:, None, None]
        return _sample(image, xs, ys, "bilinear"), _sample(mask, xs, ys, "nearest")

    @staticmethod
    def _affine_coordinates(count: int, height: int, width: int, device: torch.device
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input pixel coordinates (N, H, W) of each output pixel under a drawn affine map about the centre."""
        scale = torch.empty(count, 2).uniform_(*AFFINE_SCALE)
        shift = torch.empty(count, 2).uniform_(*AFFINE_TRANSLATE) * torch.tensor([width, height])
        angle = torch.empty(count).uniform_(-ROTATION_DEG, ROTATION_DEG).deg2rad()
        shear = torch.empty(count).uniform_(-SHEAR_DEG, SHEAR_DEG).deg2rad().tan()  # one draw for x and y
        cos, sin = angle.cos(), angle.sin()
        rotation = torch.stack((torch.stack((cos, -sin), 1), torch.stack((sin, cos), 1)), 1)
        ones = torch.ones(count)
        shearing = torch.stack((torch.stack((ones, shear), 1), torch.stack((shear, ones), 1)), 1)
        forward = rotation @ shearing @ torch.diag_embed(scale)
        inverse = torch.linalg.inv(forward).to(device)
        centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=device)
        v, u = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                              torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
        out = torch.stack((u, v), dim=-1)[None] - centre - shift.to(device)[:, None, None]
        source = torch.einsum("nij,nhwj->nhwi", inverse, out) + centre
        return source[..., 0], source[..., 1]

    def _affine(self, image, mask, lo, hi):
        count, _, height, width = image.shape
        xs, ys = self._affine_coordinates(count, height, width, image.device)
        order = torch.randint(len(AFFINE_ORDERS), (count,))
        mode = torch.randint(len(AFFINE_MODES), (count,))
        fill = lo + torch.empty(count, 1, 1, 1).uniform_(*AFFINE_CVAL).to(image) / 255.0 * (hi - lo)
        out = torch.empty_like(image)
        for m, name in enumerate(AFFINE_MODES):
            for o, interpolation in zip(AFFINE_ORDERS, ("nearest", "bilinear"), strict=True):
                index = torch.nonzero((mode == m) & (order == o)).flatten().to(image.device)
                if not index.numel():
                    continue
                fx, fy = _fold(xs[index], width, name), _fold(ys[index], height, name)
                base = fill[index] if name == "constant" else lo[index]
                out[index] = _sample(image[index] - base, fx, fy, interpolation) + base
        return out, _sample(mask, xs, ys, "nearest")  # imgaug's segmentation maps: nearest, padded with 0

    def _some_of(self, image, mask, lo, hi):
        count = image.shape[0]
        ops = (self._sharpen, self._piecewise, self._contrast, self._dropout)
        how_many = torch.randint(SOMEOF[0], SOMEOF[1] + 1, (count,))
        chosen = torch.rand(count, len(ops)).argsort(dim=1).argsort(dim=1) < how_many[:, None]
        chosen[:, 1] &= torch.rand(count) < SOMETIMES_P  # sometimes(PiecewiseAffine)
        return _in_random_order(ops, chosen, image, mask, lo, hi)

    @staticmethod
    def _sharpen(image, mask, lo, hi):
        # Its kernel does not sum to 1: it acts on values measured from the slice minimum (imgaug's 0).
        return _sharpen_kernel(image - lo) + lo, mask

    def _piecewise(self, image, mask, lo, hi):
        """A thin-plate spline for imgaug's PiecewiseAffine (order 1, padded with 0: the slice minimum)."""
        channels = image.shape[1]
        both = self.spline(torch.cat((image - lo, mask), dim=1))
        return both[:, :channels] + lo, both[:, channels:]

    @staticmethod
    def _contrast(image, mask, lo, hi):
        """imgaug's LinearContrast on a float image: center + alpha (v - center), center 0 = the slice minimum."""
        alpha = torch.empty(image.shape[0], 1, 1, 1).uniform_(*CONTRAST).to(image)
        return lo + alpha * (image - lo), mask

    @staticmethod
    def _dropout(image, mask, lo, hi):
        """One of Dropout (1-5 % of the pixels) or CoarseDropout (0-5 % of the cells of a grid 2-5 % of the
        image's size), the dropped pixels set to the slice minimum; one mask for both channels."""
        count, _, height, width = image.shape
        keep = torch.empty(count, 1, height, width)
        for k in range(count):
            if float(torch.rand(())) < DROPOUT_OR_COARSE_P:
                fraction = float(torch.empty(()).uniform_(*PIXEL_DROPOUT))
                grid = (height, width)
            else:
                fraction = float(torch.empty(()).uniform_(*COARSE_DROPOUT))
                cell = float(torch.empty(()).uniform_(*COARSE_CELL))
                # imgaug's FromLowerResolution(..., min_size=3): a grid of at least 3 x 3 cells
                grid = (max(round(height * cell), COARSE_MIN_GRID), max(round(width * cell), COARSE_MIN_GRID))
            kept = (torch.rand(1, 1, *grid) >= fraction).float()
            keep[k] = torch.nn.functional.interpolate(kept, size=(height, width), mode="nearest")[0]
        return torch.where(keep.to(image.device) > 0, image, lo.expand_as(image)), mask


def _sharpen_kernel(x: torch.Tensor) -> torch.Tensor:
    """imgaug's Sharpen: kernel alpha x [[-1]*3, [-1, 8 + lightness, -1], [-1]*3] + (1 - alpha) x identity,
    one alpha (0-1) and lightness (0.75-1.25) per sample; borders reflected as cv2.filter2D's default."""
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


class SeedAugmentationV1(_PerSlice):
    """``seed_v1``: the first rebuild of the seed's augmentation (demo.json), per sample. With p 0.5 a sample
    is left as it is; otherwise, each with p 0.5:
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
        return _sharpen_kernel(x)

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
    if kind == "seed_v1":
        return SeedAugmentationV1()
    if kind == "light":
        return _light()
    raise ValueError(f"augmentation must be one of {list(AUGMENTATIONS)}, got {kind!r}")


def augment(aug: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) images and (N, 1, H, W) masks through ``aug``; masks come back 0/1."""
    image, mask = aug(image, mask)
    return image, (mask > 0.5).to(image.dtype)
