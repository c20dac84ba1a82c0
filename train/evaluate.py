"""``train evaluate``: official metrics of predicted masks against ground truth, with optional pictures and,
for phantoms, where the false positives lie (``--tissues``: the phantoms' own tissue labels)."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.errors import InputError, shown
from model.files import atomic_write_bytes, atomic_write_json, undefined_as_null
from model.geometry import same_grid
from model.metrics import aggregate, case_metrics, false_positive_voxels
from model.postprocessing import voxel_ml
from phantoms.tissues import FPV_ORGANS
from results.figures import Outline, mip_figure
from results.review_page import PAGE_NAME, evaluation_page, write_page
from studies.readers import image_stem, is_image_name, read_image

ELSEWHERE = "elsewhere"


def images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{shown(folder)}: folder missing")
    return {image_stem(p): p for p in sorted(folder.iterdir()) if is_image_name(p.name)}


def _grid(image: sitk.Image) -> str:
    return (f"size {image.GetSize()}, spacing {tuple(round(s, 4) for s in image.GetSpacing())}, origin "
            f"{tuple(round(o, 2) for o in image.GetOrigin())}")


def pair_pets(pets: dict[str, Path], gt_stems: list[str]) -> dict[str, Path]:
    """PET of each case: the file whose stem starts with the case's, else by sorted order as process.py pairs
    PET and CT (grand-challenge names PET and CT by different uuids)."""
    paired = {stem: next((p for s, p in pets.items() if s.startswith(stem)), None) for stem in gt_stems}
    if None in paired.values():
        if len(pets) != len(gt_stems):
            raise InputError(f"{len(pets)} PET images for {len(gt_stems)} cases: cannot pair them for the figures")
        paired = dict(zip(sorted(gt_stems), (pets[s] for s in sorted(pets)), strict=True))
    return paired


def organ_false_positive_ml(pred: np.ndarray, gt: np.ndarray, tissues: np.ndarray,
                            spacing: tuple[float, ...]) -> dict[str, float]:
    """The false positive volume (ml) of one case by where its voxels lie: each organ of
    phantoms.tissues.FPV_ORGANS by the tissue labels, the rest ``elsewhere``; the parts sum to the case's FPV."""
    false_positive = false_positive_voxels(pred, gt)
    found = np.asarray(tissues)[false_positive]
    volumes = {organ: float(np.isin(found, labels).sum()) for organ, labels in FPV_ORGANS.items()}
    volumes[ELSEWHERE] = float(found.size) - sum(volumes.values())
    return {f"fpv_{organ}_ml": count * voxel_ml(spacing) for organ, count in volumes.items()}


