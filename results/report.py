"""The numbers a lesion mask exists for: per lesion (volume, SUVmax, SUVmean, SUVpeak, TLG, centroid,
bounding box) and per study (TMTV, TLG, lesion count, SUVmax, Dmax, the body's volume and TMTV's share of
it), with the CSV and JSON writers.

Definitions (also written into every report):
- lesions: 18-connected components of the mask, as the autoPET metrics count them;
- SUVpeak: mean SUV of every voxel whose centre lies within 6.2 mm (a 1 cm^3 sphere) of the centre of the
  lesion's SUVmax voxel, voxels outside the lesion included (the IBSI "local" peak); when several voxels
  share the SUVmax, the highest such mean;
- TLG: SUVmean x volume (ml); TMTV and the study's TLG are sums over lesions;
- Dmax: the largest distance (mm) between two lesion centroids (unweighted voxel centres), 0 for one lesion;
- the body: CT voxels above studies.checks' body threshold (-500 HU, the couch included), so that a mask that
  covers a large part of the body is seen whatever the body's size.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy.spatial.distance import pdist

from model.files import atomic_write_bytes, atomic_write_json
from model.geometry import same_grid
from model.postprocessing import CONNECTIVITY, voxel_ml
from studies.checks import DEFAULT_BODY_HU

PEAK_RADIUS_MM = 6.2  # radius of a 1 cm^3 sphere: (3 / (4 pi))^(1/3) cm


@dataclasses.dataclass
class LesionVoxels:
    """One lesion's voxels, what a lesion quantity is computed from."""

    id: int  # 1 for the largest (lesion_report numbers them after sorting)
    index: np.ndarray  # (n, 3) array indices (z, y, x) of its voxels
    values: np.ndarray  # (n,) their SUV, float64
    suv: np.ndarray  # the whole SUV array (a view), for SUVpeak's sphere
    image: sitk.Image  # the SUV image: spacing, direction, origin
    offsets: np.ndarray  # sphere_offsets(image)

    @functools.cached_property
    def volume_ml(self) -> float:
        return len(self.index) * voxel_ml(self.image.GetSpacing())

    @functools.cached_property
    def suv_max(self) -> float:
        return float(self.values.max())

    @functools.cached_property
    def suv_mean(self) -> float:
        return float(self.values.mean())


class _Values:
    """Quantities by name as attributes (``report.tmtv_ml``, ``lesion.suv_peak``), from QUANTITIES."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no quantity {name!r}") from None


@dataclasses.dataclass(frozen=True)
class Lesion(_Values):
    values: dict[str, Any]  # lesion quantity name -> value


@dataclasses.dataclass(frozen=True)
class StudyReport(_Values):
    lesions: tuple[Lesion, ...]
    values: dict[str, Any]  # study quantity name -> value

    def headline(self) -> dict:
        """The study's headline numbers (for results.json, the review page and figure titles)."""
        return {key: self.values[key] for key in headline_keys()}

    def picture_title(self) -> str:
        """The report picture's line of numbers ("TMTV 12.3 ml, 2 lesions, SUVmax 8.1"): the study quantities
        with ``picture`` words, in their ``picture_place`` order."""
        shown = sorted((q for q in study_quantities() if q.picture), key=lambda q: q.picture_place)
        return ", ".join(q.picture(self.values[q.name]) for q in shown)


def _centroid_mm(lesion: LesionVoxels) -> tuple[float, float, float]:
    centre = lesion.index.mean(axis=0)[::-1]  # (x, y, z) continuous index
    return tuple(float(c) for c in lesion.image.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre]))


