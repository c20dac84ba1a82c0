"""Slice-wise inference in stages, each a function of its own:

    load_chunk   a chunk of slices, sanitised and padded to at least the crop
    tile_chunk   the chunk normalised, and the windows that cover each slice's body
    Predictor    the network on batches of windows of one shape (autocast, flips, ensemble mean)
    stitch       the windows' probabilities averaged back into the chunk's slices

``Predictor.predict_probabilities`` and ``Predictor.predict_volume`` run them over a volume on its own grid;
``segment`` brings a study onto the model's grid and orientation and its mask back onto the PET's (one
stage of runner.pipeline). Every setting lives in one InferenceConfig."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm.auto import tqdm

from model.arguments import Backend, InferencePrecision, inference_precisions
from model.backends import RuntimeChoice, choose_runtime
from model.checkpoint import Checkpoint, load_ensemble
from model.config import ModelConfig
from model.devices import resolve_device
from model.errors import InputError
from model.geometry import (
    CT_FILL_HU,
    SPACING_TOLERANCE,
    inplane_grid,
    needs_inplane_resampling,
    overlap_by_axis,
    overlap_fraction,
    reorient,
    resample_onto,
    restore_orientation,
    same_grid,
)
from model.network import fold_batch_norm, foreground_probability
from model.openvino_backend import accepted_int8
from model.postprocessing import remove_small_components, voxel_ml
from model.preprocessing import (
    NormalisationConfig,
    body_boxes,
    body_windows,
    network_input,
    padded_slices,
    slice_input,
)


def default_batch_size(device: torch.device) -> int:
    """Slices per batch: 32 fill a GPU; on a CPU larger batches than 8 were no faster (bench/inference.py)."""
    return 32 if device.type == "cuda" else 8


@dataclass(frozen=True)
class InferenceConfig:
    """Every inference setting; process.py's command line fills it."""

    device: str = "auto"
    precision: InferencePrecision = "auto"
    # PyTorch, OpenVINO's CPU runtime or auto (model.backends); the library's default is PyTorch (training's
    # validation, tests), process.py's auto.
    backend: Backend = "torch"
    # Windows per network call; None: default_batch_size of the device.
    batch_size: int | None = None
    # Average over the four flips of each window (4x the network time).
    tta: bool = False
    # torch.compile the networks (one static window shape: the full crop).
    compile: bool = False
    # Windows shrink to the body's box, rounded up to what the U-Net accepts: fewer FLOPs, but a network
    # trained on full crops sees less context and its masks move (the demo model: Dice 0.90 against the
    # full window on the shipped case), so it is off unless the weights were trained for it.
    body_windows: bool = False
    # Neighbouring windows overlap by at least this share of the crop where a body is wider than it.
    tile_overlap: float = 0.25
    # The CT must cover at least this share of the PET's box, else the pair is not one study.
    min_ct_overlap: float = 0.5
    # Inputs whose in-plane spacing is further than this (relative) from the model's are resampled.
    spacing_tolerance: float = SPACING_TOLERANCE
    # Lesion components smaller than this many millilitres are dropped; 0 keeps all.
    min_lesion_ml: float = 0.0
    # Slices read, tiled and grouped by window shape at once: this many batches' worth.
    chunk_batches: int = 4

    def __post_init__(self) -> None:
        if self.precision not in inference_precisions():
            raise InputError(f"precision {self.precision!r}: expected {', '.join(inference_precisions())}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size}: must be at least 1")
        if self.compile and self.body_windows:
            raise InputError("compile and body_windows exclude each other: a compiled network keeps one window "
                             "shape")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise InputError(f"tile overlap {self.tile_overlap}: must lie in [0, 1)")
        if not 0.0 < self.min_ct_overlap <= 1.0:
            raise InputError(f"CT overlap floor {self.min_ct_overlap}: must lie in (0, 1]")
        if self.spacing_tolerance < 0.0:
            raise InputError(f"spacing tolerance {self.spacing_tolerance}: must not be negative")
        if self.min_lesion_ml < 0.0:
            raise InputError(f"minimum lesion volume {self.min_lesion_ml} ml: must not be negative")
        if self.chunk_batches < 1:
            raise InputError(f"chunk of {self.chunk_batches} batches: must be at least 1")


