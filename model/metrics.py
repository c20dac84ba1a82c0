"""The one Dice, and the official autoPET case metrics: Dice, false positive and false negative volume (ml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from model.postprocessing import CONNECTIVITY, voxel_ml


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P and T| / (|P| + |T|) over nonzero voxels; 1.0 when both are empty (they agree).

    Arrays of any shape and dtype (a CPU torch tensor works too); nonzero counts as foreground.
    """
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred & truth) / total


@dataclass
class CaseMetrics:
    dice: float | None  # None for a negative case (empty ground truth)
    fpv_ml: float
    fnv_ml: float | None  # None for a negative case
    gt_ml: float
    pred_ml: float


def false_positive_voxels(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The voxels of the prediction's components (18-connected) that touch no ground-truth voxel: what the
    false positive volume counts."""
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    pred_labels = cc3d.connected_components(pred.astype(np.uint8), connectivity=CONNECTIVITY)
    touched = np.unique(pred_labels[gt])
    return (pred_labels > 0) & ~np.isin(pred_labels, touched)


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> CaseMetrics:
    """Metrics of one case as the challenge's script computes them; ``spacing`` in mm (any order: only the
    voxel volume is used). Components are 18-connected."""
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    voxel = voxel_ml(spacing)
    gt_sum, pred_sum = int(gt.sum()), int(pred.sum())
    fp_voxels = int(np.count_nonzero(false_positive_voxels(pred, gt)))
    if gt_sum == 0:
        return CaseMetrics(dice=None, fpv_ml=pred_sum * voxel, fnv_ml=None, gt_ml=0.0, pred_ml=pred_sum * voxel)
    gt_labels = cc3d.connected_components(gt.astype(np.uint8), connectivity=CONNECTIVITY)
    hit = np.unique(gt_labels[pred])
    fn_voxels = int(np.count_nonzero(gt_labels[~np.isin(gt_labels, hit)]))
    return CaseMetrics(dice=dice(pred, gt), fpv_ml=fp_voxels * voxel, fnv_ml=fn_voxels * voxel,
                       gt_ml=gt_sum * voxel, pred_ml=pred_sum * voxel)


def aggregate(cases: Sequence[CaseMetrics]) -> dict[str, float]:
    """Means as the challenge reports them: Dice and FNV over positive cases, FPV over all cases."""
    positives = [c for c in cases if c.dice is not None]
    return {
        "dice": float(np.mean([c.dice for c in positives])) if positives else float("nan"),
        "fpv_ml": float(np.mean([c.fpv_ml for c in cases])) if cases else float("nan"),
        "fnv_ml": float(np.mean([c.fnv_ml for c in positives])) if positives else float("nan"),
        "cases": len(cases),
        "positive_cases": len(positives),
    }


def _centred_start(lo: int, hi: int, length: int, crop: int) -> tuple[int, int]:
    """[start, stop) of one crop-long window centred on [lo, hi) and kept inside an axis of ``length``."""
    if length <= crop:
        return 0, length
    start = min(max((lo + hi) // 2 - crop // 2, 0), length - crop)
    return start, start + crop


def seed_crop_dice(pred: np.ndarray, truth: np.ndarray, ct: np.ndarray, crop_yx: tuple[int, int],
                   body_threshold_hu: float) -> float:
    """The seed authors' validation measure of one study, beside the official Dice: 2 (I + 1) / (P + G + 1)
    with I, P and G counted over one crop-sized window per slice and summed over the study's slices (their
    utils/evaluation.py get_result_gpu on the whole study, as their solver's test_with_random_wb runs it;
    the 0.6863 of their paper is the mean of it over validation studies). Not the challenge's Dice: the +1
    lifts studies with few lesion voxels, a negative study scores 2 / (P + 1), and what lies outside the
    window is not counted. Each slice's window is centred on its body's box (CT above ``body_threshold_hu``,
    the whole slice where there is none), where training and inference centre theirs; the seed centred theirs
    on the CT's field of view. (Z, Y, X) arrays of one grid, slices along Z, ``crop_yx`` in its pixels."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    body = np.asarray(ct) > body_threshold_hu
    rows, cols = body.any(axis=2), body.any(axis=1)
    height, width = pred.shape[1:]
    intersection = predicted = true = 0
    for z in range(pred.shape[0]):
        ys, xs = np.flatnonzero(rows[z]), np.flatnonzero(cols[z])
        y_box = (ys[0], ys[-1] + 1) if ys.size else (0, height)
        x_box = (xs[0], xs[-1] + 1) if xs.size else (0, width)
        y0, y1 = _centred_start(*y_box, height, crop_yx[0])
        x0, x1 = _centred_start(*x_box, width, crop_yx[1])
        p, t = pred[z, y0:y1, x0:x1], truth[z, y0:y1, x0:x1]
        intersection += int(np.count_nonzero(p & t))
        predicted += int(np.count_nonzero(p))
        true += int(np.count_nonzero(t))
    return 2.0 * (intersection + 1) / (predicted + true + 1)