def _dmax_mm(lesions: tuple[Lesion, ...]) -> float:
    centroids = np.array([lesion.centroid_mm for lesion in lesions])
    return float(pdist(centroids).max()) if len(lesions) > 1 else 0.0


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One number (or tuple of numbers) of the reports.

    ``per``: "lesion" (a row of lesions.csv and an entry of the report JSON's lesions; ``compute`` takes a
    LesionVoxels) or "study" (a key of the report JSON; ``compute`` takes the tuple of Lesions). ``digits``:
    its rounding in lesions.csv (lesion) or the report JSON and results.json (study); None: written as it is.
    ``json_digits``: a lesion quantity's rounding in the report JSON (None: full precision). ``columns``: a
    tuple quantity's CSV columns (default: its name). ``definition``: the text the report JSON's definitions
    give under ``term`` (default: its name). ``headline``: one of the study's numbers in results.json and on
    the review page. ``picture``: a study quantity's words in the report picture's title, in ``picture_place``
    order.
    """

    name: str
    per: Literal["lesion", "study"]
    compute: Callable[[Any], Any]
    digits: int | None = 4
    json_digits: int | None = None
    columns: tuple[str, ...] = ()
    definition: str | None = None
    term: str | None = None
    headline: bool = False
    title: str | None = None  # its short name on the review page (default: its name)
    picture: Callable[[Any], str] | None = None  # a study quantity's words in the report picture's title
    picture_place: int = 0  # its place among those words


class StudyLesions(tuple):
    """What a study quantity is computed from: the study's lesions (a tuple of Lesions) and the volume of the
    body they lie in (``body_ml``; None where no CT was given, as for a mask alone)."""

    body_ml: float | None = None

    def __new__(cls, lesions: tuple[Lesion, ...], body_ml: float | None = None) -> StudyLesions:
        made = super().__new__(cls, lesions)
        made.body_ml = body_ml
        return made


def _body_percent(lesions: StudyLesions) -> float | None:
    if not lesions.body_ml:
        return None
    return 100.0 * float(sum(les.volume_ml for les in lesions)) / lesions.body_ml


def body_volume_ml(ct: sitk.Image, body_threshold_hu: float = DEFAULT_BODY_HU) -> float:
    """The body's volume: CT voxels above ``body_threshold_hu`` (model.preprocessing.body_mask's rule)."""
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(ct) > body_threshold_hu)) * voxel_ml(ct.GetSpacing())


def _axes(prefix: str, suffix: str = "") -> tuple[str, ...]:
    return tuple(f"{prefix}{axis}{suffix}" for axis in "xyz")


# The reports' quantities, in the order they are written: lesion quantities are the columns of lesions.csv and
# the keys of a lesion in the report JSON, study quantities the report JSON's keys (and results.json's), and
# the definitions follow this order too (so lesion and study entries interleave). Adding one is one entry.
QUANTITIES: tuple[Quantity, ...] = (
    Quantity("lesion_count", "study", len, digits=None, headline=True, term="lesions", title="lesions",
             picture=lambda count: f"{count} lesion{'s' if count != 1 else ''}", picture_place=1,
             definition=f"{CONNECTIVITY}-connected components of the mask"),
    Quantity("id", "lesion", lambda les: les.id, digits=None),
    Quantity("voxels", "lesion", lambda les: len(les.index), digits=None),
    Quantity("volume_ml", "lesion", lambda les: les.volume_ml),
    Quantity("suv_max", "lesion", lambda les: les.suv_max),
    Quantity("suv_mean", "lesion", lambda les: les.suv_mean),
    Quantity("suv_peak", "lesion", lambda les: _peak(les.suv, les.index[les.values == les.suv_max], les.offsets),
             title="SUVpeak",
             definition=f"mean SUV of all voxels with centres within {PEAK_RADIUS_MM} mm (1 cm^3 sphere) of the "
                        "lesion's SUVmax voxel centre, voxels outside the lesion included (IBSI local peak)"),
    Quantity("tlg", "lesion", lambda les: les.suv_mean * les.volume_ml,
             definition="SUVmean x volume (ml), summed over lesions for the study"),
    Quantity("tmtv_ml", "study", lambda lesions: float(sum(les.volume_ml for les in lesions)), headline=True,
             title="TMTV ml", picture=lambda ml: f"TMTV {ml:.1f} ml", picture_place=0,
             definition="total metabolic tumour volume: the lesions' volumes summed"),
    Quantity("tlg", "study", lambda lesions: float(sum(les.tlg for les in lesions)), headline=True, title="TLG"),
    Quantity("suv_max", "study", lambda lesions: max((les.suv_max for les in lesions), default=None), headline=True,
             title="SUVmax", picture=lambda suv: "SUVmax " + ("n/a" if suv is None else f"{suv:.1f}"), picture_place=2),
    Quantity("dmax_mm", "study", _dmax_mm, headline=True, title="Dmax mm",
             definition="largest distance between two lesion centroids (unweighted), 0 for one lesion"),
    Quantity("body_ml", "study", lambda lesions: lesions.body_ml, digits=1, headline=True, title="body ml",
             definition=f"the body's volume: CT voxels above {DEFAULT_BODY_HU:g} HU, the couch included; null "
                        "without a CT"),
    Quantity("tmtv_body_percent", "study", _body_percent, digits=3, headline=True, title="TMTV % body",
             definition="TMTV as a percentage of the body's volume; null without a CT"),
    Quantity("centroid_mm", "lesion", _centroid_mm, digits=2, json_digits=2, columns=_axes("centroid_", "_mm"),
             definition="patient coordinates (DICOM LPS) of the lesion's voxel centres' mean"),
    Quantity("bbox_min", "lesion", lambda les: tuple(int(v) for v in les.index.min(axis=0)[::-1]), digits=None,
             columns=_axes("bbox_", "0"), term="bbox",
             definition="voxel index (x, y, z) of the lesion's first and last voxel along each axis, inclusive"),
    Quantity("bbox_max", "lesion", lambda les: tuple(int(v) for v in les.index.max(axis=0)[::-1]), digits=None,
             columns=_axes("bbox_", "1")),
)
# What follows from QUANTITIES is read from it when used, never kept beside it: an entry added to the table (or
# a test's) is seen by the CSV, the report JSON, results.json and the review page alike.


def lesion_quantities() -> tuple[Quantity, ...]:
    return tuple(q for q in QUANTITIES if q.per == "lesion")


def study_quantities() -> tuple[Quantity, ...]:
    return tuple(q for q in QUANTITIES if q.per == "study")


def headline_quantities() -> tuple[Quantity, ...]:
    """The study's numbers in results.json and on the review page (runner.cohort reads them back from a report
    JSON)."""
    return tuple(q for q in study_quantities() if q.headline)


def headline_keys() -> tuple[str, ...]:
    return tuple(q.name for q in headline_quantities())


def definitions() -> dict[str, str]:
    """The report JSON's definitions: term -> text, in the table's order."""
    return {q.term or q.name: q.definition for q in QUANTITIES if q.definition}


def csv_columns() -> tuple[str, ...]:
    """lesions.csv's header: each lesion quantity's columns (a tuple quantity's several) in the table's order."""
    return tuple(column for q in lesion_quantities() for column in (q.columns or (q.name,)))


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


def lesion_report(suv: sitk.Image, mask: sitk.Image, body_ml: float | None = None) -> StudyReport:
    """Per-lesion and study numbers of a 0/1 ``mask`` on the grid of the ``suv`` image; ``body_ml``: the body's
    volume (``body_volume_ml`` of the study's CT), for TMTV's share of it. Every number is finite:
    a NaN or infinite SUV in a lesion or its peak sphere raises ValueError (studies.checks refuses such a PET
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
    offsets = sphere_offsets(suv)
    found = []
    for start, end in zip(starts, ends, strict=True):
        where = points[start:end]
        found.append(LesionVoxels(id=0, index=where, values=values[where[:, 0], where[:, 1], where[:, 2]].astype(
            np.float64), suv=values, image=suv, offsets=offsets))
    # Largest first, then hottest, then first in (z, y, x): the ids of lesions.csv and the picture.
    found.sort(key=lambda les: (-len(les.index), -les.suv_max, tuple(les.index.min(axis=0))))
    for number, voxels in enumerate(found, start=1):
        voxels.id = number
    lesions = tuple(Lesion({q.name: q.compute(voxels) for q in lesion_quantities()}) for voxels in found)
    _require_finite(lesions)
    study = StudyLesions(lesions, body_ml)
    return StudyReport(lesions=lesions, values={q.name: q.compute(study) for q in study_quantities()})


def _require_finite(lesions: tuple[Lesion, ...]) -> None:
    for lesion in lesions:
        numbers = [value for q in lesion_quantities() for value in _cells(lesion.values[q.name])]
        if not all(math.isfinite(value) for value in numbers):
            raise ValueError(f"lesion {lesion.id}: SUV values that are not finite (NaN or infinity in the PET around "
                             f"voxel {lesion.bbox_min}); no report is written")


def _cells(value: Any) -> tuple:
    """A quantity's CSV cells: one per element of a tuple quantity."""
    return value if isinstance(value, tuple) else (value,)


def _rounded(value: float, digits: int | None = 4) -> Any:
    """``value`` (a number or a tuple of them) rounded to ``digits``; ints, None and digits None as they are."""
    if isinstance(value, tuple):
        return tuple(_rounded(v, digits) for v in value)
    return float(round(value, digits)) if isinstance(value, float) and digits is not None else value


def write_lesions_csv(report: StudyReport, path: Path) -> None:
    """``<case>.lesions.csv``: one row per lesion (header only when there is none)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(csv_columns())
    for les in report.lesions:
        writer.writerow([cell for q in lesion_quantities() for cell in _cells(_rounded(les.values[q.name], q.digits))])
    atomic_write_bytes(Path(path), text.getvalue().encode())


def rounded_headline(report: StudyReport) -> dict:
    """The study's headline numbers as the report JSON and results.json give them."""
    digits = {q.name: q.digits for q in study_quantities()}
    return {key: _rounded(value, digits[key]) for key, value in report.headline().items()}


def _lesion_document(lesion: Lesion) -> dict:
    document = {}
    for q in lesion_quantities():
        value = _rounded(lesion.values[q.name], q.json_digits)
        document[q.name] = list(value) if isinstance(value, tuple) else value
    return document


def report_document(report: StudyReport, *, case: str, suv: Mapping | None = None,
                    model: Mapping | None = None, made_by: Mapping | None = None) -> dict:
    """The JSON report: headline numbers, definitions, the SUV conversion used (``SuvConversion.to_dict()``,
    or None when the PET came in SUV already), the model and weights, what made it (``made_by``: the run, its
    settings and the digest of the mask described; results.outputs.RunRecord) and the lesions. ``warning``,
    second where a reader looks first, is the weights' (``results.outputs.model_info``: a demo model's), or null."""
    warning = model.get("warning") if model is not None else None
    return {"case": case, "warning": warning, **rounded_headline(report), "definitions": definitions(),
            "suv": dict(suv) if suv is not None else None, "model": dict(model) if model is not None else None,
            **({"made_by": dict(made_by)} if made_by is not None else {}),
            "lesions": [_lesion_document(les) for les in report.lesions]}


def write_report_json(report: StudyReport, path: Path, *, case: str, suv: Mapping | None = None,
                      model: Mapping | None = None, made_by: Mapping | None = None) -> None:
    """``<case>.report.json`` (see ``report_document``)."""
    document = report_document(report, case=case, suv=suv, model=model, made_by=made_by)
    atomic_write_json(Path(path), document)  # strict: a NaN or infinity raises instead of writing "NaN"
