"""``python -m train <command>``: synth, prepare, splits, fit, evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.arguments import (
    OneLineParser,
    device_name,
    input_file,
    input_folder,
    number,
    output_file,
    output_folder,
    phantom_size,
    random_seed,
    spacing_mm,
    thickness_mm,
)
from model.errors import InputError, WriteError, shown
from model.files import undefined_as_null
from phantoms import DEFAULT_SPEC
from train.layouts import layouts_for, layouts_help, training_layout

CONFIGS = Path(__file__).parent / "configs"

# Each subcommand's arguments are converted and checked by their types (model.arguments) while they are
# parsed: a value outside its plausible range is one line and exit 2 before any work, not a traceback
# (--size 0, --cases -1, --seed -1) or an absurd allocation.
FRACTION = number(float, 0.0, 1.0)

def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    spec = DEFAULT_SPEC  # the grid's defaults: autoPET's, stated once in phantoms.PhantomSpec
    synth = sub.add_parser("synth", help="write synthetic whole-body PET/CT phantoms with lesions",
                           description="Write synthetic whole-body FDG PET/CT studies (the phantoms package).")
    synth.add_argument("--out", type=output_folder, required=True, help="folder to write the studies to")
    synth.add_argument("--cases", type=number(int, 1, 100000), default=8, help="number of studies (default 8)")
    synth.add_argument("--seed", type=random_seed, default=0, help="random seed (default 0)")
    synth.add_argument("--layout", choices=layouts_for("write"), default="tcia", help=layouts_help("write"))
    synth.add_argument("--size", type=phantom_size, default=spec.size,
                       help=f"in-plane matrix, square (default {spec.size})")
    synth.add_argument("--spacing", type=spacing_mm, default=spec.spacing,
                       help=f"in-plane spacing, mm (default {spec.spacing:g})")
    synth.add_argument("--slices", type=number(int, 1, 4096), default=spec.slices,
                       help=f"number of slices (default {spec.slices})")
    synth.add_argument("--thickness", type=thickness_mm, default=spec.slice_thickness,
                       help=f"slice spacing, mm (default {spec.slice_thickness:g})")
    synth.add_argument("--negative-fraction", type=FRACTION, default=0.5,
                       help="share of studies without lesions (default 0.5, as in autoPET)")
    synth.add_argument("--feet-fraction", type=FRACTION, default=spec.feet_fraction,
                       help="share of studies whose field of view runs on to the feet; they get more slices "
                            "(default 0)")
    synth.add_argument("--preview", type=output_file, default=None, metavar="PNG",
                       help="also write a grid of coronal PET MIPs of the first eight studies, lesions outlined")
    synth.add_argument("--tissues", action="store_true",
                       help="also write each study's tissue labels (grand-challenge layout: tissues/<stem>.mha; "
                            "tcia: TISSUES.nii.gz), for train evaluate --tissues")

    prep = sub.add_parser("prepare", help="source studies to the training store (resumable)",
                          description="Check and store the studies of a release (whole slices) for training; "
                                      "prints the studies per diagnosis.")
    prep.add_argument("--source", type=input_folder, required=True,
                      help="the release's folder (the FDG-PET-CT-Lesions NIfTI tree, or an nnU-Net dataset)")
    prep.add_argument("--layout", choices=layouts_for("find"), default="tcia", help=layouts_help("find"))
    prep.add_argument("--out", type=output_folder, required=True, help="the store's folder")
    prep.add_argument("--workers", type=number(int, 1, 1024), default=1,
                      help="studies prepared in parallel (default 1)")
    prep.add_argument("--spacing", type=spacing_mm, nargs=2, default=None, metavar=("X", "Y"),
                      help="resample in-plane to this spacing (mm); fit refuses a store more than 10 %% off "
                           "its config's model.spacing_mm")
    prep.add_argument("--tracer", choices=["fdg", "psma", "all"], default="all",
                      help="keep the studies of one tracer (default all)")
    prep.add_argument("--metadata", type=input_file, default=None,
                      help="the metadata CSV giving each study's diagnosis (default: every CSV under --source: "
                           "TCIA's collection CSV, autoPETmeta.csv, fdg_metadata.csv, psma_metadata.csv)")

    splits = sub.add_parser("splits", help="write DATA/splits.json (patient-grouped, diagnosis-stratified)",
                            description="Write the folds: no patient in two folds, diagnoses spread evenly.")
    splits.add_argument("--data", type=input_folder, required=True, help="the store written by prepare")
    splits.add_argument("--folds", type=number(int, 2, 1000), default=5, help="number of folds (default 5)")
    splits.add_argument("--seed", type=random_seed, default=0, help="random seed of the split (default 0)")

    fit = sub.add_parser("fit", help="train one fold",
                         description="Train one fold; RUN/best holds the best checkpoint in the weights format.")
    fit.add_argument("--data", type=input_folder, required=True, help="the store written by prepare")
    fit.add_argument("--fold", type=number(int, 0, 1000), default=0, help="the fold to train (default 0)")
    fit.add_argument("--config", type=input_file, default=CONFIGS / "paper.json",
                     help="training config (default train/configs/paper.json: the paper's regnety_160 recipe, "
                          "for GPUs; train/configs/demo.json is the small CPU demo)")
    fit.add_argument("--out", type=output_folder, required=True, help="the run's folder (RUN)")
    fit.add_argument("--resume", action="store_true", help="continue from RUN/last.pt, exactly")
    fit.add_argument("--device", type=device_name, default="auto", help="cpu, cuda or cuda:N (default auto)")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (JSON value; model.encoder=... for nested keys)")

    ev = sub.add_parser("evaluate", help="official autoPET metrics of predictions against ground truth",
                        description="Dice, false positive and false negative volume per case and on average.")
    ev.add_argument("--pred", type=input_folder, required=True, help="folder of predicted masks")
    ev.add_argument("--gt", type=input_folder, required=True,
                    help="folder of ground truth masks (matched by file stem)")
    ev.add_argument("--out", type=output_file, default=None, help="CSV (a JSON is written beside it)")
    ev.add_argument("--figures", type=output_folder, default=None, help="folder for one coronal MIP PNG per case")
    ev.add_argument("--pet", type=input_folder, default=None, help="PET folder for the figures' background")
    ev.add_argument("--tissues", type=input_folder, default=None,
                    help="phantoms only: their tissue labels (train synth --tissues writes them to tissues/), "
                         "matched by stem; adds the false positive volume per organ, per case and in total")
    return parser


def main(argv: list[str] | None = None) -> int:
    from train.notices import one_line_warnings

    one_line_warnings()
    try:
        args = _parser().parse_args(argv)
        if args.command == "synth":
            from phantoms import PhantomSpec, write_dataset

            spec = PhantomSpec(size=args.size, spacing=args.spacing, slices=args.slices,
                               slice_thickness=args.thickness, feet_fraction=args.feet_fraction)
            writer = training_layout(args.layout, "write").write
            rows = write_dataset(args.out, args.cases, args.seed, writer, spec, args.negative_fraction,
                                 preview=args.preview, tissues=args.tissues)
            print(f"wrote {len(rows)} phantom studies to {shown(args.out)} ({args.layout} layout)")
        elif args.command == "prepare":
            from train.prepare import prepare

            print(json.dumps(prepare(args.source, args.layout, args.out, args.workers,
                                     tuple(args.spacing) if args.spacing else None, tracer=args.tracer,
                                     metadata=args.metadata)))
        elif args.command == "splits":
            from train.prepare import load_index
            from train.splits import write_splits

            folds = write_splits(load_index(args.data), args.data / "splits.json", args.folds, args.seed)
            print(f"wrote {shown(args.data / 'splits.json')}: " + ", ".join(f"fold {k}: {len(f['val'])} val"
                                                                     for k, f in enumerate(folds)))
        elif args.command == "fit":
            from train.config import FitConfig
            from train.fit import fit as run_fit

            config = FitConfig.load(args.config, args.overrides)
            best = run_fit(args.data, args.fold, config, args.out, args.resume, args.device)
            print(f"best: {json.dumps(best and undefined_as_null(best))}; weights in {shown(args.out / 'best')}")
        elif args.command == "evaluate":
            from train.evaluate import evaluate

            result = evaluate(args.pred, args.gt, args.out, args.figures, args.pet, args.tissues)
            for row in result["cases"]:
                print(json.dumps(row))
            print("mean " + json.dumps(result["mean"]))
            if args.tissues:
                from train.evaluate import organ_table_text

                print(organ_table_text(result["cases"]))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WriteError as error:  # an output that could not be written whole (full disk): nothing half-written
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
