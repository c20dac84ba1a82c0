"""``train fit``: one fold of the whole-body strategy, resumable, on one device or several (torchrun).

fit() runs named steps: select_studies (the fold, checked against the config), build_optimisation
(network, optimiser, schedule, precision), then per epoch train_one_epoch, validate_and_export and
save_state; load_state resumes. Everything a run needs is built once into a Run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from model.checkpoint import save_checkpoint, training_network
from model.config import DEFAULT_HEAD, DEFAULT_ORIENTATION, ModelConfig
from model.devices import precision_rule
from model.errors import InputError
from model.files import atomic_target, atomic_write_bytes, undefined_as_null
from model.geometry import SPACING_TOLERANCE, needs_inplane_resampling
from model.network import IMAGENET
from train.augment import augment, build_augmentation
from train.config import FitConfig
from train.data import SliceDataset
from train.loss import LOSS_NAMES, UNCERTAINTY_NAMES, UncertaintyWeightedLoss, with_log_names
from train.notices import warn
from train.prepare import STORE_FORMAT, bodyless_slices, load_index
from train.sampler import WholeBodySampler
from train.splits import read_fold, write_splits
from train.validation import check_validation_sources, validate

# metrics.csv: one row per epoch under this fixed header; validation columns stay empty between validations.
# Losses are named as losses (loss, loss_dice...), validation metrics as metrics: val_dice, val_fpv_ml,
# val_fnv_ml the official metrics of the deployment pipeline on whole validation studies (model selection uses
# them); val_seed_crop_dice the seed authors' own measure (model.metrics.seed_crop_dice).
METRICS_FIELDS = ("epoch", "steps", "seconds", "lr", "loss", *LOSS_NAMES, *UNCERTAINTY_NAMES, "nonfinite_steps",
                  "val_dice", "val_fpv_ml", "val_fnv_ml", "val_seed_crop_dice", "val_cases", "val_positive_cases")
StepCallback = Callable[[int], None]


class TrainModule(torch.nn.Module):
    """Network and learned loss weights in one module, so that DDP averages the gradients of both."""

    def __init__(self, network: torch.nn.Module, dice: str = "foreground_batch", head: str = DEFAULT_HEAD):
        super().__init__()
        self.network = network
        self.loss = UncertaintyWeightedLoss(dice=dice, head=head)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(self.network(image), mask)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every rank (all ranks must skip a step together)."""
        flag = torch.isfinite(value.detach()).all().float().reshape(1)
        if self.world_size > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())


def training_precision(device: torch.device, precision: str = "auto") -> tuple[torch.dtype, bool]:
    """Autocast dtype and whether a GradScaler is needed: model.devices' rule for training (bf16 where the
    device has it, else fp16 with a scaler on CUDA, else fp32; fp16 trains on CUDA only)."""
    rule = precision_rule(precision, device, training=True)
    return rule.dtype, rule.scaler


@dataclass
class Studies:
    train: list[dict]
    val: list[dict]


@dataclass
class Optimisation:
    module: TrainModule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype


@dataclass
class RunState:
    """What a resume needs besides the weights: written to RUN/last.pt after every epoch."""

    next_epoch: int = 0
    best: dict[str, Any] | None = None
    global_step: int = 0
    nonfinite_steps: int = 0


@dataclass
class Run:
    """Everything one fold's training works with, built once by fit()."""

    config: FitConfig
    model_config: ModelConfig
    data: Path
    fold: int
    out: Path
    device: torch.device
    ddp: Distributed
    studies: Studies
    optimisation: Optimisation
    provenance: dict[str, Any]
    on_step: StepCallback | None = None
    progress: bool | None = None


