"""Training slices from the prepared store, as deployment sees them.

The store keeps whole slices (train.prepare), so a training window is cut from the same slice, with the same
air, couch and PET background, as an inference window: model.preprocessing.padded_slices, slice_input and
network_input build both (tests/model/test_preprocessing.py holds the two equal for every scheme).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import ModelConfig
from model.preprocessing import body_boxes, network_input, padded_slices, slice_input


def training_window_start(lo: int, hi: int, length: int, crop: int, rng: np.random.Generator,
                          jitter: float = 0.1) -> int:
    """A crop start along one axis: centred on the body (with jitter) when it fits, else anywhere on it.
    Without jitter a body that fits gets inference's window (model.preprocessing.window_starts)."""
    if hi - lo <= crop:
        reach = int(jitter * crop)
        start = (lo + hi) // 2 - crop // 2 + int(rng.integers(-reach, reach + 1))
    else:
        start = int(rng.integers(lo, hi - crop + 1))
    return min(max(start, 0), length - crop)


class StoreVolumes:
    """Memory-mapped arrays of prepared studies, opened on first use (per worker process)."""

    def __init__(self, data: Path, studies: list[dict]):
        self.data, self.studies = Path(data), studies
        self._open: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if i not in self._open:
            folder = self.data / "studies" / self.studies[i]["study"]
            self._open[i] = tuple(np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("pet", "ct", "mask"))
        return self._open[i]


class SliceDataset(Dataset):
    """Item (study position, slice) -> (2, crop, crop) network input and (1, crop, crop) mask.

    The window is centred on the slice's body with a jitter of 10 % of the crop where the body fits in it,
    anywhere on the body where it does not (``window``: at a given place). The sampler never asks for a slice
    without body (the index's ``bodyless_slices``), as inference never segments one; asked anyway, it
    normalises to finite values and its window falls anywhere on the slice.
    """

    def __init__(self, data: Path, studies: list[dict], config: ModelConfig, seed: int = 0):
        self.volumes = StoreVolumes(data, studies)
        self.config, self.seed = config, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(row["slices"] for row in self.volumes.studies)

    def _slice(self, i: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The padded (1, H', W') PET, CT and mask of slice ``s`` of study ``i``, as inference pads them."""
        pet, ct, mask = self.volumes[i]
        crop = self.config.crop_size
        pet_t, ct_t, (top, left) = padded_slices(torch.from_numpy(np.array(pet[s:s + 1])),
                                                 torch.from_numpy(np.array(ct[s:s + 1])), crop)
        mask_t = torch.from_numpy(np.array(mask[s:s + 1]))
        h, w = mask_t.shape[1:]
        mask_t = torch.nn.functional.pad(mask_t, (left, pet_t.shape[2] - w - left, top, pet_t.shape[1] - h - top))
        return pet_t, ct_t, mask_t

    def window(self, i: int, s: int, y: int, x: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The network input and mask of the crop x crop window at (y, x) of the padded slice ``s`` of study ``i``
        (the coordinates of model.inference's windows)."""
        pet_t, ct_t, mask_t = self._slice(i, s)
        return self._cut(pet_t, ct_t, mask_t, y, x)

    def _cut(self, pet_t: torch.Tensor, ct_t: torch.Tensor, mask_t: torch.Tensor, y: int,
             x: int) -> tuple[torch.Tensor, torch.Tensor]:
        crop, norm = self.config.crop_size, self.config.normalisation
        image = network_input(slice_input(pet_t, ct_t, norm), [(0, y, x, crop, crop)], norm)[0]
        return image.contiguous(), mask_t[:, y:y + crop, x:x + crop].float()

    def __getitem__(self, ref: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, s = ref
        pet_t, ct_t, mask_t = self._slice(i, s)
        crop = self.config.crop_size
        box = body_boxes(ct_t, self.config.normalisation)[0]
        height, width = ct_t.shape[1:]
        if box[0] < 0:
            box = np.array([0, height, 0, width])
        rng = np.random.default_rng((self.seed, self.epoch, i, s))
        y = training_window_start(int(box[0]), int(box[1]), height, crop, rng)
        x = training_window_start(int(box[2]), int(box[3]), width, crop, rng)
        return self._cut(pet_t, ct_t, mask_t, y, x)
