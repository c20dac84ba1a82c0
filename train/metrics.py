"""The official autoPET metrics: Dice, false positive volume and false negative volume (ml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from model.postprocessing import CONNECTIVITY, voxel_ml


@dataclass
class CaseMetrics:
    dice: float | None  # None for a negative case (empty ground truth)
    fpv_ml: float
    fnv_ml: float | None  # None for a negative case
    gt_ml: float
    pred_ml: float


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> CaseMetrics:
    """Metrics of one case; ``spacing`` in mm (any order: only the voxel volume is used)."""
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    voxel = voxel_ml(spacing)
    gt_sum, pred_sum = int(gt.sum()), int(pred.sum())
    pred_labels = cc3d.connected_components(pred.astype(np.uint8), connectivity=CONNECTIVITY)
    touched = np.unique(pred_labels[gt])
    fp_voxels = int(np.count_nonzero(pred_labels[~np.isin(pred_labels, touched)]))
    if gt_sum == 0:
        return CaseMetrics(dice=None, fpv_ml=pred_sum * voxel, fnv_ml=None, gt_ml=0.0, pred_ml=pred_sum * voxel)
    gt_labels = cc3d.connected_components(gt.astype(np.uint8), connectivity=CONNECTIVITY)
    hit = np.unique(gt_labels[pred])
    fn_voxels = int(np.count_nonzero(gt_labels[~np.isin(gt_labels, hit)]))
    dice = 2.0 * np.count_nonzero(pred & gt) / (gt_sum + pred_sum)
    return CaseMetrics(dice=float(dice), fpv_ml=fp_voxels * voxel, fnv_ml=fn_voxels * voxel,
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