def check_store_spacing(rows: list[dict], model_config: ModelConfig, data: Path) -> None:
    """Stop when a study's in-plane spacing is further from model.spacing_mm than inference tolerates: the
    network would train at one spacing and be run at another."""
    for row in rows:
        grid = sitk.Image([1, 1, 1], sitk.sitkUInt8)
        grid.SetSpacing([float(s) for s in row["spacing"]])
        if needs_inplane_resampling(grid, model_config.spacing_mm):
            x, y = row["spacing"][:2]
            raise InputError(
                f"{data}: study {row['study']} has in-plane spacing {x:.4g} x {y:.4g} mm, more than "
                f"{SPACING_TOLERANCE:.0%} off the config's model.spacing_mm {list(model_config.spacing_mm)}; "
                f"prepare the store with --spacing {model_config.spacing_mm[0]} {model_config.spacing_mm[1]}")


def check_store_orientation(rows: list[dict], model_config: ModelConfig, data: Path) -> None:
    """Stop when the store's slices are not in the orientation the checkpoint will record: inference would show
    the network its input flipped or turned. Stores prepared before the field existed are in the default."""
    for row in rows:
        orientation = row.get("orientation", DEFAULT_ORIENTATION)
        if orientation != model_config.orientation:
            raise InputError(f"{data}: study {row['study']} is stored in orientation {orientation}, the config's "
                             f"model.orientation is {model_config.orientation}")


def check_store_format(rows: list[dict], data: Path) -> None:
    """Stop on a store prepared before it kept whole slices (train.prepare.STORE_FORMAT): its slices were cut to
    the body's box, so training would pad them with fill values where deployment sees the slice's own air,
    couch and PET background, and validation could not find the source studies it runs."""
    for row in rows:
        if row.get("store_format", 1) != STORE_FORMAT:
            raise InputError(f"{data}: study {row['study']} was prepared cut to its body's box (store format "
                             f"{row.get('store_format', 1)}); training needs whole slices (format {STORE_FORMAT}): "
                             "run `python -m train prepare` again into a new folder")


def with_bodyless_slices(rows: list[dict], data: Path, model_config: ModelConfig) -> list[dict]:
    """Rows that say which slices have no body under this config's body threshold (read from the store
    where prepare recorded them with another threshold, or did not record them)."""
    threshold = model_config.normalisation.body_threshold_hu
    filled = []
    for row in rows:
        if "bodyless_slices" not in row or row.get("body_threshold_hu") != threshold:
            ct = np.load(Path(data) / "studies" / row["study"] / "ct.npy")
            row = {**row, "bodyless_slices": bodyless_slices(ct, model_config.normalisation),
                   "body_threshold_hu": threshold}
        filled.append(row)
    return filled


def select_studies(data: Path, fold: int, config: FitConfig, ddp: Distributed) -> Studies:
    """The fold's training and validation studies (splits.json is written on first use)."""
    index = load_index(data)
    splits_path = Path(data) / "splits.json"
    if not splits_path.is_file():
        if ddp.main:
            write_splits(index, splits_path, config.folds, config.seed)
        ddp.barrier()
    split = read_fold(splits_path, fold)
    by_id = {row["study"]: row for row in index}
    train_rows = [by_id[s] for s in split["train"] if s in by_id]
    val_rows = [by_id[s] for s in split["val"] if s in by_id]
    if config.positive_studies_only:
        positives = [r for r in val_rows if r["lesion_slices"]]
        if val_rows and not positives and ddp.main:
            # Validate on what there is rather than not at all: FPV of the negatives picks the best epoch.
            warn(f"fold {fold}: its {len(val_rows)} validation studies are all negative: validating on the false "
                 "positive volume alone (Dice and FNV are undefined)")
        val_rows = positives or val_rows
        if not config.whole_body_negatives:
            train_rows = [r for r in train_rows if r["lesion_slices"]]
    if config.val_max_studies:
        val_rows = val_rows[: config.val_max_studies]
    if not train_rows:
        raise InputError(f"{data}: fold {fold} has no training studies")
    model_config = config.model_config()
    check_store_format(train_rows + val_rows, data)
    check_validation_sources(val_rows, data)
    check_store_spacing(train_rows + val_rows, model_config, data)
    check_store_orientation(train_rows + val_rows, model_config, data)
    return Studies(train=with_bodyless_slices(train_rows, data, model_config), val=val_rows)


