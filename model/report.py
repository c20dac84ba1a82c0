"""The numbers a lesion mask exists for: per lesion (volume, SUVmax, SUVmean, SUVpeak, TLG, centroid,
bounding box) and per study (TMTV, TLG, lesion count, SUVmax, Dmax), with the CSV and JSON writers.

Definitions (also written into every report):
- lesions: 18-connected components of the mask, as the autoPET metrics count them;
- SUVpeak: mean SUV of every voxel whose centre lies within 6.2 mm (a 1 cm^3 sphere) of the centre of the
  lesion's SUVmax voxel, voxels outside the lesion included (the IBSI "local" peak); when several voxels
  share the SUVmax, the highest such mean;
- TLG: SUVmean x volume (ml); TMTV and the study's TLG are sums over lesions;
- Dmax: the largest distance (mm) between two lesion centroids (unweighted voxel centres), 0 for one lesion.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy.spatial.distance import pdist

from model.files import atomic_write_bytes, atomic_write_json
from model.geometry import same_grid
from model.postprocessing import CONNECTIVITY, voxel_ml

PEAK_RADIUS_MM = 6.2  # radius of a 1 cm^3 sphere: (3 / (4 pi))^(1/3) cm
DEFINITIONS = {
    "lesions": f"{CONNECTIVITY}-connected components of the mask",
    "suv_peak": f"mean SUV of all voxels with centres within {PEAK_RADIUS_MM} mm (1 cm^3 sphere) of the lesion's "
                "SUVmax voxel centre, voxels outside the lesion included (IBSI local peak)",
    "tlg": "SUVmean x volume (ml), summed over lesions for the study",
    "dmax_mm": "largest distance between two lesion centroids (unweighted), 0 for one lesion",
    "centroid_mm": "patient coordinates (DICOM LPS) of the lesion's voxel centres' mean",
    "bbox": "voxel index (x, y, z) of the lesion's first and last voxel along each axis, inclusive",
}


@dataclasses.dataclass(frozen=True)
class Lesion:
    id: int
    voxels: int
    volume_ml: float
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    centroid_mm: tuple[float, float, float]
    bbox_min: tuple[int, int, int]
    bbox_max: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class StudyReport:
    lesions: tuple[Lesion, ...]
    tmtv_ml: float
    tlg: float
    suv_max: float | None
    dmax_mm: float

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    def headline(self) -> dict:
        """The study's numbers (for results.json and figure titles)."""
        return {"lesion_count": self.lesion_count, "tmtv_ml": self.tmtv_ml, "tlg": self.tlg,
                "suv_max": self.suv_max, "dmax_mm": self.dmax_mm}


