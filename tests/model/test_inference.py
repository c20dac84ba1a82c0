"""Inference stage by stage (chunk, tiles, network, stitch), then whole volumes and ``segment``."""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model import InferenceConfig, InputError, Predictor, segment
from model.geometry import CT_FILL_HU, needs_inplane_resampling
from model.inference import (
    CaseTimings,
    SliceChunk,
    Tiles,
    Window,
    lesion_mask,
    load_chunk,
    stitch,
    tile_chunk,
)
from model.postprocessing import remove_small_components
from model.preprocessing import body_windows
from phantoms import PhantomSpec, make_phantom
from tests.conftest import TINY, dice, oracle_predictor

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
DEMO_SPEC = PhantomSpec(size=128, spacing=4.0728, slices=48, slice_thickness=6.0)


@pytest.fixture(scope="module")
def demo_case():
    phantom = make_phantom(11, positive=True, spec=DEMO_SPEC, diagnosis="LYMPHOMA")
    pet, ct, _ = phantom.images()
    return pet, ct


# --- stage 1: a chunk of slices ---------------------------------------------------------------------------

def test_load_chunk_sanitises_and_pads_without_touching_the_volume():
    pet = np.full((5, 40, 50), 2.0, np.float32)
    ct = np.zeros((5, 40, 50), np.float32)
    pet[1, 3, 4], ct[2, 5, 6] = np.nan, np.inf
    chunk = load_chunk(pet, ct, 1, 4, crop=64, device=torch.device("cpu"))
    assert (chunk.start, chunk.stop, chunk.size, chunk.pad) == (1, 4, (40, 50), (12, 7))
    assert chunk.pet.shape == chunk.ct.shape == (3, 64, 64)
    top, left = chunk.pad
    assert chunk.pet[0, top + 3, left + 4] == 0.0 and chunk.ct[1, top + 5, left + 6] == CT_FILL_HU
    assert chunk.pet[0, 0, 0] == 0.0 and chunk.ct[0, 0, 0] == CT_FILL_HU  # padding is background
    assert torch.equal(chunk.pet[2, top:top + 40, left:left + 50], torch.full((40, 50), 2.0))
    assert np.isnan(pet[1, 3, 4]) and np.isinf(ct[2, 5, 6])


def test_load_chunk_takes_read_only_flipped_and_integer_volumes_as_they_are():
    """The slices are taken without a copy of their own where they can be: a read-only view (SimpleITK's), a
    volume with negative strides (flipped) and an int16 CT all give the float32 chunk a plain copy gives."""
    rng = np.random.default_rng(5)
    pet = rng.gamma(1.0, 1.0, (6, 70, 70)).astype(np.float32)
    ct = rng.integers(-1024, 1500, (6, 70, 70)).astype(np.int16)
    expected = load_chunk(pet.copy(), ct.astype(np.float32), 1, 5, crop=64, device=torch.device("cpu"))
    read_only_pet, read_only_ct = pet.copy(), ct.copy()
    read_only_pet.flags.writeable = read_only_ct.flags.writeable = False
    flipped = load_chunk(pet[::-1].copy()[::-1], ct[::-1].copy()[::-1], 1, 5, crop=64, device=torch.device("cpu"))
    for chunk in (load_chunk(read_only_pet, read_only_ct, 1, 5, crop=64, device=torch.device("cpu")), flipped):
        assert chunk.pet.dtype == chunk.ct.dtype == torch.float32
        assert torch.equal(chunk.pet, expected.pet) and torch.equal(chunk.ct, expected.ct)
        assert (chunk.start, chunk.stop, chunk.pad, chunk.size) == (1, 5, (0, 0), (70, 70))


# --- stage 2: tiles -----------------------------------------------------------------------------------------

def test_full_windows_are_the_crop_and_cover_the_body():
    assert body_windows((10, 40, 20, 50), (64, 64), 64, 32, 0.25, shrink=False) == [(0, 0, 64, 64)]
    wide = body_windows((0, 20, 0, 150), (64, 160), 64, 32, 0.25, shrink=False)
    starts = sorted(x for _, x, _, _ in wide)
    assert starts[0] == 0 and starts[-1] + 64 >= 150 and len(starts) == 3
    assert all(b - a <= 64 - 16 for a, b in itertools.pairwise(starts))  # at least 25 % overlap


