"""fit's validation, as deployed: whole validation studies from their source files through the pipeline
process.py runs, the official metrics on the PET's grid, and the seed authors' own measure beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from model.checkpoint import Checkpoint
from model.config import ModelConfig
from model.errors import InputError
from model.geometry import reorient
from model.inference import Predictor
from model.metrics import aggregate, case_metrics, seed_crop_dice
from runner.pipeline import CaseResult, run_case
from studies.readers import read_image
from train.prepare import label_on_pet_grid


def check_validation_sources(rows: list[dict], data: Path) -> None:
    """Validation runs the deployment pipeline on each study's source files: they must still be where prepare
    read them (before the first epoch, not after it)."""
    for row in rows:
        for role, path in row["source"].items():
            if not Path(path).is_file():
                raise InputError(f"{path}: the {role} of validation study {row['study']} is not where {data} was "
                                 "prepared from; validation runs the source files (move them back or prepare again)")


def validate(network: torch.nn.Module, config: ModelConfig, data: Path, studies: list[dict], device: torch.device,
             batch_size: int) -> dict[str, float]:
    """Whole validation studies as deployed: each study's source files (recorded by prepare) through the
    pipeline process.py runs (runner.pipeline.run_case: reading, the plausibility checks, the CT onto the PET's
    grid, orientation, in-plane resampling, tiles over the body, stitching, the threshold), scored on the
    PET's grid with the official metrics (model.metrics), and beside them the seed authors' measure
    (``seed_crop_dice``, model.metrics.seed_crop_dice) on the same masks."""
    predictor = Predictor.from_checkpoints([Checkpoint(config, network, data)], device=str(device),
                                           batch_size=batch_size)
    cases, seed_dices = [], []
    for row in studies:
        source = {role: Path(path) for role, path in row["source"].items()}
        result = run_case(source["pet"], source["ct"], None, predictor, progress=False)
        truth = label_on_pet_grid(read_image(source["mask"], "mask", sitk.sitkUInt8), result.pet, source["mask"])
        cases.append(case_metrics(result.mask_array, sitk.GetArrayViewFromImage(truth), result.spacing))
        seed_dices.append(_seed_crop_dice(result, truth, config))
    return {**aggregate(cases), "seed_crop_dice": float(np.mean(seed_dices)) if seed_dices else float("nan")}


def _seed_crop_dice(result: CaseResult, truth: sitk.Image, config: ModelConfig) -> float:
    """model.metrics.seed_crop_dice of one validated study, on its slices as the network saw them (the model's
    orientation; the crop in this grid's pixels where deployment resampled it)."""
    pred, label, ct = (reorient(image, config.orientation) for image in (result.mask, truth, result.study.loaded.ct))
    spacing_x, spacing_y = pred.GetSpacing()[:2]
    crop_yx = (round(config.crop_size * config.spacing_mm[1] / spacing_y),
               round(config.crop_size * config.spacing_mm[0] / spacing_x))
    return seed_crop_dice(*(sitk.GetArrayViewFromImage(image) for image in (pred, label, ct)), crop_yx,
                          config.normalisation.body_threshold_hu)