def sphere_offsets(image: sitk.Image, radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Index offsets (z, y, x) of the voxels whose centres lie within ``radius_mm`` of a voxel's centre, in
    physical space (spacing and direction)."""
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    reach = np.ceil(radius_mm / spacing).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, 3)
    distance = np.linalg.norm((direction @ (grid * spacing).T).T, axis=1)
    inside = grid[distance <= radius_mm + 1e-9]
    return inside[:, ::-1]  # (x, y, z) to the array's (z, y, x)


def _peak(suv: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> float:
    """Highest mean of ``suv`` over the sphere around any of ``centres`` (z, y, x), clipped at the image edge."""
    best = -np.inf
    shape = np.array(suv.shape)
    for start in range(0, len(centres), 1024):  # chunks bound the memory on large uniform lesions
        points = centres[start:start + 1024, None, :] + offsets[None, :, :]
        valid = np.all((points >= 0) & (points < shape), axis=2)
        clipped = np.where(valid[..., None], points, 0)
        values = np.where(valid, suv[clipped[..., 0], clipped[..., 1], clipped[..., 2]].astype(np.float64), 0.0)
        means = values.sum(axis=1) / valid.sum(axis=1)
        best = max(best, float(means.max()))
    return best


def lesion_report(suv: sitk.Image, mask: sitk.Image) -> StudyReport:
    """Per-lesion and study numbers of a 0/1 ``mask`` on the grid of the ``suv`` image. Every number is finite:
    a NaN or infinite SUV in a lesion or its peak sphere raises ValueError (model.checks refuses such a PET
    before any work; this keeps an infinity out of a report whatever the caller)."""
    if not same_grid(suv, mask):
        raise ValueError(f"mask grid {mask.GetSize()} {mask.GetSpacing()} differs from the SUV image's "
                         f"{suv.GetSize()} {suv.GetSpacing()}")
    values = sitk.GetArrayViewFromImage(suv)  # a view: no copy of the whole volume
    labels = cc3d.connected_components((sitk.GetArrayViewFromImage(mask) > 0).astype(np.uint8),
                                       connectivity=CONNECTIVITY)
    coords = np.nonzero(labels)
    lesion_of = labels[coords]
    order = np.argsort(lesion_of, kind="stable")
    points = np.stack(coords, axis=1)[order]  # (z, y, x) of every lesion voxel, grouped by lesion
    starts = np.flatnonzero(np.diff(lesion_of[order], prepend=0))  # labels count from 1: the first starts
    ends = np.append(starts[1:], len(order))[: len(starts)]
    voxel = voxel_ml(suv.GetSpacing())
    offsets = sphere_offsets(suv)
    found = []
    for start, end in zip(starts, ends, strict=True):
        where = points[start:end]
        lesion_values = values[where[:, 0], where[:, 1], where[:, 2]].astype(np.float64)
        top = float(lesion_values.max())
        mean = float(lesion_values.mean())
        volume = len(where) * voxel
        centre = where.mean(axis=0)[::-1]  # (x, y, z) continuous index
        found.append(dict(voxels=len(where), volume_ml=volume, suv_max=top, suv_mean=mean,
                          suv_peak=_peak(values, where[lesion_values == top], offsets), tlg=mean * volume,
                          centroid_mm=tuple(float(c) for c in suv.TransformContinuousIndexToPhysicalPoint(
                              [float(c) for c in centre])),
                          bbox_min=tuple(int(v) for v in where.min(axis=0)[::-1]),
                          bbox_max=tuple(int(v) for v in where.max(axis=0)[::-1])))
    found.sort(key=lambda f: (-f["voxels"], -f["suv_max"], f["bbox_min"][::-1]))  # largest first
    lesions = tuple(Lesion(id=k + 1, **f) for k, f in enumerate(found))
    _require_finite(lesions)
    centroids = np.array([lesion.centroid_mm for lesion in lesions])
    return StudyReport(lesions=lesions, tmtv_ml=float(sum(les.volume_ml for les in lesions)),
                       tlg=float(sum(les.tlg for les in lesions)),
                       suv_max=max((les.suv_max for les in lesions), default=None),
                       dmax_mm=float(pdist(centroids).max()) if len(lesions) > 1 else 0.0)


def _require_finite(lesions: tuple[Lesion, ...]) -> None:
    for lesion in lesions:
        numbers = (lesion.volume_ml, lesion.suv_max, lesion.suv_mean, lesion.suv_peak, lesion.tlg, *lesion.centroid_mm)
        if not all(math.isfinite(value) for value in numbers):
            raise ValueError(f"lesion {lesion.id}: SUV values that are not finite (NaN or infinity in the PET around "
                             f"voxel {lesion.bbox_min}); no report is written")


CSV_COLUMNS = ("id", "voxels", "volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg", "centroid_x_mm",
               "centroid_y_mm", "centroid_z_mm", "bbox_x0", "bbox_y0", "bbox_z0", "bbox_x1", "bbox_y1", "bbox_z1")


def _rounded(value: float, digits: int = 4) -> float:
    return float(round(value, digits))


def write_lesions_csv(report: StudyReport, path: Path) -> None:
    """``<case>.lesions.csv``: one row per lesion (header only when there is none)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for les in report.lesions:
        writer.writerow([les.id, les.voxels, _rounded(les.volume_ml), _rounded(les.suv_max), _rounded(les.suv_mean),
                         _rounded(les.suv_peak), _rounded(les.tlg), *(_rounded(c, 2) for c in les.centroid_mm),
                         *les.bbox_min, *les.bbox_max])
    atomic_write_bytes(Path(path), text.getvalue().encode())


def rounded_headline(report: StudyReport) -> dict:
    """The study's numbers as the report JSON and results.json give them (4 decimals)."""
    return {k: (_rounded(v) if isinstance(v, float) else v) for k, v in report.headline().items()}


def report_document(report: StudyReport, *, case: str, suv: Mapping | None = None,
                    model: Mapping | None = None) -> dict:
    """The JSON report: headline numbers, definitions, the SUV conversion used (``SuvConversion.to_dict()``,
    or None when the PET came in SUV already), the model and weights, and the lesions."""
    lesions = [{**dataclasses.asdict(les), "centroid_mm": [_rounded(c, 2) for c in les.centroid_mm],
                "bbox_min": list(les.bbox_min), "bbox_max": list(les.bbox_max)} for les in report.lesions]
    return {"case": case, **rounded_headline(report), "definitions": DEFINITIONS,
            "suv": dict(suv) if suv is not None else None, "model": dict(model) if model is not None else None,
            "lesions": lesions}


def write_report_json(report: StudyReport, path: Path, *, case: str, suv: Mapping | None = None,
                      model: Mapping | None = None) -> None:
    """``<case>.report.json`` (see ``report_document``)."""
    document = report_document(report, case=case, suv=suv, model=model)
    atomic_write_json(Path(path), document)  # strict: a NaN or infinity raises instead of writing "NaN"
