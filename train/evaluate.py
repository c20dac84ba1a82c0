"""``train evaluate``: official metrics of predicted masks against ground truth, with optional pictures."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.errors import InputError
from model.geometry import IMAGE_SUFFIXES, image_stem, read_image
from train.metrics import aggregate, case_metrics


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: folder missing")
    return {image_stem(p): p for p in sorted(folder.iterdir()) if p.name.endswith(IMAGE_SUFFIXES)}


def _pair_pets(pets: dict[str, Path], gt_stems: list[str]) -> dict[str, Path]:
    """PET of each case: the file whose stem starts with the case's, else by sorted order as process.py pairs
    PET and CT (grand-challenge names PET and CT by different uuids)."""
    paired = {stem: next((p for s, p in pets.items() if s.startswith(stem)), None) for stem in gt_stems}
    if None in paired.values():
        if len(pets) != len(gt_stems):
            raise InputError(f"{len(pets)} PET images for {len(gt_stems)} cases: cannot pair them for the figures")
        paired = dict(zip(sorted(gt_stems), (pets[s] for s in sorted(pets)), strict=True))
    return paired


def mip_figure(pet: np.ndarray, gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float],
               path: Path, title: str) -> None:
    """Coronal maximum-intensity projection of the PET, ground truth in green and prediction in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mip = pet.max(axis=1)[::-1]
    aspect = spacing[2] / spacing[0]
    fig, ax = plt.subplots(figsize=(4, 4 * mip.shape[0] * aspect / mip.shape[1] + 0.6))
    ax.imshow(mip, cmap="gray_r", vmin=0, vmax=10.0, aspect=aspect)  # the usual SUV 0-10 window of FDG MIPs
    for volume, colour in ((gt, "limegreen"), (pred, "red")):
        projection = volume.max(axis=1)[::-1]
        if projection.any():
            ax.contour(projection, levels=[0.5], colors=colour, linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(pred_dir: Path, gt_dir: Path, out_csv: Path | None = None, figures: Path | None = None,
             pet_dir: Path | None = None) -> dict:
    """Per-case and aggregated metrics; predictions and ground truth are matched by file stem."""
    preds, gts = _images(pred_dir), _images(gt_dir)
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise InputError(f"{pred_dir}: no prediction for {len(missing)} case(s), e.g. {missing[0]}")
    rows, cases = [], []
    pets = _pair_pets(_images(pet_dir), list(gts)) if pet_dir else {}
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
    for stem, gt_path in gts.items():
        gt_img = read_image(gt_path, "ground truth")
        pred_img = read_image(preds[stem], "prediction")
        if gt_img.GetSize() != pred_img.GetSize():
            raise InputError(f"{preds[stem]}: size {pred_img.GetSize()} differs from ground truth {gt_img.GetSize()}")
        gt, pred = sitk.GetArrayFromImage(gt_img) > 0, sitk.GetArrayFromImage(pred_img) > 0
        metrics = case_metrics(pred, gt, gt_img.GetSpacing())
        cases.append(metrics)
        rows.append({"case": stem, **dataclasses.asdict(metrics)})
        if figures:
            pet_path = pets.get(stem)
            pet = sitk.GetArrayFromImage(read_image(pet_path, "PET")) if pet_path else 10.0 * gt.astype(np.float32)
            dice = "n/a" if metrics.dice is None else f"{metrics.dice:.3f}"
            mip_figure(pet, gt, pred, gt_img.GetSpacing(), figures / f"{stem}.png",
                       f"{stem}\nDice {dice}  FPV {metrics.fpv_ml:.2f} ml  FNV {metrics.fnv_ml or 0:.2f} ml")
    summary = aggregate(cases)
    if out_csv:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(out_csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        out_csv.with_suffix(".json").write_text(json.dumps({"cases": rows, "mean": summary}, indent=2))
    return {"cases": rows, "mean": summary}