@dataclass
class CaseTimings:
    """Seconds spent per stage of one case."""

    read: float = 0.0
    preprocess: float = 0.0
    network: float = 0.0
    postprocess: float = 0.0
    write: float = 0.0

    def total(self) -> float:
        return self.read + self.preprocess + self.network + self.postprocess + self.write


@dataclass
class SliceChunk:
    """Slices [start, start + n) of a volume: SUV and HU, sanitised and padded with background to at least
    the crop; ``pad`` is the (top, left) padding and ``size`` the (height, width) before it."""

    start: int
    pet: torch.Tensor
    ct: torch.Tensor
    pad: tuple[int, int]
    size: tuple[int, int]

    @property
    def stop(self) -> int:
        return self.start + self.pet.shape[0]


def load_chunk(pet: np.ndarray, ct: np.ndarray, start: int, stop: int, crop: int,
               device: torch.device) -> SliceChunk:
    """Slices [start, stop) of a (Z, Y, X) PET and CT, copied to ``device``: the volumes are never copied whole.
    Contiguous slices are taken as they are, read-only views of the volumes (SimpleITK's) included:
    padded_slices' float32 copies (sanitise) are the one copy, and nothing writes to the views."""
    with warnings.catch_warnings():  # PyTorch's word on a read-only array: the tensors are only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        pet_t = torch.from_numpy(np.ascontiguousarray(pet[start:stop])).to(device, non_blocking=True)
        ct_t = torch.from_numpy(np.ascontiguousarray(ct[start:stop])).to(device, non_blocking=True)
    padded_pet, padded_ct, pad = padded_slices(pet_t, ct_t, crop)
    return SliceChunk(start=start, pet=padded_pet, ct=padded_ct, pad=pad, size=(pet.shape[1], pet.shape[2]))


@dataclass(frozen=True)
class Window:
    """One network input: rows y:y+height and columns x:x+width of slice ``index`` of a padded chunk."""

    index: int
    y: int
    x: int
    height: int
    width: int


@dataclass
class Tiles:
    """A chunk's slices (n, 2, H', W'), normalised or raw (model.preprocessing.slice_input), and the windows
    to cut from them; ``norm`` makes each cut window the network's input (window_input); its default, a
    whole-slice scheme, takes the windows as they are (model.preprocessing.network_input)."""

    image: torch.Tensor
    windows: list[Window]
    norm: NormalisationConfig = field(default_factory=NormalisationConfig)

    def batches(self, batch_size: int) -> Iterator[tuple[list[Window], torch.Tensor]]:
        """Windows grouped by shape, ``batch_size`` at a time, each group with its (B, 2, h, w) input."""
        by_shape: dict[tuple[int, int], list[Window]] = {}
        for window in self.windows:
            by_shape.setdefault((window.height, window.width), []).append(window)
        for group in by_shape.values():
            for first in range(0, len(group), batch_size):
                batch = group[first:first + batch_size]
                yield batch, network_input(self.image, [(w.index, w.y, w.x, w.height, w.width) for w in batch],
                                           self.norm)


def tile_chunk(chunk: SliceChunk, config: ModelConfig, overlap: float, shrink: bool) -> Tiles:
    """The chunk prepared for the network, and the windows covering each slice's body (none without one)."""
    boxes = body_boxes(chunk.ct, config.normalisation)
    image = slice_input(chunk.pet, chunk.ct, config.normalisation)
    shape = (image.shape[2], image.shape[3])
    multiple = 2 ** len(config.decoder_channels)  # the U-Net halves its input once per decoder stage
    windows = [Window(i, y, x, h, w)
               for i, box in enumerate(boxes) if box[0] >= 0  # no body in this slice: nothing to segment
               for y, x, h, w in body_windows(box, shape, config.crop_size, multiple, overlap, shrink)]
    return Tiles(image=image, windows=windows, norm=config.normalisation)