def build_optimisation(config: FitConfig, model_config: ModelConfig, device: torch.device, ddp: Distributed,
                       pretrained: str | None) -> Optimisation:
    """Network (from ``pretrained``), learned loss weights, AdamW in two groups, cosine schedule, precision.

    AdamW as the paper says; with weight_decay 0 (paper.json) it is exactly the seed code's Adam (its
    petct_solver.py: torch.optim.Adam, no weight decay), so one config agrees with both."""
    torch.manual_seed(config.seed)
    if not ddp.main:
        ddp.barrier()  # the main rank fetches ImageNet weights into the hub's cache first
    network = training_network(model_config, pretrained)
    if ddp.main:
        ddp.barrier()
    module = TrainModule(network, config.dice, model_config.head).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        [{"params": module.network.parameters(), "lr": config.lr, "weight_decay": config.weight_decay},
         {"params": module.loss.parameters(), "lr": config.loss_lr, "weight_decay": 0.0}],
        betas=config.betas)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.cosine_epochs, eta_min=config.lr_min)
    amp_dtype, needs_scaler = training_precision(device, config.precision)
    return Optimisation(module, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=needs_scaler), amp_dtype)


def save_state(path: Path, optimisation: Optimisation, state: RunState) -> None:
    with atomic_target(path) as tmp:
        torch.save({"module": optimisation.module.state_dict(), "optimizer": optimisation.optimizer.state_dict(),
                    "scheduler": optimisation.scheduler.state_dict(), "scaler": optimisation.scaler.state_dict(),
                    "epoch": state.next_epoch - 1, "best": state.best, "global_step": state.global_step,
                    "nonfinite_steps": state.nonfinite_steps, "torch_rng": torch.get_rng_state()}, tmp)


def load_state(path: Path, optimisation: Optimisation) -> RunState:
    state = torch.load(path, map_location="cpu", weights_only=True)
    optimisation.module.load_state_dict(state["module"])
    optimisation.optimizer.load_state_dict(state["optimizer"])
    optimisation.scheduler.load_state_dict(state["scheduler"])
    optimisation.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return RunState(next_epoch=state["epoch"] + 1, best=state["best"], global_step=state["global_step"],
                    nonfinite_steps=state.get("nonfinite_steps", 0))


def _better(metrics: dict[str, float], best: dict[str, float] | None) -> bool:
    """Best by Dice, ties broken by the smaller false positive volume."""
    if best is None:
        return True
    dice, best_dice = metrics["dice"], best["dice"]
    if math.isnan(best_dice):
        return not math.isnan(dice) or metrics["fpv_ml"] < best["fpv_ml"]
    if math.isnan(dice):
        return False
    return dice > best_dice + 1e-9 or (abs(dice - best_dice) <= 1e-9 and metrics["fpv_ml"] < best["fpv_ml"])


