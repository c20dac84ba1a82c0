"""int8 for OpenVINO, offered only where the masks allow it (issue 26 item 3).

    python -m train.quantise calibrate --weights W.safetensors [--phantoms 4 --tiles 128]
    python -m train.quantise int8 --weights W.safetensors [--keep first_conv head decoder_last | --accuracy-control]

``calibrate`` writes calibration tiles beside the checkpoint (``W.calibration.npz``): windows exactly as the
network sees them in a run (runner.pipeline's grid, normalisation and tiles), from phantoms (seeds apart from
the held-out ones); ``int8`` quantises the converted network with NNCF's post-training quantisation on them,
keeping the layers named by ``--keep`` in the runtime's float precision (KEEP_PATTERNS), and checks the
result on held-out phantoms and the shipped case (test/input) against fp32: no voxel whose fp32 probability
lies further than MARGIN from the threshold may change, and each study's Dice against fp32 must be at least
MIN_DICE. Only then is the int8 model written beside the checkpoint (``W.int8.xml``/``.bin``), with its
record (``W.int8.json``: the model's identity, the recipe, every study's figures); a model that fails writes
its record alone, so that the figures are kept and ``--precision int8`` stays refused
(model.openvino_backend.accepted_int8).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from model.arguments import OneLineParser, input_file, number
from model.checkpoint import load_checkpoint
from model.errors import InputError, one_line
from model.files import atomic_write_bytes, dumps_strict
from model.inference import Predictor, lesion_probability
from model.metrics import dice
from model.network import fold_batch_norm, foreground_probability
from model.openvino_backend import INT8_SUFFIX, compile_network, converted_model
from phantoms import PhantomSpec, make_phantom

# The acceptance (the issue's, and test.sh's margin): a voxel further than this from the threshold in fp32 keeps
# its side; the masks agree at least this well.
MARGIN, MIN_DICE = 0.05, 0.99
# The layers that may stay in float, by OpenVINO node name (the PyTorch frontend names nodes after modules).
KEEP_PATTERNS = {"first_conv": r"__module\.encoder\.model\.stem\..*",
                 "head": r"__module\.segmentation_head\..*",
                 "decoder_last": r"__module\.decoder\.blocks\.{last}\..*",
                 "decoder": r"__module\.decoder\..*"}
CALIBRATION_SEED, HELD_OUT_SEED = 5000, 9000
SHIPPED_CASE = Path(__file__).resolve().parents[1] / "test" / "input" / "images"


class _Recorder:
    """A network that keeps every batch it is given (the calibration tiles, exactly as a run makes them)."""

    def __init__(self, network) -> None:
        self.network, self.batches = network, []

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        self.batches.append(inputs.float().contiguous().numpy().copy())
        return self.network(inputs)


def phantom_studies(count: int, seed: int, spec: PhantomSpec) -> list[tuple[str, sitk.Image, sitk.Image]]:
    """(name, PET, CT) of ``count`` phantoms from ``seed`` on, every other one with lesions."""
    studies = []
    for offset in range(count):
        pet, ct, _ = make_phantom(seed + offset, positive=offset % 2 == 0, spec=spec).images()
        studies.append((f"phantom {seed + offset}", pet, ct))
    return studies


def shipped_case() -> tuple[str, sitk.Image, sitk.Image]:
    (pet,), (ct,) = sorted((SHIPPED_CASE / "pet").glob("*.mha")), sorted((SHIPPED_CASE / "ct").glob("*.mha"))
    return "test/input", sitk.ReadImage(str(pet)), sitk.ReadImage(str(ct))


def calibration_tiles(weights: Path, studies: list, tiles: int, seed: int = 0) -> np.ndarray:
    """(tiles, C, crop, crop) float32 network inputs of ``studies``, drawn evenly at random from all their windows."""
    predictor = Predictor.from_path(weights, device="cpu", precision="fp32", backend="torch")
    recorder = _Recorder(predictor.networks[0])
    predictor.networks = [recorder]
    for _, pet, ct in studies:
        lesion_probability(pet, ct, predictor)
    every = np.concatenate(recorder.batches)
    chosen = np.random.default_rng(seed).choice(len(every), size=min(tiles, len(every)), replace=False)
    return every[np.sort(chosen)]


def calibration_path(weights: Path) -> Path:
    return weights.with_suffix(".calibration.npz")


def quantise(weights: Path, calibration: np.ndarray, keep: list[str]):  # -> openvino.Model
    """NNCF post-training quantisation of the converted network; ``keep``: KEEP_PATTERNS left in float."""
    import nncf

    member = load_checkpoint(weights)
    fold_batch_norm(member.network.eval())
    model = converted_model(member.network, member.model_sha256, len(member.config.channels), member.config.crop_size)
    last = len(member.config.decoder_channels) - 1
    patterns = [KEEP_PATTERNS[name].format(last=last) for name in keep]
    return nncf.quantize(model, nncf.Dataset(list(calibration[:, None])), subset_size=len(calibration),
                         preset=nncf.QuantizationPreset.MIXED,
                         ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None)


def quantise_with_accuracy_control(weights: Path, calibration: np.ndarray, validation: np.ndarray):
    """NNCF's accuracy-controlled quantisation: layers go back to float, the most harmful first, until the masks of
    the ``validation`` tiles agree with fp32's to MIN_DICE (their Dice over all tiles, the metric it keeps)."""
    import nncf

    member = load_checkpoint(weights)
    fold_batch_norm(member.network.eval())
    model = converted_model(member.network, member.model_sha256, len(member.config.channels), member.config.crop_size)
    head, threshold = member.config.head, member.config.threshold
    with torch.no_grad():
        reference = foreground_probability(member.network(torch.from_numpy(validation)), head).numpy() >= threshold

    def masks_dice(compiled, items) -> float:
        got = np.concatenate([foreground_probability(torch.from_numpy(compiled(tile)[0]), head).numpy() >= threshold
                              for tile, _ in items])
        expected = np.concatenate([mask for _, mask in items])
        return float(dice(got, expected))

    items = [(validation[i:i + 1], reference[i:i + 1]) for i in range(len(validation))]
    return nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(list(calibration[:, None])), nncf.Dataset(items), masks_dice,
        max_drop=1.0 - MIN_DICE, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration))