def test_body_windows_shrink_to_multiples_of_32_no_larger_than_the_crop():
    for box in [(30, 35, 20, 22), (5, 60, 10, 43), (0, 64, 0, 64)]:
        (y, x, h, w), = body_windows(box, (64, 64), 64, 32, 0.25, shrink=True)
        assert h % 32 == 0 and w % 32 == 0 and 32 <= h <= 64 and 32 <= w <= 64
        assert y <= box[0] and box[1] <= y + h and x <= box[2] and box[3] <= x + w
    assert body_windows((0, 20, 0, 150), (64, 160), 64, 32, 0.25, shrink=True)[0][2:] == (32, 64)


def test_tile_chunk_skips_slices_without_body():
    ct = np.full((3, 64, 64), -1000.0, np.float32)
    ct[0, 10:30, 20:50] = 0.0
    ct[2, 5:60, 5:60] = 0.0
    chunk = load_chunk(np.zeros_like(ct), ct, 0, 3, 64, torch.device("cpu"))
    tiles = tile_chunk(chunk, TINY, overlap=0.25, shrink=True)
    assert tiles.image.shape == (3, 2, 64, 64)
    assert sorted(w.index for w in tiles.windows) == [0, 2]
    assert {(w.index, w.height, w.width) for w in tiles.windows} == {(0, 32, 32), (2, 64, 64)}


def test_batches_group_windows_by_shape():
    windows = [Window(i, 0, 0, *shape) for i, shape in enumerate([(32, 32), (64, 32)] * 5 + [(32, 32)] * 2)]
    tiles = Tiles(image=torch.randn(len(windows), 2, 64, 64), windows=windows)
    seen = []
    for batch, inputs in tiles.batches(4):
        assert len({(w.height, w.width) for w in batch}) == 1 and len(batch) <= 4
        assert inputs.shape == (len(batch), 2, batch[0].height, batch[0].width)
        assert torch.equal(inputs[-1], tiles.image[batch[-1].index, :, :batch[-1].height, :batch[-1].width])
        seen += batch
    assert sorted(seen, key=windows.index) == windows
    assert [len(batch) for batch, _ in tiles.batches(4)] == [4, 3, 4, 1]  # 7 of one shape, 5 of the other


# --- stage 3: network -------------------------------------------------------------------------------------------

