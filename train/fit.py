"""``train fit``: one fold of the whole-body strategy, resumable, on one device or several (torchrun)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from model.checkpoint import Checkpoint, save_checkpoint
from model.config import ModelConfig
from model.errors import InputError
from model.files import atomic_target, atomic_write_bytes
from model.inference import Predictor, cpu_supports_bf16
from model.network import build_network
from train.augment import augment, build_augmentation
from train.data import SliceDataset, StoreVolumes
from train.loss import TERMS, UncertaintyWeightedLoss
from train.metrics import aggregate, case_metrics
from train.prepare import load_index
from train.sampler import WholeBodySampler
from train.splits import read_fold, write_splits

# Tests simulate a crash (a kill -9) at this global step to check that --resume is exact.
KILL_AT_STEP_ENV = "AUTOPET_TEST_KILL_AT_STEP"


@dataclass
class FitConfig:
    """Everything a run depends on; saved in RUN/config.json. ``model`` holds ModelConfig fields."""

    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = 80
    cosine_epochs: int = 100
    batch_size: int = 24
    lr: float = 1e-5
    lr_min: float = 1e-8
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01
    loss_lr: float = 1e-4
    alpha: float = 1.0
    beta: int = 5
    overlap: float = 0.25
    whole_body_negatives: bool = False
    positive_studies_only: bool = True
    augment: bool = True
    workers: int = 4
    seed: int = 0
    folds: int = 5
    steps_per_epoch: int | None = None  # exact when set (items are cycled); else one pass over the epoch
    val_every: int = 1
    val_max_studies: int | None = None
    val_batch_size: int = 16

    @classmethod
    def load(cls, path: Path, overrides: list[str]) -> FitConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: cannot read the training config: {error}") from None
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise InputError(f"--set {item}: expected key=value")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            target = data
            parts = key.split(".")
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{path}: unknown training config keys {sorted(unknown)}")
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        config = cls(**data)
        ModelConfig.from_dict(config.model)  # fail early on a bad model section
        return config

    def model_config(self, **provenance: Any) -> ModelConfig:
        return dataclasses.replace(ModelConfig.from_dict(self.model), provenance=provenance)


class TrainModule(torch.nn.Module):
    """Network and learned loss weights in one module, so that DDP averages the gradients of both."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.loss = UncertaintyWeightedLoss()

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


def training_precision(device: torch.device) -> tuple[torch.dtype, bool]:
    """Autocast dtype and whether a GradScaler is needed: bf16 where supported, else fp16 (CUDA) or fp32."""
    if device.type == "cuda":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    return (torch.bfloat16, False) if cpu_supports_bf16() else (torch.float32, False)


def _atomic_torch_save(obj: dict, path: Path) -> None:
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def validate(network: torch.nn.Module, config: ModelConfig, data: Path, studies: list[dict], device: torch.device,
             batch_size: int) -> dict[str, float]:
    """Whole validation volumes through the inference code path (Predictor.predict_volume)."""
    predictor = Predictor.from_checkpoints([Checkpoint(config, network, data)], device=str(device),
                                           batch_size=batch_size)
    volumes = StoreVolumes(data, studies)
    cases = []
    for i, row in enumerate(studies):
        pet, ct, gt = volumes[i]
        pred = predictor.predict_volume(pet, ct, progress=False)
        cases.append(case_metrics(pred, np.asarray(gt), row["spacing"]))
    network.train()
    return aggregate(cases)


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