def agreement(reference: np.ndarray, candidate: np.ndarray, threshold: float) -> dict:
    """The acceptance figures of one study: Dice against fp32, and the voxels beyond the margin that changed."""
    expected, got = reference >= threshold, candidate >= threshold
    beyond = np.abs(reference - threshold) > MARGIN
    return {"dice": round(float(dice(got, expected)), 5) if expected.any() or got.any() else 1.0,
            "changed_beyond_margin": int(((expected != got) & beyond).sum()),
            "changed": int((expected != got).sum()), "lesion_voxels_fp32": int(expected.sum())}


def accept(weights: Path, int8_model, studies: list) -> dict[str, dict]:
    """Each study's agreement of the int8 model with PyTorch fp32, through the whole pipeline."""
    reference = Predictor.from_path(weights, device="cpu", precision="fp32", backend="torch")
    candidate = Predictor.from_path(weights, device="cpu", precision="fp32", backend="torch")
    candidate.networks = [compile_network(int8_model, "fp32")]
    figures = {}
    for name, pet, ct in studies:
        expected = sitk.GetArrayFromImage(lesion_probability(pet, ct, reference))
        got = sitk.GetArrayFromImage(lesion_probability(pet, ct, candidate))
        figures[name] = agreement(expected, got, reference.config.threshold)
        print(f"  {name}: {figures[name]}", flush=True)
    return figures


