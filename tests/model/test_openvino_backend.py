"""The network on OpenVINO's CPU runtime (model.openvino_backend): the masks PyTorch fp32 gives, a converted
network cached by the model's identity and reused, and the cohort features (read-ahead, parts, ranks' threads)
working with it. fp32 only where a test needs a precision: it runs on every CPU kind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import model.openvino_backend as backend
import process
from model import Predictor, build_network, save_checkpoint
from model.checkpoint import load_checkpoint
from model.errors import InputError
from model.network import fold_batch_norm
from phantoms import make_phantom
from results.outputs import run_record
from runner.cohort import CohortOptions, run_cohort
from runner.distributed import RankInfo
from tests.conftest import SMALL_SPEC, TINY, write_case


@pytest.fixture(scope="module")
def torch_fp32(tiny_weights):
    return Predictor.from_path(tiny_weights, device="cpu", precision="fp32")


def openvino_fp32(weights, **settings) -> Predictor:
    return Predictor.from_path(weights, device="cpu", precision="fp32", backend="openvino", **settings)


def volumes(phantom) -> tuple[np.ndarray, np.ndarray]:
    pet, ct, _ = phantom.images()
    return sitk.GetArrayFromImage(pet), sitk.GetArrayFromImage(ct)


@pytest.mark.parametrize("settings", [{}, {"body_windows": True, "batch_size": 3}, {"tta": True}],
                         ids=["full windows", "body windows, odd batches", "flip TTA"])
def test_openvino_fp32_masks_equal_pytorch_fp32s(tiny_weights, torch_fp32, small_phantom, settings):
    """Every window shape and batch (the converted network's input is dynamic) gives PyTorch fp32's mask."""
    pet, ct = volumes(small_phantom)
    reference = Predictor.from_path(tiny_weights, device="cpu", precision="fp32", **settings) if settings \
        else torch_fp32
    converted = openvino_fp32(tiny_weights, **settings)
    assert converted.runtime.backend == "openvino" and converted.dtype == torch.float32
    expected = reference.predict_probabilities(pet, ct)
    got = converted.predict_probabilities(pet, ct)
    assert np.abs(got - expected).max() < 1e-4
    threshold = reference.config.threshold
    assert np.array_equal(got >= threshold, expected >= threshold) and (expected >= threshold).any()


def entries() -> list[str]:
    root = backend.cache_root()
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_the_converted_network_is_cached_by_model_identity_and_reused(tmp_path, monkeypatch, tiny_weights):
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "cache"))
    first = openvino_fp32(tiny_weights)
    (entry,) = entries()
    key = json.loads((backend.cache_root() / entry / "key.json").read_text())
    assert key["model_sha256"] == first.identities[tiny_weights.name] and key["weights"] == "float"
    assert key["openvino"] and key["torch"] == torch.__version__ and key["shape"] == backend.SHAPE_POLICY

    def no_conversion(*args):
        raise AssertionError("converted again although cached")

    monkeypatch.setattr(backend, "convert", no_conversion)
    again = openvino_fp32(tiny_weights)  # read from the cache; bf16 too would be (the precision is a hint)
    tiles = torch.randn(2, 2, 64, 64)
    assert torch.equal(again.predict_tiles(tiles), first.predict_tiles(tiles))
    assert entries() == [entry]
    monkeypatch.undo()
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "cache"))
    torch.manual_seed(1)  # another model (other weights): another entry, whatever the file is called
    other = save_checkpoint(build_network(TINY), TINY, tmp_path / "other" / tiny_weights.stem)
    openvino_fp32(other)
    assert len(entries()) == 2 and entry in entries()


def test_a_cached_entry_is_readable_by_every_user(tmp_path, monkeypatch, tiny_weights):
    """The container converts the shipped weights as root at build and runs as another user."""
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "cache"))
    openvino_fp32(tiny_weights)
    (entry,) = entries()
    folder = backend.cache_root() / entry
    assert folder.stat().st_mode & 0o005 == 0o005
    assert all(path.stat().st_mode & 0o004 for path in folder.iterdir())


def test_the_key_names_every_version_the_conversion_depends_on():
    key = backend.cache_key("a" * 64)
    for name, changed in (("model_sha256", "b" * 64), ("weights", "int8-0123"), ("openvino", "2099.1"),
                          ("torch", "9.9"), ("timm", "9.9"), ("conversion", 99)):
        assert backend.cache_entry({**key, name: changed}) != backend.cache_entry(key), name


def test_an_unwritable_cache_converts_in_memory_with_one_warning(tmp_path, monkeypatch, tiny_weights, torch_fp32):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(backend.CACHE_ENV, str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot cache the converted network"):
        converted = openvino_fp32(tiny_weights)
    tiles = torch.randn(1, 2, 64, 64)
    assert torch.allclose(converted.predict_tiles(tiles), torch_fp32.predict_tiles(tiles), atol=1e-4)


def test_a_damaged_entry_is_converted_again(tmp_path, monkeypatch, tiny_weights):
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "cache"))
    openvino_fp32(tiny_weights)
    (entry,) = entries()
    (backend.cache_root() / entry / backend.MODEL_FILE).write_text("<net truncated")
    with pytest.warns(UserWarning, match="converting anew"):
        openvino_fp32(tiny_weights)
    assert entries() == [entry]


def test_a_rank_compiles_with_its_share_of_the_cores_unpinned(tiny_weights):
    threads = torch.get_num_threads()
    try:
        RankInfo(rank=1, world=2, local_rank=1, local_world=64).device("cpu")
        compiled = openvino_fp32(tiny_weights).networks[0].compiled
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert (compiled.get_property("ENABLE_CPU_PINNING") is False) == (len(os.sched_getaffinity(0)) > 1)
    finally:
        torch.set_num_threads(threads)


def test_read_ahead_gives_the_masks_of_pytorch_fp32(tmp_path, tiny_weights, torch_fp32):
    for seed in (0, 1, 2):
        pet, ct, _ = make_phantom(seed, positive=True, spec=SMALL_SPEC).images()
        write_case(tmp_path / "in", pet, ct, f"c{seed}")
    from studies.cases import layout_cases

    sources = layout_cases(tmp_path / "in")
    converted = openvino_fp32(tiny_weights)
    assert run_record(converted).settings["backend"] == "openvino" and "backend" not in run_record(torch_fp32).settings
    ran = run_cohort(sources, converted, tmp_path / "ov", CohortOptions(read_ahead=True))
    run_cohort(sources, torch_fp32, tmp_path / "torch", CohortOptions(read_ahead=False))
    assert ran.count("written") == 3
    for case in sources:
        masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / out / "images" /
                                                           "automated-petct-lesion-segmentation" / f"{case.name}.mha")))
                 for out in ("ov", "torch")]
        assert np.array_equal(*masks)


def test_a_part_runs_on_openvino_and_its_first_line_says_so(capsys, tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    for name in ("a", "b", "c"):
        write_case(tmp_path / "in", pet, ct, name)
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu", "--backend", "openvino", "--precision", "fp32",
                         "--num-parts", "2", "--part-id", "1", "--no-report"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].endswith(f"on cpu, OpenVINO {backend.runtime_version()} fp32 (as asked)"), out
    written = sorted(p.name for p in (tmp_path / "out" / "images" / "automated-petct-lesion-segmentation").iterdir())
    assert written == ["b.mha"]


def _int8_beside(weights, tmp_path, record: dict):
    """A checkpoint copy with an "int8 model" beside it (the float conversion stands in for one: what is tested is
    which model loads, not NNCF) and its record."""
    import shutil

    import openvino

    folder = tmp_path / "weights"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights.with_suffix(suffix), folder / f"{weights.stem}{suffix}")
    copy = folder / weights.name
    member = load_checkpoint(copy)
    fold_batch_norm(member.network.eval())
    model = backend.convert(member.network, 2, TINY.crop_size)
    openvino.save_model(model, str(backend.int8_record(copy).with_suffix(".xml")), compress_to_fp16=False)
    backend.int8_record(copy).write_text(json.dumps({"model_sha256": member.model_sha256, **record}))
    return copy, member.model_sha256


@pytest.mark.parametrize(("record", "offered"), [
    ({"passed": True}, True),
    ({"passed": False}, False),
    ({"passed": True, "model_sha256": "0" * 64}, False),  # another model's int8 model
], ids=["passed", "failed", "another model"])
def test_int8_is_offered_only_for_this_models_accepted_int8_model(tmp_path, tiny_weights, record, offered, capsys):
    weights, identity = _int8_beside(tiny_weights, tmp_path, record)
    assert (backend.accepted_int8(weights, identity) is not None) == offered
    if offered:
        predictor = Predictor.from_path(weights, device="cpu", precision="int8", backend="openvino")
        assert predictor.runtime.precision == "int8" and run_record(predictor).settings["precision"] == "int8"
        assert Predictor.from_path(weights, device="cpu", backend="auto").runtime.precision in ("int8", "bf16", "fp32")
    else:
        with pytest.raises(InputError, match="no int8 model that passed"):
            Predictor.from_path(weights, device="cpu", precision="int8", backend="openvino")