def organ_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per organ (and elsewhere) the false positive volume over all cases and per case."""
    return {organ: {"total_ml": sum(row[f"fpv_{organ}_ml"] for row in rows),
                    "per_case_ml": sum(row[f"fpv_{organ}_ml"] for row in rows) / len(rows)}
            for organ in (*FPV_ORGANS, ELSEWHERE)}


def organ_table_text(rows: list[dict]) -> str:
    """The false positive volume by organ as a text table: a row per case, then the total and the per-case mean."""
    organs = (*FPV_ORGANS, ELSEWHERE)
    width = max(12, *(len(row["case"]) for row in rows))
    lines = [f"{'FPV ml':<{width}}" + "".join(f"{organ:>12}" for organ in organs)]
    lines += [f"{row['case']:<{width}}" + "".join(f"{row[f'fpv_{organ}_ml']:>12.2f}" for organ in organs)
              for row in rows]
    table = organ_table(rows)
    for name, key in (("total", "total_ml"), ("per case", "per_case_ml")):
        lines.append(f"{name:<{width}}" + "".join(f"{table[organ][key]:>12.2f}" for organ in organs))
    return "\n".join(lines)


def _tissues_on(gt_img: sitk.Image, path: Path) -> np.ndarray:
    labels = read_image(path, "tissue labels")
    if not same_grid(labels, gt_img):
        raise InputError(f"{shown(path)}: its grid ({_grid(labels)}) differs from the ground truth's ({_grid(gt_img)})")
    return sitk.GetArrayFromImage(labels)


def evaluate(pred_dir: Path, gt_dir: Path, out_csv: Path | None = None, figures: Path | None = None,
             pet_dir: Path | None = None, tissues_dir: Path | None = None) -> dict:
    """Per-case and aggregated metrics; predictions and ground truth are matched by file stem. ``tissues_dir``
    (phantoms written with ``train synth --tissues``): tissue labels by the same stems, and each case's FPV
    by organ (``fpv_<organ>_ml``) with their totals (``fpv_by_organ``)."""
    preds, gts = images_by_stem(pred_dir), images_by_stem(gt_dir)
    if not gts:  # nothing to average: refused before any file is written
        raise InputError(f"{shown(gt_dir)}: no ground truth image (.mha, .nii.gz, .nii) in this folder")
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise InputError(f"{pred_dir}: no prediction for {len(missing)} case(s), e.g. {missing[0]}")
    rows, cases = [], []
    pets = pair_pets(images_by_stem(pet_dir), list(gts)) if pet_dir else {}
    tissues = images_by_stem(tissues_dir) if tissues_dir else {}
    if tissues_dir and set(gts) - set(tissues):
        raise InputError(f"{shown(tissues_dir)}: no tissue labels for {sorted(set(gts) - set(tissues))[0]}")
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
    for stem, gt_path in gts.items():
        gt_img = read_image(gt_path, "ground truth")
        pred_img = read_image(preds[stem], "prediction")
        if not same_grid(gt_img, pred_img):  # equal sizes are not enough: voxels must lie at the same places
            raise InputError(f"{shown(preds[stem])}: its grid ({_grid(pred_img)}) differs from its ground truth "
                             f"{shown(gt_path)} ({_grid(gt_img)}, or the direction)")
        gt, pred = sitk.GetArrayFromImage(gt_img) > 0, sitk.GetArrayFromImage(pred_img) > 0
        metrics = case_metrics(pred, gt, gt_img.GetSpacing())
        cases.append(metrics)
        rows.append({"case": stem, **dataclasses.asdict(metrics)})
        if tissues_dir:
            rows[-1].update(organ_false_positive_ml(pred, gt, _tissues_on(gt_img, tissues[stem]), gt_img.GetSpacing()))
        if figures:
            pet_path = pets.get(stem)
            if pet_path:
                pet_img = read_image(pet_path, "PET")
            else:  # no PET given: the ground truth itself, at SUV 10, as the background
                pet_img = sitk.GetImageFromArray(10.0 * gt.astype(np.float32))
                pet_img.CopyInformation(gt_img)
            dice = "n/a" if metrics.dice is None else f"{metrics.dice:.3f}"
            mip_figure(figures / f"{stem}.png", pet_img,
                       [Outline(gt_img, "limegreen", "ground truth"), Outline(pred_img, "red", "prediction")],
                       f"{stem}\nDice {dice}  FPV {metrics.fpv_ml:.2f} ml  FNV {metrics.fnv_ml or 0:.2f} ml")
    summary = aggregate(cases)
    if figures:  # the held-out page beside its pictures: worst case first, the means on top
        write_page(figures / PAGE_NAME, evaluation_page(rows, summary, {row["case"]: f"{row['case']}.png"
                                                                       for row in rows}))
    if tissues_dir:
        summary["fpv_by_organ"] = organ_table(rows)
    if out_csv:  # both whole or not at all, and strict JSON
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out_csv, text.getvalue().encode())
        # A mean over no positive case is NaN: null in JSON ("not defined"), which strict parsers read.
        atomic_write_json(out_csv.with_suffix(".json"), {"cases": rows, "mean": undefined_as_null(summary)})
    return {"cases": rows, "mean": summary}
