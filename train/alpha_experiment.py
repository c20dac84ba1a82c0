"""The whole-body strategy's experiment on phantoms: alpha = 1 against alpha = 0, over several training seeds
and two budgets, evaluated on held-out phantoms with the official metrics.

    python -m train.alpha_experiment --work runs/alpha-experiment [--seeds 0 1 2] [--epochs 60] [--steps 25]

- The phantoms and their split are fixed (training phantoms seed 1, held-out seed 99, split seed 0); only
  the training seed varies. A work folder's phantoms are reused, and refused when the phantoms package or the
  grid changed since they were made (start a new --work then).
- Budget ``steps``: every arm trains the same number of steps. Budget ``lesion``: every arm draws about as
  many lesion slices as the largest alpha's arm of the steps budget (reused), so an arm whose epochs hold a
  larger share of lesion slices trains for fewer steps (alpha = 0: that share is 1).
- Each run validates only after its last epoch (val_every = epochs), so the exported weights are the last
  epoch's (no selection by validation).
- Every held-out phantom goes through inference once per run, as process.py runs it
  (runner.cohort.run_cohort); the ``--min-lesion-ml`` values above 0 apply model.postprocessing (what
  process.py's --min-lesion-ml calls) to those masks; then the official metrics.
- Training is bit-reproducible on one machine for a given thread count (``--threads``, recorded): runs are
  spread over ``--jobs`` processes of that many threads each, which does not change a number.
- Printed: per arm, mean and sample standard deviation over seeds of Dice (positives), FPV (all), FNV
  (positives) and of the training loss's change over the last fifth of the epochs; per budget, a paired
  per-case comparison of the largest and smallest alpha (case means over seeds; counts and a Wilcoxon
  signed-rank test); the CPU, threads and precision. Done runs are reused, so a rerun prints the same
  table; ``--check-determinism`` retrains the first run from scratch and compares the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

import phantoms
from model.arguments import (
    OneLineParser,
    input_file,
    number,
    output_folder,
    phantom_size,
    random_seed,
    spacing_mm,
    thickness_mm,
    training_precisions,
)
from model.errors import InputError
from results.outputs import OutputLayout
from train.alpha_summary import paired, table

CONFIG = Path(__file__).parent / "configs" / "demo.json"
# The phantom generator's code: a work folder's phantoms are refused when it changed (digest of every module).
PHANTOM_CODE = Path(phantoms.__file__).parent
SPLIT_SEED = 0
HELDOUT_NEGATIVE_FRACTION = 0.3


@dataclass(frozen=True)
class RunSpec:
    """One training run and its evaluation; everything a worker process needs."""

    name: str
    config: dict  # FitConfig fields
    data: Path
    heldout: Path
    folder: Path
    min_lesion_ml: tuple[float, ...]
    threads: int
    precision: str


@dataclass(frozen=True)
class Arm:
    budget: str
    alpha: float
    steps_per_epoch: int
    lesion_share: float  # share of lesion slices among the items this arm draws

    @property
    def name(self) -> str:
        return f"{self.budget}-alpha{self.alpha:g}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    """Of a file, or of a folder's Python modules (names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def make_phantoms(work: Path, args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """The training store (with its split) and the held-out cases (grand-challenge layout with labels), made
    once per work folder; returns them and what they were made from."""
    from phantoms import PhantomSpec, write_dataset, write_grand_challenge, write_tcia
    from train.prepare import load_index, prepare
    from train.splits import write_splits

    made_from = {"generator_sha256": _sha256(PHANTOM_CODE), "size": args.size, "spacing": args.spacing,
                 "slices": args.slices, "thickness": args.thickness, "train_cases": args.train_cases,
                 "heldout_cases": args.heldout_cases, "train_seed": args.phantom_seeds[0],
                 "heldout_seed": args.phantom_seeds[1], "split_seed": SPLIT_SEED}
    record = work / "phantoms.json"
    data, heldout = work / "data", work / "heldout"
    if record.is_file():
        before = json.loads(record.read_text())
        changed = sorted(key for key in made_from if before.get(key) != made_from[key])
        if changed:
            raise InputError(f"{work}: its phantoms were made with other {', '.join(changed)} (the phantoms package or "
                             "the flags changed); give a new --work")
        return data, heldout, made_from
    spec = PhantomSpec(size=args.size, spacing=args.spacing, slices=args.slices, slice_thickness=args.thickness)
    for folder in (work / "phantoms", data, heldout):  # what an interrupted first attempt left
        shutil.rmtree(folder, ignore_errors=True)
    _log(f"alpha experiment: making {args.train_cases} training and {args.heldout_cases} held-out phantoms")
    with open(work / "prepare.log", "w") as log, contextlib.redirect_stdout(log):
        write_dataset(work / "phantoms", args.train_cases, args.phantom_seeds[0], write_tcia, spec, progress=False)
        prepare(work / "phantoms", "tcia", data, progress=False)
        write_dataset(heldout, args.heldout_cases, args.phantom_seeds[1], write_grand_challenge, spec,
                      HELDOUT_NEGATIVE_FRACTION, progress=False)
    write_splits(load_index(data), data / "splits.json", seed=SPLIT_SEED)
    record.write_text(json.dumps(made_from, indent=1))
    return data, heldout, made_from


def lesion_share(data: Path, config: dict, alpha: float, seeds: Sequence[int]) -> float:
    """Share of lesion slices among the items of an epoch (the whole-body sets' own lesion slices included),
    averaged over a full turn of the sets and over the training seeds."""
    from train.config import FitConfig
    from train.fit import Distributed, select_studies
    from train.sampler import WholeBodySampler

    fit_config = FitConfig(**{**config, "alpha": alpha})
    studies = select_studies(data, 0, fit_config, Distributed())
    shares = []
    for seed in seeds:
        sampler = WholeBodySampler(studies.train, alpha=alpha, beta=fit_config.beta,
                                   set_carry_over=fit_config.set_carry_over, seed=seed,
                                   set_size=fit_config.set_size, whole_body_negatives=fit_config.whole_body_negatives)
        lesion = set(sampler.lesion_slices)
        for epoch in range(0, max(len(sampler.sets), 1) * fit_config.beta, fit_config.beta):
            items = sampler.epoch_items(epoch)
            shares.append(sum(item in lesion for item in items) / len(items))
    return statistics.fmean(shares)


def make_arms(budgets: Sequence[str], alphas: Sequence[float], steps: int, shares: dict[float, float]) -> list[Arm]:
    """The arms of each budget; the lesion budget gives alpha a the steps that draw as many lesion slices as
    ``steps`` steps of the largest alpha."""
    reference = max(alphas)
    arms = []
    for budget in budgets:
        for alpha in alphas:
            arm_steps = steps if budget == "steps" else max(round(steps * shares[reference] / shares[alpha]), 1)
            arms.append(Arm(budget, alpha, arm_steps, shares[alpha]))
    return arms


def run_config(base: dict, alpha: float, seed: int, epochs: int, steps: int, precision: str) -> dict:
    """The FitConfig of one run: validated only after the last epoch, which is therefore the one exported."""
    return {**base, "alpha": alpha, "seed": seed, "epochs": epochs, "cosine_epochs": epochs,
            "steps_per_epoch": steps, "val_every": epochs, "precision": precision}


def run_name(config: dict) -> str:
    """Readable, and unique for the configuration: a changed setting gives a new run, never a stale one."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:8]
    return f"alpha{config['alpha']:g}-steps{config['steps_per_epoch']}-seed{config['seed']}-{digest}"


def loss_change_last_fifth(metrics_csv: Path) -> float:
    """Relative change of the raw training loss (Dice + Lovasz + BCE, without the learned weights, which move
    the weighted total on their own) from the second-last fifth of the epochs to the last: near 0 when flat."""
    from train.loss import LOSS_NAMES, with_log_names

    with open(metrics_csv, newline="") as handle:  # a run's log of any age (with_log_names)
        losses = [sum(float(with_log_names(row)[name]) for name in LOSS_NAMES) for row in csv.DictReader(handle)]
    fifth = max(len(losses) // 5, 1)
    last, before = losses[-fifth:], losses[-2 * fifth:-fifth]
    if not before:
        return float("nan")
    return (statistics.fmean(last) - statistics.fmean(before)) / statistics.fmean(before)


def weights_digest(weights: Path) -> str:
    return _sha256(weights)[:16]


def postprocessed(predictions: Path, out: Path, min_ml: float) -> Path:
    """process.py's masks with components under ``min_ml`` dropped by model.postprocessing, as process.py's
    --min-lesion-ml does after segmenting; returns the folder of the new masks."""
    import SimpleITK as sitk

    from model.postprocessing import remove_small_components
    from studies.readers import image_stem, is_image_name, read_image

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(predictions.iterdir()):
        if not is_image_name(path.name):
            continue
        image = read_image(path, "prediction")
        kept = sitk.GetImageFromArray(remove_small_components(sitk.GetArrayFromImage(image), image.GetSpacing(),
                                                              min_ml))
        kept.CopyInformation(image)
        sitk.WriteImage(kept, str(out / f"{image_stem(path)}.mha"), useCompression=True)
    return out


def segment_cases(cases: Path, weights: Path, out: Path, precision: str) -> Path:
    """Segment a folder in the grand-challenge layout on the CPU as ``process.py --backend torch`` does, through
    runner's cohort API (the one place this experiment calls it); returns the masks' folder. PyTorch, so that
    the experiment's figures do not depend on which runtime a CPU kind's ``auto`` picks."""
    from model.inference import InferenceConfig, Predictor
    from runner.cohort import CohortOptions, run_cohort
    from studies.cases import layout_cases

    predictor = Predictor.from_path(weights, InferenceConfig(device="cpu", precision=precision))
    summary = run_cohort(layout_cases(cases), predictor, out, CohortOptions())
    if summary.count("failed"):
        raise InputError(f"{out}: {summary.count('failed')} held-out cases failed (see process.log)")
    return OutputLayout(out).masks


def train_and_score(spec: RunSpec) -> dict:
    """Train one run (resumed or reused when done), run process.py on the held-out phantoms, score every
    post-processing value. Returns the run's result; also written to RUN/result.json."""
    from train.config import FitConfig
    from train.evaluate import evaluate
    from train.fit import fit

    torch.set_num_threads(spec.threads)
    result_path = spec.folder / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if all(f"{min_ml:g}" in result["scores"] for min_ml in spec.min_lesion_ml):
            return result
    spec.folder.mkdir(parents=True, exist_ok=True)
    weights = spec.folder / "best" / "model.safetensors"
    if not (spec.folder / "done").is_file():
        with open(spec.folder / "fit.log", "a") as log, contextlib.redirect_stdout(log):
            fit(spec.data, 0, FitConfig(**spec.config), spec.folder, resume=True, device="cpu", progress=False)
        if not weights.is_file():
            raise InputError(f"{spec.folder}: the run exported no weights")
        (spec.folder / "done").write_text("")
    with open(spec.folder / "process.log", "w") as log, contextlib.redirect_stdout(log):
        masks = segment_cases(spec.heldout, weights.parent, spec.folder / "heldout", spec.precision)
    scores = {}
    for min_ml in spec.min_lesion_ml:
        folder = masks if min_ml == 0 else postprocessed(masks, spec.folder / f"heldout-min{min_ml:g}ml", min_ml)
        scores[f"{min_ml:g}"] = evaluate(folder, spec.heldout / "labels")
    result = {"name": spec.name, "seed": spec.config["seed"], "weights_sha256": weights_digest(weights),
              "loss_change_last_fifth": loss_change_last_fifth(spec.folder / "metrics.csv"), "scores": scores}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def run_all(specs: list[RunSpec], jobs: int) -> dict[str, dict]:
    """Every run, ``jobs`` at a time in their own processes (or here when jobs is 1)."""
    results: dict[str, dict] = {}
    started = time.perf_counter()
    if jobs == 1:
        for k, spec in enumerate(specs, 1):
            _log(f"alpha experiment: run {k}/{len(specs)} {spec.name}")
            results[spec.name] = train_and_score(spec)
        return results
    with ProcessPoolExecutor(min(jobs, len(specs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_score, spec): spec for spec in specs}
        try:
            for k, future in enumerate(as_completed(futures), 1):
                results[futures[future].name] = future.result()
                _log(f"alpha experiment: {k}/{len(specs)} runs done ({futures[future].name}), "
                     f"{(time.perf_counter() - started) / 60:.1f} min")
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the runs not started yet; a rerun resumes the others
            raise
    return results


def machine(threads: int, precision: str) -> dict[str, str]:
    """What the numbers depend on besides the code: CPU, threads, precisions, torch."""
    from model.devices import cpu_supports_bf16, resolve_precision
    from train.fit import training_precision

    model_name = platform.processor()
    with contextlib.suppress(OSError):
        model_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name")), model_name)
    cpu = torch.device("cpu")
    return {"cpu": model_name, "threads": str(threads), "cpu_bf16": str(cpu_supports_bf16()),
            "training_precision": str(training_precision(cpu, precision)[0]).replace("torch.", ""),
            "inference_precision": str(resolve_precision(precision, cpu)).replace("torch.", ""),
            "torch": torch.__version__}


def _figures(work: Path, heldout: Path, arms: list[Arm], runs_of: dict[Arm, list[RunSpec]]) -> None:
    """Per budget, one picture per held-out case: the first seed's masks of the largest and smallest alpha
    (process.py's, no post-processing) over the PET MIP with the ground truth."""
    from results.figures import Outline, mip_figure
    from studies.readers import read_image
    from train.evaluate import images_by_stem, pair_pets

    labels = images_by_stem(heldout / "labels")
    pets = pair_pets(images_by_stem(heldout / "images" / "pet"), list(labels))
    for budget in dict.fromkeys(arm.budget for arm in arms):
        budget_arms = sorted((arm for arm in arms if arm.budget == budget), key=lambda arm: -arm.alpha)
        shown = [budget_arms[0], budget_arms[-1]]
        folder = work / "figures" / budget
        folder.mkdir(parents=True, exist_ok=True)
        for stem, label in labels.items():
            outlines = [Outline(read_image(label, "ground truth"), "limegreen", "ground truth")]
            for arm, colour in zip(shown, ("red", "royalblue"), strict=True):
                masks = OutputLayout(runs_of[arm][0].folder / "heldout").masks
                outlines.append(Outline(read_image(masks / label.name, "prediction"), colour, f"alpha {arm.alpha:g}"))
            mip_figure(folder / f"{stem}.png", read_image(pets[stem], "PET"), outlines,
                       f"{stem}: {budget} budget, seed {runs_of[shown[0]][0].config['seed']}")


def run_experiment(args: argparse.Namespace) -> dict:
    from train.config import FitConfig

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    base = dataclasses.asdict(FitConfig.load(args.config, args.set))
    data, heldout, phantoms = make_phantoms(work, args)
    shares = {alpha: lesion_share(data, base, alpha, args.seeds) for alpha in args.alphas}
    arms = make_arms(args.budgets, args.alphas, args.steps, shares)
    runs_of: dict[Arm, list[RunSpec]] = {}
    specs: dict[str, RunSpec] = {}  # one run serves every arm with its alpha and steps (the lesion budget's reference)
    for arm in arms:
        for seed in args.seeds:
            config = run_config(base, arm.alpha, seed, args.epochs, arm.steps_per_epoch, args.precision)
            name = run_name(config)
            specs.setdefault(name, RunSpec(name, config, data, heldout, work / "runs" / name,
                                           tuple(args.min_lesion_ml), args.threads, args.precision))
            runs_of.setdefault(arm, []).append(specs[name])
    done = run_all(list(specs.values()), args.jobs)
    batch = base["batch_size"]
    results: dict = {"machine": machine(args.threads, args.precision), "phantoms": phantoms, "epochs": args.epochs,
                     "seeds": args.seeds, "lesion_share": {f"{a:g}": s for a, s in shares.items()}, "arms": {}}
    for arm in arms:
        for min_ml in args.min_lesion_ml:
            runs = [done[spec.name] for spec in runs_of[arm]]
            results["arms"][f"{arm.name}-min{min_ml:g}ml"] = {
                "budget": arm.budget, "alpha": arm.alpha, "steps_per_epoch": arm.steps_per_epoch,
                "lesion_slices_drawn": round(args.epochs * arm.steps_per_epoch * batch * arm.lesion_share),
                "min_lesion_ml": min_ml,
                "runs": [{"seed": run["seed"], "run": run["name"], "weights_sha256": run["weights_sha256"],
                          "loss_change_last_fifth": run["loss_change_last_fifth"],
                          "mean": run["scores"][f"{min_ml:g}"]["mean"], "cases": run["scores"][f"{min_ml:g}"]["cases"]}
                         for run in runs]}
    high, low = max(args.alphas), min(args.alphas)
    results["paired"] = {}
    for budget in args.budgets:
        for min_ml in args.min_lesion_ml:
            a = results["arms"][f"{budget}-alpha{high:g}-min{min_ml:g}ml"]
            b = results["arms"][f"{budget}-alpha{low:g}-min{min_ml:g}ml"]
            results["paired"][f"{budget}-min{min_ml:g}ml"] = {
                key: paired([r["cases"] for r in a["runs"]], [r["cases"] for r in b["runs"]], key)
                for key in ("dice", "fpv_ml")}
    if args.check_determinism:
        first = next(iter(specs.values()))
        again = dataclasses.replace(first, folder=work / "determinism" / first.name)
        shutil.rmtree(again.folder, ignore_errors=True)  # from scratch, never a reused run
        _log(f"alpha experiment: retraining {first.name} from scratch")
        results["deterministic"] = train_and_score(again)["weights_sha256"] == done[first.name]["weights_sha256"]
    if args.figures:
        _figures(work, heldout, arms, runs_of)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m train.alpha_experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=output_folder, default=Path("runs/alpha-experiment"), help="working folder")
    parser.add_argument("--seeds", type=random_seed, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--alphas", type=number(float, 0.0, 1e3), nargs="+", default=[1.0, 0.0])
    parser.add_argument("--budgets", nargs="+", choices=["steps", "lesion"], default=["steps", "lesion"])
    parser.add_argument("--epochs", type=number(int, 1, 10**6), default=60)
    parser.add_argument("--steps", type=number(int, 1, 10**6), default=25, help="steps per epoch of the steps budget")
    parser.add_argument("--min-lesion-ml", type=number(float, 0.0, 1e5), nargs="+", default=[0.0, 0.5, 2.0],
                        help="post-processing values evaluated for every run")
    parser.add_argument("--train-cases", type=number(int, 1, 100_000), default=30)
    parser.add_argument("--heldout-cases", type=number(int, 1, 100_000), default=10)
    parser.add_argument("--phantom-seeds", type=random_seed, nargs=2, default=[1, 99], metavar=("TRAIN", "HELDOUT"),
                        help="seeds of the training and held-out phantoms (default 1 99)")
    parser.add_argument("--size", type=phantom_size, default=128, help="phantom in-plane matrix (default 128)")
    parser.add_argument("--spacing", type=spacing_mm, default=4.0728,
                        help="phantom in-plane spacing, mm (default 4.0728)")
    parser.add_argument("--slices", type=number(int, 1, 4096), default=160, help="phantom slices (default 160)")
    parser.add_argument("--thickness", type=thickness_mm, default=6.0, help="phantom slice spacing, mm (default 6)")
    parser.add_argument("--config", type=input_file, default=CONFIG, help="training config (default: demo.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override for every run")
    # a CPU trains without fp16 (model.devices.precision_rule)
    parser.add_argument("--precision", choices=[p for p in training_precisions() if p != "fp16"], default="auto",
                        help="training and inference precision (auto: bf16 where the CPU has it, else fp32)")
    parser.add_argument("--threads", type=number(int, 1, 1024), default=1,
                        help="torch threads per run (default 1); the numbers depend on it, so it is recorded")
    parser.add_argument("--jobs", type=number(int, 1, 1024), default=None,
                        help="runs at a time, each in its own process (default: CPUs / threads); no number "
                             "depends on it")
    parser.add_argument("--check-determinism", action="store_true",
                        help="retrain the first run from scratch and compare its weights")
    parser.add_argument("--figures", action="store_true",
                        help="per budget and held-out case, a MIP with the first seed's masks of both alphas")
    args = parser.parse_args(argv)
    if args.jobs is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        args.jobs = max(cpus // max(args.threads, 1), 1)
    if len(set(args.alphas)) < 2 or any(not 0 <= a for a in args.alphas):
        parser.error("--alphas needs at least two different values, none negative")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        results = run_experiment(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
