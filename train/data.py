"""Training slices from the prepared store, normalised and cropped with model/'s own functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import ModelConfig
from model.preprocessing import body_boxes, pad_to_crop, sanitise, slice_input, window_input


def training_window_start(lo: int, hi: int, length: int, crop: int, rng: np.random.Generator,
                          jitter: float = 0.1) -> int:
    """A crop start along one axis: centred on the body (with jitter) when it fits, else anywhere on it."""
    if hi - lo <= crop:
        start = (lo + hi) // 2 - crop // 2 + int(rng.integers(-int(jitter * crop), int(jitter * crop) + 1))
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

    The sampler never asks for a slice without body (the index's ``bodyless_slices``), as inference never
    segments one; asked anyway, it normalises to finite values and its crop falls anywhere on the slice.
    """

    def __init__(self, data: Path, studies: list[dict], config: ModelConfig, seed: int = 0):
        self.volumes = StoreVolumes(data, studies)
        self.config, self.seed = config, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(row["slices"] for row in self.volumes.studies)

    def __getitem__(self, ref: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, s = ref
        pet, ct, mask = self.volumes[i]
        crop, norm = self.config.crop_size, self.config.normalisation
        pet_t, ct_t = sanitise(torch.from_numpy(np.array(pet[s : s + 1])), torch.from_numpy(np.array(ct[s : s + 1])))
        mask_t = torch.from_numpy(np.array(mask[s : s + 1]))
        h, w = pet_t.shape[1:]
        pet_t, ct_t, (top, left) = pad_to_crop(pet_t, ct_t, crop)
        mask_t = torch.nn.functional.pad(mask_t, (left, pet_t.shape[2] - w - left, top, pet_t.shape[1] - h - top))
        image = slice_input(pet_t, ct_t, norm)[0]
        box = body_boxes(ct_t, norm)[0]
        rng = np.random.default_rng((self.seed, self.epoch, i, s))
        height, width = image.shape[1:]
        if box[0] < 0:
            box = np.array([0, height, 0, width])
        y = training_window_start(int(box[0]), int(box[1]), height, crop, rng)
        x = training_window_start(int(box[2]), int(box[3]), width, crop, rng)
        window = window_input(image[None, :, y : y + crop, x : x + crop], norm)[0]
        return window.contiguous(), mask_t[:, y : y + crop, x : x + crop].float()