def train_one_epoch(run: Run, state: RunState, epoch: int, train_module: torch.nn.Module,
                    sampler: WholeBodySampler, dataset: SliceDataset, aug: torch.nn.Module | None) -> dict[str, Any]:
    """One epoch of steps; returns its metrics row. Steps with a non-finite loss are skipped (no update)."""
    config, opt, device = run.config, run.optimisation, run.device
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    torch.manual_seed(config.seed * 100_003 + epoch)  # augmentation draws are a function of the epoch
    loader = DataLoader(dataset, batch_size=rank_batch_size(config, run.ddp), sampler=sampler,
                        num_workers=config.workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=False,
                        multiprocessing_context="spawn" if config.workers else None)
    steps = config.steps_per_epoch or len(loader)
    opt.module.train()
    sums = {"loss": 0.0, **dict.fromkeys(LOSS_NAMES, 0.0)}
    skipped = 0
    started = time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", leave=False,
               disable=(None if run.progress is None else not run.progress) if run.ddp.main else True)
    for image, mask in _cycle(loader, steps):
        image = image.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
        if aug is not None:
            image, mask = augment(aug, image, mask)
        image = image.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(device.type, dtype=opt.amp_dtype) if opt.amp_dtype != torch.float32
                    else contextlib.nullcontext())
        with autocast:
            loss, terms = train_module(image, mask)
        state.global_step += 1
        if run.ddp.all_finite(loss):
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scaler.scale(loss).backward()
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            sums["loss"] += float(loss.detach())
            for name, value in terms.items():
                sums[name] += value
        else:
            skipped += 1
            state.nonfinite_steps += 1
            if state.nonfinite_steps > config.max_nonfinite_steps:
                raise InputError(f"{run.data}: {state.nonfinite_steps} training steps had a non-finite loss, more "
                                 f"than max_nonfinite_steps = {config.max_nonfinite_steps}; check the store's "
                                 "studies (skipped.json, prepare's warnings) or lower lr")
        bar.update()
        if run.on_step is not None:
            run.on_step(state.global_step)
    bar.close()
    opt.scheduler.step()
    if skipped:
        warn(f"epoch {epoch}: {skipped} of {steps} steps skipped with a non-finite loss ({state.nonfinite_steps} in "
             f"this run; it stops after max_nonfinite_steps = {config.max_nonfinite_steps})")
    done = max(steps - skipped, 1)
    return {"epoch": epoch, "steps": steps, "seconds": round(time.perf_counter() - started, 2),
            "lr": opt.optimizer.param_groups[0]["lr"], **{k: v / done for k, v in sums.items()},
            **{name: float(s) for name, s in zip(UNCERTAINTY_NAMES, opt.module.loss.s.detach(), strict=True)},
            "nonfinite_steps": skipped}


def rank_batch_size(config: FitConfig, ddp: Distributed) -> int:
    """Each rank's share of the config's batch, which is the global batch (the slices of one optimiser step)
    whatever the number of ranks: 24 on one GPU is 6 on each of four."""
    if config.batch_size % ddp.world_size:
        raise InputError(f"batch_size {config.batch_size} is the global batch: it must divide by the "
                         f"{ddp.world_size} ranks (each takes an equal share)")
    return config.batch_size // ddp.world_size