def passes(figures: dict[str, dict]) -> bool:
    return all(f["changed_beyond_margin"] == 0 and f["dice"] >= MIN_DICE for f in figures.values())


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def run_int8(args: argparse.Namespace) -> int:
    import openvino

    calibration = np.load(calibration_path(args.weights))["tiles"]
    member = load_checkpoint(args.weights)
    start = time.perf_counter()
    if args.accuracy_control:  # the last quarter of the tiles validates, the rest calibrates
        split = len(calibration) * 3 // 4
        model = quantise_with_accuracy_control(args.weights, calibration[:split], calibration[split:])
    else:
        model = quantise(args.weights, calibration, args.keep)
    print(f"quantised with {len(calibration)} calibration tiles, keeping {args.keep or 'nothing'} in float "
          f"({time.perf_counter() - start:.0f} s); acceptance against PyTorch fp32:", flush=True)
    spec = PhantomSpec(size=args.size, spacing=member.config.spacing_mm[0], slices=args.slices)
    figures = accept(args.weights, model, phantom_studies(args.held_out, HELD_OUT_SEED, spec) + [shipped_case()])
    ok = passes(figures)
    stem = args.weights.with_suffix("")
    record = {"model_sha256": member.model_sha256, "passed": ok, "margin": MARGIN, "min_dice": MIN_DICE,
              "recipe": {"nncf": _version("nncf"), "preset": "mixed", "keep_in_float": list(args.keep),
                         "accuracy_control": args.accuracy_control,
                         "calibration_tiles": len(calibration), "calibration_sha256": _sha256(calibration)},
              "studies": figures}
    xml = stem.parent / f"{stem.name}{INT8_SUFFIX}.xml"
    if ok:
        openvino.save_model(model, str(xml), compress_to_fp16=False)
    else:
        for stale in (xml, xml.with_suffix(".bin")):
            stale.unlink(missing_ok=True)  # an earlier recipe's model is not this record's
    atomic_write_bytes(xml.with_suffix(".json"), dumps_strict(record))
    worst = min(f["dice"] for f in figures.values())
    beyond = sum(f["changed_beyond_margin"] for f in figures.values())
    print(f"int8 {'PASSED' if ok else 'FAILED'}: worst Dice {worst:.4f} (needs >= {MIN_DICE}), {beyond} voxels "
          f"beyond the {MARGIN} margin changed (needs 0); record {xml.with_suffix('.json')}", flush=True)
    return 0 if ok else 1


def _version(distribution: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(distribution)


def run_calibrate(args: argparse.Namespace) -> int:
    member = load_checkpoint(args.weights)
    spec = PhantomSpec(size=args.size, spacing=member.config.spacing_mm[0], slices=args.slices)
    tiles = calibration_tiles(args.weights, phantom_studies(args.phantoms, CALIBRATION_SEED, spec), args.tiles)
    path = calibration_path(args.weights)
    staging = path.with_name(f".{path.name}")  # ends in .npz: numpy keeps the name; renamed whole into place
    np.savez_compressed(staging, tiles=tiles)
    staging.rename(path)
    print(f"{path}: {len(tiles)} calibration tiles {tuple(tiles.shape[1:])} from {args.phantoms} phantoms "
          f"(seeds {CALIBRATION_SEED}+)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m train.quantise", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("calibrate", "int8"):
        command = commands.add_parser(name)
        command.add_argument("--weights", type=input_file, required=True, help="a .safetensors checkpoint")
        command.add_argument("--size", type=number(int, 32, 1024), default=128, help="phantoms' matrix")
        command.add_argument("--slices", type=number(int, 8, 1024), default=160, help="phantoms' slices")
    commands.choices["calibrate"].add_argument("--phantoms", type=number(int, 1, 100), default=4)
    commands.choices["calibrate"].add_argument("--tiles", type=number(int, 8, 4096), default=128)
    commands.choices["int8"].add_argument("--keep", nargs="*", choices=list(KEEP_PATTERNS), default=[],
                                          help="layers kept in float")
    commands.choices["int8"].add_argument("--accuracy-control", action="store_true",
                                          help="NNCF's accuracy-controlled quantisation (keeps what it must in float)")
    commands.choices["int8"].add_argument("--held-out", type=number(int, 1, 100), default=4,
                                          help="held-out phantoms checked (besides test/input)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run_calibrate(args) if args.command == "calibrate" else run_int8(args)
    except (InputError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