class _Asymmetric(torch.nn.Module):
    """A network whose output is not flip-invariant: a 3x3 convolution with random weights."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_tta_undoes_each_flip():
    from model.checkpoint import Checkpoint

    torch.manual_seed(0)
    member = Checkpoint(config=TINY, network=_Asymmetric().eval(), path=Path("asym"))
    plain = Predictor.from_checkpoints([member], device="cpu", precision="fp32")
    tta = Predictor.from_checkpoints([member], device="cpu", precision="fp32", tta=True)
    tiles = torch.randn(2, 2, 32, 64)
    flipped = torch.flip(tiles, (3,))
    expected = (plain.predict_tiles(tiles) + torch.flip(plain.predict_tiles(flipped), (2,))
                + torch.flip(plain.predict_tiles(torch.flip(tiles, (2,))), (1,))
                + torch.flip(plain.predict_tiles(torch.flip(tiles, (2, 3))), (1, 2))) / 4
    assert torch.allclose(tta.predict_tiles(tiles), expected, atol=1e-6)
    assert not torch.allclose(plain.predict_tiles(tiles), expected, atol=1e-3)


def test_ensemble_is_the_mean_of_its_members():
    from model.checkpoint import Checkpoint

    torch.manual_seed(1)
    members = [Checkpoint(config=TINY, network=_Asymmetric().eval(), path=Path(f"m{i}")) for i in range(2)]
    both = Predictor.from_checkpoints(members, device="cpu", precision="fp32")
    alone = [Predictor.from_checkpoints([m], device="cpu", precision="fp32") for m in members]
    tiles = torch.randn(3, 2, 32, 32)
    mean = (alone[0].predict_tiles(tiles) + alone[1].predict_tiles(tiles)) / 2
    assert torch.allclose(both.predict_tiles(tiles), mean, atol=1e-6)


# --- stage 4: stitch ---------------------------------------------------------------------------------------------

def test_stitch_averages_overlaps_and_removes_padding():
    chunk = SliceChunk(start=0, pet=torch.zeros(2, 64, 96), ct=torch.zeros(2, 64, 96), pad=(4, 8), size=(56, 80))
    windows = [Window(0, 0, 0, 64, 64), Window(0, 0, 32, 64, 64), Window(1, 16, 16, 32, 32)]
    probabilities = [torch.full((64, 64), 0.2), torch.full((64, 64), 0.6), torch.full((32, 32), 1.0)]
    stitched = stitch(chunk, windows, probabilities)
    assert stitched.shape == (2, 56, 80) and stitched.dtype == torch.float32
    assert torch.allclose(stitched[0, :, :24], torch.tensor(0.2))  # padded columns 8..32: first window only
    assert torch.allclose(stitched[0, :, 24:56], torch.tensor(0.4))  # both windows
    assert torch.allclose(stitched[0, :, 56:], torch.tensor(0.6))
    assert stitched[1].sum() == 32 * 32 and stitched[1, 12, 8] == 1.0 and stitched[1, 11, 8] == 0.0


# --- whole volumes ------------------------------------------------------------------------------------------------

def test_probabilities_into_a_given_array_and_the_mask_agree(small_phantom):
    pet_image, ct_image, _ = small_phantom.images()
    pet, ct = sitk.GetArrayViewFromImage(pet_image), sitk.GetArrayViewFromImage(ct_image)
    predictor = oracle_predictor(batch_size=3)
    half = np.full(pet.shape, np.nan, np.float16)
    assert predictor.predict_probabilities(pet, ct, out=half) is half
    full = predictor.predict_probabilities(pet, ct)
    assert full.dtype == np.float32 and not np.isnan(half).any()
    assert np.allclose(half, full, atol=1e-3) and full.max() > 0.99 and full.min() == 0.0
    assert np.array_equal(predictor.predict_volume(pet, ct), lesion_mask(full, TINY.threshold))
    with pytest.raises(ValueError, match="float16 or float32"):
        predictor.predict_probabilities(pet, ct, out=np.zeros(pet.shape, np.uint8))


def test_bf16_mask_agrees_with_fp32(demo_case):
    """The shipped demo weights on a phantom: bf16 autocast against fp32, mask Dice >= 0.99."""
    pet, ct = demo_case
    masks = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.from_path(DEMO_WEIGHTS, device="cpu", precision=precision, batch_size=8)
        masks[precision] = sitk.GetArrayFromImage(segment(pet, ct, predictor))
    assert masks["fp32"].any(), "the demo model finds the hot spots of this phantom"
    assert dice(masks["fp32"], masks["bf16"]) >= 0.99


def test_batch_size_chunks_and_tta_do_not_change_an_exact_model(small_phantom):
    pet, ct, _ = small_phantom.images()
    reference = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(batch_size=1)))
    assert reference.any()
    for kwargs in ({"batch_size": 7}, {"batch_size": 4, "tta": True}, {"batch_size": 2, "chunk_batches": 1},
                   {"batch_size": 5, "body_windows": True}):
        assert np.array_equal(sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(**kwargs))), reference), kwargs


def test_slices_without_body_are_skipped(small_phantom):
    pet, ct, _ = small_phantom.images()
    ct_arr = sitk.GetArrayFromImage(ct)
    ct_arr[:10] = -1000
    empty = sitk.GetImageFromArray(ct_arr)
    empty.CopyInformation(ct)
    pet_arr = sitk.GetArrayFromImage(pet)
    pet_arr[:10] = 20.0  # hot, but no body: not segmented
    hot = sitk.GetImageFromArray(pet_arr)
    hot.CopyInformation(pet)
    mask = sitk.GetArrayFromImage(segment(hot, empty, oracle_predictor()))
    assert not mask[:10].any() and mask[10:].any()


def test_segment_times_its_stages_and_drops_small_lesions(small_phantom):
    pet, ct, _ = small_phantom.images()
    timings = CaseTimings()
    kept = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(), timings=timings))
    assert timings.preprocess > 0 and timings.network > 0 and timings.postprocess > 0
    assert timings.read == timings.write == 0.0
    voxel_ml = np.prod(pet.GetSpacing()) / 1000
    cleaned = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(min_lesion_ml=50 * voxel_ml)))
    assert np.array_equal(cleaned, remove_small_components(kept, pet.GetSpacing(), 50 * voxel_ml))
    assert 0 < cleaned.sum() < kept.sum()


def test_segment_honours_the_ct_overlap_floor(small_phantom):
    pet, ct, _ = small_phantom.images()
    shifted = sitk.Image(ct)
    origin = list(ct.GetOrigin())
    origin[2] += 0.4 * ct.GetSize()[2] * ct.GetSpacing()[2]  # the CT covers 60 % of the PET
    shifted.SetOrigin(origin)
    assert sitk.GetArrayFromImage(segment(pet, shifted, oracle_predictor())).shape[0] == pet.GetSize()[2]
    with pytest.raises(InputError, match=r"covers 60 % of the PET's box \(along x 100 %, y 100 %, z 60 %\)"):
        segment(pet, shifted, oracle_predictor(min_ct_overlap=0.7), pet_name="p.mha", ct_name="c.mha")


def test_small_components_are_removed():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1, 1, 1] = 1
    mask[5:8, 5:8, 5:8] = 1
    cleaned = remove_small_components(mask, (2.0, 2.0, 2.0), min_ml=0.05)  # 1 voxel = 0.008 ml
    assert cleaned.sum() == 27 and cleaned[1, 1, 1] == 0


# --- settings -----------------------------------------------------------------------------------------------------

def test_inference_config_defaults_and_checks():
    settings = InferenceConfig()
    # Inference and the geometry resample the same inputs: just beyond the tolerance, not just within it.
    grid = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    edge = 1 + settings.spacing_tolerance
    for factor, resampled in ((edge * 1.01, True), (edge * 0.99, False)):
        grid.SetSpacing((2.0 * factor, 2.0, 1.0))
        assert needs_inplane_resampling(grid, (2.0, 2.0)) == resampled
        assert needs_inplane_resampling(grid, (2.0, 2.0), settings.spacing_tolerance) == resampled
    assert oracle_predictor().batch_size == 8  # CPU default
    for bad in ({"batch_size": 0}, {"tile_overlap": 1.0}, {"min_ct_overlap": 0.0}, {"min_lesion_ml": -1.0},
                {"spacing_tolerance": -0.1}, {"chunk_batches": 0}, {"precision": "fp8"},
                {"compile": True, "body_windows": True}):
        with pytest.raises(InputError):
            dataclasses.replace(settings, **bad)
    with pytest.raises(TypeError):
        oracle_predictor(batch=4)  # not a setting: refused, never ignored


def test_predictor_leaves_the_members_networks_alone(tiny_weights):
    from model.checkpoint import load_checkpoint

    member = load_checkpoint(tiny_weights)
    member.network.train()
    predictor = Predictor.from_checkpoints([member], device="cpu", precision="fp32")
    assert member.network.training
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in member.network.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.networks[0].modules())
    assert not hasattr(predictor, "timings")  # timings belong to a case (CaseTimings), not to the predictor


def test_compiled_network_gives_the_same_mask(small_phantom):
    """--compile pads partial batches to one static shape; the mask must not change."""
    pet, ct, _ = small_phantom.images()
    eager = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(batch_size=6)))
    compiled = oracle_predictor(batch_size=6, compile=True)
    assert np.array_equal(sitk.GetArrayFromImage(segment(pet, ct, compiled)), eager)