def validation_due(epoch: int, config: FitConfig) -> bool:
    """After every val_every-th epoch and after the last: when val_every exceeds epochs, the last epoch is
    the one validated (and exported)."""
    return (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs


def validate_and_export(run: Run, state: RunState, epoch: int) -> dict[str, Any]:
    """Validate when due and export RUN/best when the network is the best so far (by Dice, ties by FPV);
    without validation studies the last epoch is exported. Returns the val_* columns of the row."""
    if not validation_due(epoch, run.config):
        return {}
    network, stem = run.optimisation.module.network, run.out / "best" / "model"
    provenance = {**run.provenance, "epoch": epoch}
    store = run.data.resolve().name
    trained_on = f"{len(run.studies.train)} studies of the store {store} (fold {run.fold}'s training studies)"
    if not run.studies.val:
        if epoch + 1 == run.config.epochs:
            save_checkpoint(network, run.config.model_config(trained_on, {}, **provenance, metrics=None), stem)
        return {}
    metrics = validate(network, run.model_config, run.data, run.studies.val, run.device, run.config.val_batch_size)
    if _better(metrics, state.best):
        state.best = {**metrics, "epoch": epoch}
        held_out = {"data": f"fold {run.fold}'s {len(run.studies.val)} validation studies of the store {store} "
                            "(the best epoch was chosen on them)", **undefined_as_null(metrics)}
        save_checkpoint(network, run.config.model_config(trained_on, held_out, **provenance,
                                                         metrics=undefined_as_null(metrics)), stem)
    return {f"val_{k}": v for k, v in metrics.items()}


def _pretrained_provenance(pretrained: str | None, encoder: str) -> dict[str, Any]:
    if pretrained is None:
        return {"pretrained": pretrained}
    if pretrained == IMAGENET:
        # Which ImageNet weights: an untagged encoder takes timm's default tag, which timm may change.
        import timm

        return {"pretrained": pretrained, "pretrained_tag": timm.models.get_pretrained_cfg(encoder).tag}
    digest = hashlib.sha256(Path(pretrained).read_bytes()).hexdigest()
    return {"pretrained": str(Path(pretrained).resolve()), "pretrained_sha256": digest}


def fit(data: Path, fold: int, config: FitConfig, out: Path, resume: bool = False, device: str = "auto",
        progress: bool | None = None, on_step: StepCallback | None = None) -> dict[str, float] | None:
    """Train one fold; RUN/best holds the best checkpoint in the weights format. Returns its metrics.

    ``on_step`` is called with the global step after every step (tests use it to interrupt a run).
    """
    ddp = Distributed.from_env()
    if ddp.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if device == "auto":
        device = f"cuda:{ddp.local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    writer = None
    try:
        rank_batch_size(config, ddp)  # a batch that does not divide by the ranks stops here, before any work
        studies = select_studies(data, fold, config, ddp)
        out.mkdir(parents=True, exist_ok=True)
        last_path = out / "last.pt"
        resuming = resume and last_path.is_file()
        model_config = config.model_config()
        # A resumed run loads every weight: it needs no initial weights (nor the hub).
        optimisation = build_optimisation(config, model_config, torch_device, ddp,
                                          None if resuming else config.pretrained)
        state = load_state(last_path, optimisation) if resuming else RunState()
        provenance = {"data": str(Path(data).resolve().name), "fold": fold, "train_config": str(out / "config.json"),
                      **_pretrained_provenance(config.pretrained, model_config.encoder)}
        run = Run(config, model_config, Path(data), fold, out, torch_device, ddp, studies, optimisation,
                  provenance, on_step, progress)
        if ddp.main:
            atomic_write_bytes(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2).encode())
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        train_module: torch.nn.Module = optimisation.module
        if ddp.world_size > 1:
            train_module = torch.nn.parallel.DistributedDataParallel(
                optimisation.module, device_ids=[torch_device.index] if torch_device.type == "cuda" else None)
        sampler = WholeBodySampler(studies.train, alpha=config.alpha, beta=config.beta,
                                   set_carry_over=config.set_carry_over, seed=config.seed, rank=ddp.rank,
                                   world_size=ddp.world_size, whole_body_negatives=config.whole_body_negatives,
                                   set_size=config.set_size)
        dataset = SliceDataset(data, studies.train, model_config, config.seed)
        aug = build_augmentation(config.augment).to(torch_device) if config.augment else None
        for epoch in range(state.next_epoch, config.epochs):
            row = train_one_epoch(run, state, epoch, train_module, sampler, dataset, aug)
            state.next_epoch = epoch + 1
            if ddp.main:
                row.update(validate_and_export(run, state, epoch))
                log_epoch(out, writer, row)
                save_state(last_path, optimisation, state)
            ddp.barrier()
        return state.best
    finally:
        if writer is not None:
            writer.close()
        if ddp.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _cycle(loader: DataLoader, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Exactly ``steps`` batches, going through the epoch's items again when they give fewer.

    A fixed number of steps per epoch gives runs with different alphas the same budget.
    """
    produced = 0
    while produced < steps:
        before = produced
        for batch in loader:
            yield batch
            produced += 1
            if produced == steps:
                return
        if produced == before:
            return  # an empty epoch: nothing to cycle through


def log_epoch(out: Path, writer: Any, row: dict[str, Any]) -> None:
    """Append the epoch to RUN/metrics.csv (fixed header; rows of epochs being redone after a resume are
    dropped), to TensorBoard and to stdout."""
    csv_path = out / "metrics.csv"
    kept = []
    if csv_path.is_file():
        with open(csv_path, newline="") as handle:
            kept = [with_log_names(r) for r in csv.DictReader(handle) if (r.get("epoch") or "").isdigit()
                    and int(r["epoch"]) < row["epoch"]]
    with atomic_target(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        table = csv.DictWriter(handle, fieldnames=METRICS_FIELDS, restval="", extrasaction="ignore")
        table.writeheader()
        table.writerows(kept)
        table.writerow(row)
    for key, value in row.items():
        if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(float(value)):
            writer.add_scalar(key, value, row["epoch"])
    summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
    print(summary, flush=True)
