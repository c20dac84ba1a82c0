"""``python -m train <command>``: synth, prepare, splits, fit, evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic whole-body PET/CT phantoms")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--cases", type=int, default=8)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--layout", choices=["tcia", "grand-challenge"], default="tcia")
    synth.add_argument("--size", type=int, default=400, help="in-plane matrix (square)")
    synth.add_argument("--spacing", type=float, default=2.0364, help="in-plane spacing, mm")
    synth.add_argument("--slices", type=int, default=326)
    synth.add_argument("--thickness", type=float, default=3.0, help="slice spacing, mm")
    synth.add_argument("--negative-fraction", type=float, default=0.3)

    prep = sub.add_parser("prepare", help="source studies to the training store")
    prep.add_argument("--source", type=Path, required=True)
    prep.add_argument("--layout", choices=["tcia", "nnunet"], default="tcia")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--workers", type=int, default=1)
    prep.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("X", "Y"),
                      help="resample in-plane to this spacing (mm)")

    splits = sub.add_parser("splits", help="write DATA/splits.json (patient-grouped, diagnosis-stratified)")
    splits.add_argument("--data", type=Path, required=True)
    splits.add_argument("--folds", type=int, default=5)
    splits.add_argument("--seed", type=int, default=0)

    fit = sub.add_parser("fit", help="train one fold")
    fit.add_argument("--data", type=Path, required=True)
    fit.add_argument("--fold", type=int, default=0)
    fit.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "paper.json")
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument("--resume", action="store_true")
    fit.add_argument("--device", default="auto")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (JSON value; model.encoder=... for nested keys)")

    ev = sub.add_parser("evaluate", help="official autoPET metrics of predictions against ground truth")
    ev.add_argument("--pred", type=Path, required=True)
    ev.add_argument("--gt", type=Path, required=True)
    ev.add_argument("--out", type=Path, default=None, help="CSV (a JSON is written beside it)")
    ev.add_argument("--figures", type=Path, default=None, help="folder for one coronal MIP PNG per case")
    ev.add_argument("--pet", type=Path, default=None, help="PET folder for the figures' background")

    args = parser.parse_args(argv)
    try:
        if args.command == "synth":
            from train.phantom import PhantomSpec, write_dataset

            spec = PhantomSpec(size=args.size, spacing=args.spacing, slices=args.slices,
                               slice_thickness=args.thickness)
            rows = write_dataset(args.out, args.cases, args.seed, args.layout, spec, args.negative_fraction)
            print(f"wrote {len(rows)} phantom studies to {args.out} ({args.layout} layout)")
        elif args.command == "prepare":
            from train.prepare import prepare

            print(json.dumps(prepare(args.source, args.layout, args.out, args.workers,
                                     tuple(args.spacing) if args.spacing else None)))
        elif args.command == "splits":
            from train.prepare import load_index
            from train.splits import write_splits

            folds = write_splits(load_index(args.data), args.data / "splits.json", args.folds, args.seed)
            print(f"wrote {args.data / 'splits.json'}: " + ", ".join(f"fold {k}: {len(f['val'])} val"
                                                                     for k, f in enumerate(folds)))
        elif args.command == "fit":
            from train.fit import FitConfig
            from train.fit import fit as run_fit

            config = FitConfig.load(args.config, args.overrides)
            best = run_fit(args.data, args.fold, config, args.out, args.resume, args.device)
            print(f"best: {json.dumps(best)}; weights in {args.out / 'best'}")
        elif args.command == "evaluate":
            from train.evaluate import evaluate

            result = evaluate(args.pred, args.gt, args.out, args.figures, args.pet)
            for row in result["cases"]:
                print(json.dumps(row))
            print("mean " + json.dumps(result["mean"]))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
