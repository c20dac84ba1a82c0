#!/usr/bin/env python
"""Whole-body FDG PET/CT lesion segmentation: the grand-challenge algorithm and the local command line.

No input argument: grand-challenge mode, /input/images/{pet,ct}/*.mha to
/output/images/automated-petct-lesion-segmentation/<ct uuid>.mha and /output/results.json, nothing else.
Local mode writes the same masks and, per case, <case>.lesions.csv, <case>.report.json, <case>.png and for
DICOM input <case>.seg.dcm in OUT/reports/ (--no-report: none), with the headline numbers in results.json:

  process.py --input DIR --output OUT          DIR/images/{pet,ct}, or a DICOM export (no images/ folder)
  process.py --pet PATH --ct PATH --output OUT  one study; each a .mha/.nii/.nii.gz file or a DICOM series folder
  process.py --manifest FILE.csv --output OUT   explicit pairs: columns pet, ct and optionally name

Cohorts: --skip-existing continues a run that stopped; --num-parts N --part-id K (study i in part i mod N);
torchrun --nproc_per_node=G process.py ... runs one process per GPU (or CPU share), rank 0 writing results.json.
Exit codes: 0 every case written; 1 some case failed (the others are written); 2 nothing could start
(arguments, folders, weights, a setup that cannot run); 130 interrupted (Ctrl-C, wherever it lands: the cases
written are whole, results.json is not written). Every problem is one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

# Only light modules here: --help and argument errors answer before PyTorch is imported (seconds on a busy
# machine); main() imports the rest once the arguments are known to be good.
from model.arguments import (
    BACKENDS,
    OneLineParser,
    body_weight_kg,
    device_name,
    inference_precisions,
    number,
    output_folder,
)
from model.errors import InputError, WriteError, one_line, show_warnings_as_lines
from runner.distributed import part_indices
from studies.suv import SUV_METHODS

if TYPE_CHECKING:
    from runner.run import RunSettings

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS_SHOWN = "weights/ beside process.py"
GRAND_CHALLENGE_INPUT, GRAND_CHALLENGE_OUTPUT = Path("/input"), Path("/output")
EXIT_CASE_FAILED, EXIT_NOT_STARTED, EXIT_INTERRUPTED = 1, 2, 130


def check_device(device: str) -> None:
    """Whether PyTorch and what a run imports load (check_runtime), then a CUDA index that PyTorch sees (the
    device's name was checked by its argument type)."""
    check_runtime()  # the first import of PyTorch: every argument error answers before it
    if not device.startswith("cuda"):
        return
    import torch

    from model.devices import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")


# Every numeric argument's plausible range, checked by its type while it is parsed (model.arguments): an absurd
# value otherwise fails every case after inference (--min-lesion-ml 1e308: OverflowError) or allocates without
# bound (--batch-size).
MAX_LESION_ML = 1e5  # 100 litres: more than any body
MAX_BATCH = 1024
MAX_PARTS = 100_000


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module's text as written, and each option's default after its help (a flag's is off; an option
    without a default says in its help what happens without it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.default is not False and "default" not in text:
            shown_default = DEFAULT_WEIGHTS_SHOWN if action.default == DEFAULT_WEIGHTS else "%(default)s"
            text += f" (default: {shown_default})"
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    from studies.cases import NAMING_RULE

    parser = OneLineParser(description=__doc__, formatter_class=_HelpFormatter)
    inputs = parser.add_argument_group("input (none: grand-challenge mode, /input)",
                                       textwrap.fill(f"Case names: {NAMING_RULE}.", 100))
    inputs.add_argument("--input", type=Path, help="folder with images/pet and images/ct, or a DICOM export")
    inputs.add_argument("--pet", type=Path, help="one study's PET: an image file in SUV or a DICOM series folder")
    inputs.add_argument("--ct", type=Path, help="its CT: an image file in HU or a DICOM series folder")
    inputs.add_argument("--manifest", type=Path, help="CSV with columns pet, ct and optionally name")
    dicom = parser.add_argument_group("DICOM PET")
    dicom.add_argument("--pet-series", help="the PET series (DICOM --input): its SeriesInstanceUID or its "
                       "[number] in the listing a study with several candidates prints")
    dicom.add_argument("--ct-series", help="the CT series (DICOM --input): its UID or its [number] in that listing")
    dicom.add_argument("--suv-method", choices=SUV_METHODS, default=None,
                       help="qiba (default) or autopet (the training data's conversion)")
    dicom.add_argument("--weight-kg", type=body_weight_kg, default=None,
                       help="body weight when PatientWeight is missing")
    parser.add_argument("--output", type=output_folder, default=None,
                        help="output folder (required with an input argument; grand-challenge mode: /output)")
    parser.add_argument("--no-report", action="store_true",
                        help="local mode: masks and results.json only (no reports/ folder)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="a .safetensors checkpoint or a folder of them (an ensemble)")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=inference_precisions(),
                        help="auto: fp16 on CUDA, bf16 on CPUs that have it, else fp32 (int8: OpenVINO, where the "
                             "weights have an int8 model that passed python -m train.quantise's acceptance)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="what runs the network: auto (a GPU: PyTorch; a CPU: the fastest for its kind, OpenVINO "
                             "where installed), torch, or openvino (CPU only)")
    parser.add_argument("--batch-size", type=number(int, 1, MAX_BATCH), default=None,
                        help="slices per batch (default 32 GPU, 8 CPU)")
    parser.add_argument("--tta", action="store_true", help="average over flips (4x slower)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network: slow to start, faster from the second study on")
    parser.add_argument("--min-lesion-ml", type=number(float, 0.0, MAX_LESION_ML), default=0.0,
                        help="drop components smaller than this")
    cohort = parser.add_argument_group("cohorts")
    cohort.add_argument("--skip-existing", action="store_true",
                        help="do not redo a case whose outputs were made with this model and these settings "
                             "(its report agreeing with its mask)")
    cohort.add_argument("--num-parts", type=number(int, 1, MAX_PARTS), default=1,
                        help="split the studies into N parts (job arrays)")
    cohort.add_argument("--part-id", type=number(int, 0, MAX_PARTS - 1), default=0,
                        help="run part K (study i is in part i mod N)")
    cohort.add_argument("--keep-other-cases", action="store_true",
                        help="run into an output folder that holds other cases' masks or reports (from another "
                             "input): keep them (not in this run's results.json or review page); without it, refused")
    cohort.add_argument("--no-read-ahead", action="store_true",
                        help="read, segment and write one study after the other (no worker thread)")
    return parser


def check_arguments(args: argparse.Namespace) -> bool:
    """Argument combinations; returns whether this is grand-challenge mode (no input argument)."""
    given = [name for name, value in (("--input", args.input), ("--pet/--ct", args.pet or args.ct),
                                      ("--manifest", args.manifest)) if value is not None]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)}: give one input")
    if (args.pet is None) != (args.ct is None):
        raise InputError("--pet and --ct: give both (one study)")
    grand_challenge = not given
    if grand_challenge:
        args.output = args.output or GRAND_CHALLENGE_OUTPUT
    elif args.output is None:  # never write into the file system's root by default
        raise InputError(f"{given[0]}: give --output OUT, the folder for masks, reports and results.json")
    if grand_challenge and args.no_report:
        raise InputError("--no-report: reports are written in local mode only (--input, --pet/--ct, --manifest)")
    if args.manifest is not None and args.weight_kg is not None:
        raise InputError("--weight-kg: one body weight for every study of a manifest; give --pet/--ct per study")
    part_indices(0, args.num_parts, args.part_id)  # refuses impossible parts
    check_device(args.device)  # last: it checks the setup, the first import of PyTorch (see check_device)
    return grand_challenge


def check_runtime() -> None:
    """What a run imports loads (a torchvision built for another torch fails here): one line, not a traceback."""
    from runner.environment import runtime_problem

    problem = runtime_problem()
    if problem is not None:
        raise InputError(f"setup: {problem}")


def run_settings(args: argparse.Namespace, grand_challenge: bool) -> RunSettings:
    """The run the checked arguments ask for (runner.run.RunSettings)."""
    from model.inference import InferenceConfig
    from runner.run import RunSettings
    from studies.cases import InputRequest

    request = InputRequest(input=GRAND_CHALLENGE_INPUT if grand_challenge else args.input, pet=args.pet, ct=args.ct,
                           manifest=args.manifest, grand_challenge=grand_challenge, pet_series=args.pet_series,
                           ct_series=args.ct_series, suv_method=args.suv_method, weight_kg=args.weight_kg)
    inference = InferenceConfig(device=args.device, precision=args.precision, backend=args.backend,
                                batch_size=args.batch_size, tta=args.tta, compile=args.compile,
                                min_lesion_ml=args.min_lesion_ml)
    return RunSettings(request=request, output=args.output, weights=args.weights, inference=inference,
                       reports=not grand_challenge and not args.no_report, num_parts=args.num_parts,
                       part_id=args.part_id, skip_existing=args.skip_existing,
                       keep_other_cases=args.keep_other_cases, read_ahead=not args.no_read_ahead)


def print_error(message: object) -> None:
    """``error: <message>`` on stderr as one line (no reader runs beside it here: the cohort is over)."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """The command line; Ctrl-C anywhere ends it with ``interrupted`` and exit 130 (runner.interrupts)."""
    from runner import interrupts

    with interrupts.handling():
        try:
            return _run(argv)
        except KeyboardInterrupt:
            # A write in progress finished whole (runner.interrupts.deferred); the read ahead was dropped.
            print("interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED


def _run(argv: list[str] | None) -> int:
    show_warnings_as_lines()
    try:
        args = parse_args(argv)
        # Everything that can stop the run is checked before the weights load and any case runs: the arguments
        # here, the input, the output folder and the weights in runner.run.
        settings = run_settings(args, check_arguments(args))
        from runner.run import RunNotStarted, run
    except (InputError, OSError) as error:
        print_error(error)
        return EXIT_NOT_STARTED
    try:
        outcome = run(settings)
    except RunNotStarted as error:
        print_error(error)
        return EXIT_NOT_STARTED
    except WriteError as error:  # results.json
        print_error(error)
        return EXIT_CASE_FAILED
    return EXIT_CASE_FAILED if outcome.failed else 0


if __name__ == "__main__":
    import signal

    # main() installs the run's Ctrl-C handling and restores this one after it: once the run has ended (its exit
    # code says how), a late Ctrl-C during the interpreter's teardown changes nothing instead of killing it (-2).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(main())