def stitch(chunk: SliceChunk, windows: Sequence[Window], probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """(n, height, width) float32 lesion probability of a chunk: the mean over the windows covering each pixel,
    0 where none does, padding removed. Windows are counted only on slices that more than one covers (a body
    wider than the crop): a slice's one window is its probability as it is, as the mean of one would be."""
    total = torch.zeros(chunk.pet.shape, device=chunk.pet.device, dtype=torch.float32)
    per_slice = Counter(w.index for w in windows)
    shared = {index: row for row, index in enumerate(sorted(i for i, n in per_slice.items() if n > 1))}
    counts = total.new_zeros((len(shared), *total.shape[1:]))
    for w, probability in zip(windows, probabilities, strict=True):
        total[w.index, w.y:w.y + w.height, w.x:w.x + w.width] += probability
        if w.index in shared:
            counts[shared[w.index], w.y:w.y + w.height, w.x:w.x + w.width] += 1.0
    if shared:
        rows = torch.tensor(list(shared), device=total.device)
        total[rows] = total[rows] / counts.clamp(min=1.0)
    (top, left), (height, width) = chunk.pad, chunk.size
    return total[:, top:top + height, left:left + width]


def lesion_mask(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The uint8 0/1 mask of a probability array: the one place a probability becomes a lesion."""
    return (probability >= threshold).astype(np.uint8)


@dataclass
class Predictor:
    """One network or an ensemble, folded for inference and on a device, with the settings that run it."""

    config: ModelConfig
    networks: list[torch.nn.Module]
    settings: InferenceConfig
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    # Each network's output head (ModelConfig.head): ensemble members may differ in it.
    heads: tuple[str, ...] = ()
    # Each member's identity (model.checkpoint.model_sha256) by its weights file's name: what made a mask.
    identities: dict[str, str] = field(default_factory=dict)
    # Which runtime runs the networks, in what precision, and why (model.backends); None: PyTorch at ``dtype``.
    runtime: RuntimeChoice | None = None

    @classmethod
    def from_path(cls, weights: Path, settings: InferenceConfig | None = None, **overrides) -> Predictor:
        """Load a checkpoint or a folder of them (an ensemble); ``overrides`` replace fields of ``settings``."""
        members = load_ensemble(Path(weights))
        return cls._create(members[0].config, [m.network for m in members], settings, overrides,
                           [m.config.head for m in members], _identities(members), _files(members))

    @classmethod
    def from_checkpoints(cls, members: list[Checkpoint], settings: InferenceConfig | None = None,
                         **overrides) -> Predictor:
        """A predictor of networks already built; it runs folded copies and leaves the members' own (training
        goes on with them) untouched."""
        networks = [copy.deepcopy(m.network) for m in members]
        return cls._create(members[0].config, networks, settings, overrides, [m.config.head for m in members],
                           _identities(members), _files(members))

    @classmethod
    def _create(cls, config: ModelConfig, networks: list[torch.nn.Module], settings: InferenceConfig | None,
                overrides: dict, heads: list[str], identities: dict[str, str],
                member_files: list[tuple[str | None, Path]]) -> Predictor:
        settings = dataclasses.replace(settings or InferenceConfig(), **overrides)
        device = resolve_device(settings.device)
        runtime = choose_runtime(settings.backend, settings.precision, device, compile_asked=settings.compile,
                                 int8_ready=all(accepted_int8(path, identity) for identity, path in member_files))
        for network in networks:
            fold_batch_norm(network.eval())
            network.to(device).to(memory_format=torch.channels_last)
        if runtime.backend == "openvino":
            from model.openvino_backend import openvino_networks

            networks = openvino_networks(networks, member_files, runtime.precision, len(config.channels),
                                         config.crop_size)
        elif settings.compile:
            networks = compile_networks(networks, device)
        return cls(config=config, networks=networks, settings=settings, device=device, dtype=runtime.dtype,
                   batch_size=settings.batch_size or default_batch_size(device), heads=tuple(heads),
                   identities=identities, runtime=runtime)

    def _runs_on_pytorch(self) -> bool:
        """Whether PyTorch runs the networks (OpenVINO takes float32 and computes in its own precision)."""
        return self.runtime is None or self.runtime.backend == "torch"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32 or not self._runs_on_pytorch():
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def predict_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Mean lesion probability (T, h, w) of normalised tiles (T, 2, h, w) over members and flips."""
        flips: list[tuple[int, ...]] = [()]
        if self.settings.tta:
            flips += [(3,), (2,), (2, 3)]
        count = tiles.shape[0]
        if self.settings.compile and count < self.batch_size:  # one static shape for the compiled graph
            tiles = torch.cat([tiles, tiles.new_zeros(self.batch_size - count, *tiles.shape[1:])])
        total = torch.zeros(tiles.shape[0], *tiles.shape[2:], device=tiles.device, dtype=torch.float32)
        # PyTorch's convolutions run channels_last; OpenVINO takes NCHW (the tiles' own layout: no copy)
        x = tiles.contiguous(memory_format=torch.channels_last if self._runs_on_pytorch() else torch.contiguous_format)
        with self._autocast():
            for network, head in zip(self.networks, self.heads or (self.config.head,) * len(self.networks),
                                     strict=True):
                for dims in flips:
                    inp = torch.flip(x, dims) if dims else x
                    prob = foreground_probability(network(inp).float(), head)
                    total += torch.flip(prob, [d - 1 for d in dims]) if dims else prob
        return total[:count] / (len(self.networks) * len(flips))

    def predict_windows(self, tiles: Tiles) -> tuple[list[Window], list[torch.Tensor]]:
        """The network stage: every window of ``tiles`` in batches of one shape, and its probability (h, w)."""
        windows: list[Window] = []
        probabilities: list[torch.Tensor] = []
        for batch, inputs in tiles.batches(self.batch_size):
            windows += batch
            probabilities += list(self.predict_tiles(inputs))
        return windows, probabilities

    def probability_chunks(self, pet: np.ndarray, ct: np.ndarray, *, timings: CaseTimings | None = None,
                           progress: bool | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first slice, float32 probability of a chunk of slices) of a (Z, Y, X) PET and CT on one grid.

        Memory is bounded by the chunk (``chunk_batches`` batches of slices); slices without a body are not
        sent to the network and come out 0.
        """
        if pet.shape != ct.shape:
            raise ValueError(f"PET {pet.shape} and CT {ct.shape} differ in shape")
        timings = timings if timings is not None else CaseTimings()
        depth = pet.shape[0]
        chunk_slices = self.settings.chunk_batches * self.batch_size
        bar = tqdm(total=depth, unit="slice", desc="segmenting", disable=None if progress is None else not progress,
                   leave=False)
        for start in range(0, depth, chunk_slices):
            begin = time.perf_counter()
            chunk = load_chunk(pet, ct, start, min(start + chunk_slices, depth), self.config.crop_size, self.device)
            tiles = tile_chunk(chunk, self.config, self.settings.tile_overlap, self.settings.body_windows)
            timings.preprocess += time.perf_counter() - begin
            begin = time.perf_counter()
            windows, probabilities = self.predict_windows(tiles)
            self._sync()
            timings.network += time.perf_counter() - begin
            begin = time.perf_counter()
            probability = stitch(chunk, windows, probabilities).cpu().numpy()
            timings.postprocess += time.perf_counter() - begin
            yield start, probability
            bar.update(chunk.stop - start)
        bar.close()

    def predict_probabilities(self, pet: np.ndarray, ct: np.ndarray, *, out: np.ndarray | None = None,
                              timings: CaseTimings | None = None, progress: bool | None = None) -> np.ndarray:
        """Lesion probability of a (Z, Y, X) PET and CT on one grid, written into ``out`` (float16 or float32,
        the volume's shape) or into a new float32 array, which is returned."""
        if out is None:
            out = np.empty(pet.shape, dtype=np.float32)
        elif out.shape != pet.shape or out.dtype not in (np.float16, np.float32):
            raise ValueError(f"out must be float16 or float32 of shape {pet.shape}, got {out.dtype} {out.shape}")
        for start, probability in self.probability_chunks(pet, ct, timings=timings, progress=progress):
            out[start:start + probability.shape[0]] = probability
        return out

    def predict_volume(self, pet: np.ndarray, ct: np.ndarray, *, timings: CaseTimings | None = None,
                       progress: bool | None = None) -> np.ndarray:
        """Lesion mask (uint8 0/1) of a (Z, Y, X) PET and CT on one grid; only the mask is kept whole."""
        mask = np.zeros(pet.shape, dtype=np.uint8)
        for start, probability in self.probability_chunks(pet, ct, timings=timings, progress=progress):
            mask[start:start + probability.shape[0]] = lesion_mask(probability, self.config.threshold)
        return mask

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _identities(members: list[Checkpoint]) -> dict[str, str]:
    return {member.path.name: member.model_sha256 for member in members if member.model_sha256 is not None}


def _files(members: list[Checkpoint]) -> list[tuple[str | None, Path]]:
    return [(member.model_sha256, member.path) for member in members]


def compile_networks(networks: list[torch.nn.Module], device: torch.device) -> list[torch.nn.Module]:
    """torch.compile every network (CPU: with weight freezing; CUDA: with CUDA graphs).

    Compiling takes tens of seconds once per process (less with a warm inductor cache) and then runs the
    network about 1.8x faster on a CPU: it pays off from the second study of a run. Batches are padded to
    the batch size and windows are the full crop, so that the compiled graph keeps one static shape.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    mode = "reduce-overhead" if device.type == "cuda" else None
    return [torch.compile(network, mode=mode, dynamic=False) for network in networks]


def ct_on_pet_grid(pet: sitk.Image, ct: sitk.Image, settings: InferenceConfig, *, pet_name: str = "PET",
                   ct_name: str = "CT") -> sitk.Image:
    """The CT resampled onto the PET's grid (itself when it is on it already); InputError when it covers less
    than ``settings.min_ct_overlap`` of the PET's box. runner.pipeline's read stage runs it (in runner.cohort's
    read-ahead thread)."""
    covered = overlap_fraction(pet, ct)
    if covered < settings.min_ct_overlap:
        x, y, z = (100 * share for share in overlap_by_axis(pet, ct))
        what = "does not overlap the PET" if covered == 0 else "overlaps too little of the PET"
        raise InputError(f"{ct_name}: CT {what} {pet_name} in space: its box covers {100 * covered:.0f} % of the "
                         f"PET's box (along x {x:.0f} %, y {y:.0f} %, z {z:.0f} %); at least "
                         f"{100 * settings.min_ct_overlap:.0f} % is needed")
    return ct if same_grid(pet, ct) else resample_onto(ct, pet, CT_FILL_HU)


@dataclass
class StudyOnModelGrid:
    """A study as the network sees it: the CT on the PET's grid, both reoriented (permuted and flipped, not
    interpolated) to the orientation the network was trained in, since it is not flip-invariant, and
    resampled in-plane (``resampled``) when the PET's spacing is further than the tolerance from the
    model's. ``oriented`` is the reoriented PET grid, which results come back to first."""

    pet: sitk.Image
    ct: sitk.Image
    oriented: sitk.Image
    resampled: bool


def onto_model_grid(pet: sitk.Image, ct: sitk.Image, predictor: Predictor) -> StudyOnModelGrid:
    """A study whose CT is on the PET's grid (``ct_on_pet_grid``) as the network sees it."""
    cfg, settings = predictor.config, predictor.settings
    oriented = reorient(pet, cfg.orientation)
    oriented_ct = reorient(ct, cfg.orientation)
    if not needs_inplane_resampling(oriented, cfg.spacing_mm, settings.spacing_tolerance):
        return StudyOnModelGrid(oriented, oriented_ct, oriented, resampled=False)
    grid = inplane_grid(oriented, cfg.spacing_mm)
    return StudyOnModelGrid(resample_onto(oriented, grid, 0.0), resample_onto(oriented_ct, grid, CT_FILL_HU),
                            oriented, resampled=True)


def _probability_on_oriented_grid(study: StudyOnModelGrid, predictor: Predictor, *, timings: CaseTimings,
                                  progress: bool | None) -> sitk.Image:
    pet_array, ct_array = sitk.GetArrayViewFromImage(study.pet), sitk.GetArrayViewFromImage(study.ct)
    probability = predictor.predict_probabilities(pet_array, ct_array, timings=timings, progress=progress)
    start = time.perf_counter()
    image = sitk.GetImageFromArray(probability)
    image.CopyInformation(study.pet)
    del probability
    if study.resampled:
        image = resample_onto(image, study.oriented, 0.0)
    timings.postprocess += time.perf_counter() - start
    return image


def lesion_probability(pet: sitk.Image, ct: sitk.Image, predictor: Predictor, *,
                       timings: CaseTimings | None = None, progress: bool | None = None) -> sitk.Image:
    """The lesion probability (float32) of one study on exactly the PET's grid, before the threshold and the
    small-lesion removal: the values ``segment`` thresholds (test/expected_output holds them for the shipped
    case, so that its check can tell a precision's rounding from a wrong mask)."""
    timings = timings if timings is not None else CaseTimings()
    start = time.perf_counter()
    study = onto_model_grid(pet, ct_on_pet_grid(pet, ct, predictor.settings), predictor)
    timings.preprocess += time.perf_counter() - start
    probability = _probability_on_oriented_grid(study, predictor, timings=timings, progress=progress)
    return restore_orientation(probability, pet)


def segment(pet: sitk.Image, ct: sitk.Image, predictor: Predictor, *, timings: CaseTimings | None = None,
            progress: bool | None = None, pet_name: str = "PET", ct_name: str = "CT") -> sitk.Image:
    """The lesion mask (uint8 0/1) of one study, on exactly the PET's grid; ``timings`` gathers its seconds.
    The network's part alone, without the study's checks (studies.checks): a study goes through
    runner.pipeline.segment_source (run_images, run_case), which checks it and then runs segment_on_pet_grid."""
    timings = timings if timings is not None else CaseTimings()
    start = time.perf_counter()
    ct = ct_on_pet_grid(pet, ct, predictor.settings, pet_name=pet_name, ct_name=ct_name)
    timings.preprocess += time.perf_counter() - start
    return segment_on_pet_grid(pet, ct, predictor, timings=timings, progress=progress)


def segment_on_pet_grid(pet: sitk.Image, ct: sitk.Image, predictor: Predictor, *,
                        timings: CaseTimings | None = None, progress: bool | None = None) -> sitk.Image:
    """``segment`` of a CT on the PET's grid (runner.pipeline's read stage put it there): onto the network's grid;
    the probability back to the reoriented PET grid, thresholded, and the mask back to the PET's orientation."""
    cfg, settings = predictor.config, predictor.settings
    timings = timings if timings is not None else CaseTimings()
    start = time.perf_counter()
    study = onto_model_grid(pet, ct, predictor)
    timings.preprocess += time.perf_counter() - start
    if study.resampled:
        probability = _probability_on_oriented_grid(study, predictor, timings=timings, progress=progress)
        start = time.perf_counter()
        result = lesion_mask(sitk.GetArrayViewFromImage(probability), cfg.threshold)
    else:  # on the model's grid already: only the uint8 mask is kept whole, never a float volume
        pet_array, ct_array = sitk.GetArrayViewFromImage(study.pet), sitk.GetArrayViewFromImage(study.ct)
        result = predictor.predict_volume(pet_array, ct_array, timings=timings, progress=progress)
        start = time.perf_counter()
    if settings.min_lesion_ml > 0:
        result = remove_small_components(result, study.oriented.GetSpacing(), settings.min_lesion_ml)
    mask = sitk.GetImageFromArray(result)
    mask.CopyInformation(study.oriented)
    mask = restore_orientation(mask, pet)
    timings.postprocess += time.perf_counter() - start
    return mask


def lesion_volume_ml(mask: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(mask).sum(dtype=np.int64)) * voxel_ml(mask.GetSpacing())