def fit(data: Path, fold: int, config: FitConfig, out: Path, resume: bool = False,
        device: str = "auto", progress: bool | None = None) -> dict[str, float] | None:
    """Train one fold; RUN/best holds the best checkpoint in the weights format. Returns its metrics."""
    ddp = Distributed.from_env()
    if ddp.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if device == "auto":
        device = f"cuda:{ddp.local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)

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
        val_rows = [r for r in val_rows if r["lesion_slices"]]
        if not config.whole_body_negatives:
            train_rows = [r for r in train_rows if r["lesion_slices"]]
    if config.val_max_studies:
        val_rows = val_rows[: config.val_max_studies]
    if not train_rows:
        raise InputError(f"{data}: fold {fold} has no training studies")

    out.mkdir(parents=True, exist_ok=True)
    model_config = config.model_config()
    torch.manual_seed(config.seed)
    module = TrainModule(build_network(model_config)).to(torch_device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        [{"params": module.network.parameters(), "lr": config.lr, "weight_decay": config.weight_decay},
         {"params": module.loss.parameters(), "lr": config.loss_lr, "weight_decay": 0.0}],
        betas=config.betas)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.cosine_epochs, eta_min=config.lr_min)
    amp_dtype, needs_scaler = training_precision(torch_device)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)

    start_epoch, best, global_step = 0, None, 0
    last_path = out / "last.pt"
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best, global_step = state["epoch"] + 1, state["best"], state["global_step"]
        torch.set_rng_state(state["torch_rng"])
    if ddp.main:
        atomic_write_bytes(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2).encode())

    train_module = module
    if ddp.world_size > 1:
        train_module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[torch_device.index] if torch_device.type == "cuda" else None)
    sampler = WholeBodySampler(train_rows, config.alpha, config.beta, config.overlap, config.seed, ddp.rank,
                               ddp.world_size, config.whole_body_negatives)
    dataset = SliceDataset(data, train_rows, model_config, config.seed)
    aug = build_augmentation().to(torch_device) if config.augment else None
    writer = None
    if ddp.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    kill_at = int(os.environ.get(KILL_AT_STEP_ENV, "0"))

    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        torch.manual_seed(config.seed * 100_003 + epoch)  # augmentation draws are a function of the epoch
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                            drop_last=True, pin_memory=torch_device.type == "cuda",
                            persistent_workers=False, multiprocessing_context="spawn" if config.workers else None)
        steps = config.steps_per_epoch or len(loader)
        module.train()
        sums = {"loss": 0.0, "dice": 0.0, "lovasz": 0.0, "bce": 0.0}
        started = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", leave=False,
                   disable=(None if progress is None else not progress) if ddp.main else True)
        for image, mask in _cycle(loader, steps):
            image = image.to(torch_device, non_blocking=True)
            mask = mask.to(torch_device, non_blocking=True)
            if aug is not None:
                image, mask = augment(aug, image, mask)
            image = image.contiguous(memory_format=torch.channels_last)
            autocast = (torch.autocast(torch_device.type, dtype=amp_dtype) if amp_dtype != torch.float32
                        else contextlib.nullcontext())
            with autocast:
                loss, terms = train_module(image, mask)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            sums["loss"] += float(loss.detach())
            for k, v in terms.items():
                sums[k] += v
            bar.update()
            if kill_at and global_step == kill_at:
                os._exit(137)
        bar.close()
        scheduler.step()
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {"epoch": epoch, "steps": steps, "seconds": round(seconds, 2),
                               "lr": optimizer.param_groups[0]["lr"]}
        row.update({k: v / max(steps, 1) for k, v in sums.items()})
        row.update({f"s_{name}": float(s) for name, s in zip(TERMS, module.loss.s.detach(), strict=True)})
        if ddp.main:
            if val_rows and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                metrics = validate(module.network, model_config, data, val_rows, torch_device, config.val_batch_size)
                row.update({f"val_{k}": v for k, v in metrics.items()})
                if _better(metrics, best):
                    best = {**metrics, "epoch": epoch}
                    provenance = {"data": str(Path(data).resolve().name), "fold": fold, "epoch": epoch,
                                  "metrics": metrics, "train_config": str(out / "config.json")}
                    save_checkpoint(module.network, config.model_config(**provenance), out / "best" / "model")
            _log(out, writer, row)
            _atomic_torch_save({"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                "epoch": epoch, "best": best, "global_step": global_step,
                                "sampler_epoch": epoch, "torch_rng": torch.get_rng_state()}, last_path)
        ddp.barrier()
    if ddp.main and not val_rows:
        # Without validation studies the last epoch is exported.
        provenance = {"data": str(Path(data).resolve().name), "fold": fold, "epoch": config.epochs - 1}
        save_checkpoint(module.network, config.model_config(**provenance), out / "best" / "model")
    if writer is not None:
        writer.close()
    if ddp.world_size > 1:
        dist.destroy_process_group()
    return best


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


def _log(out: Path, writer: Any, row: dict[str, Any]) -> None:
    csv_path = out / "metrics.csv"
    existing = csv_path.read_text().splitlines() if csv_path.is_file() else []
    fields = list(row)
    kept = [line for line in existing[1:] if line.split(",")[0] != str(row["epoch"])]
    with open(csv_path, "w", newline="") as handle:
        handle.write(",".join(fields) + "\n")
        for line in kept:
            handle.write(line + "\n")
        csv.DictWriter(handle, fieldnames=fields).writerow(row)
    for key, value in row.items():
        if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(float(value)):
            writer.add_scalar(key, value, row["epoch"])
    summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
    print(summary, flush=True)
