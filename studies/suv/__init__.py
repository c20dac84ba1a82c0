"""SUV (body weight) of a PET series from its DICOM headers.

``qiba`` follows QIBA's vendor-neutral algorithm (as OHIF's calculate-suv implements it): the dose is decayed
from injection to the scan start. ``autopet`` reproduces the conversion the autoPET NIfTI data were made with
(and so the scale the model learned): the dose decayed to the AcquisitionTime of the series' first file. Both
share every check; they differ only in the time the dose is decayed to.

Where QIBA's pseudo-code has no rule, or one that the IBSI SUV manual (oncoray/suv_computation, "Comprehensive
Manual for SUV Computation and Digital Reference Objects for its Verification") shows to give wrong numbers, the
manual's rule is followed: images stored as SUV of another kind (Units GML with an SUV Type, CM2ML) are converted
to SUVbw with its formulas; a dose written in MBq is converted; Philips factors without their private creator are
read; a SeriesTime after the acquisition is replaced by the vendor's private scan start or by the scan start
back-computed frame by frame; DecayCorrection NONE is decay-corrected frame by frame.

This package's modules: ``headers`` (reading DICOM values: text, numbers, the one DICOM date and time parser),
``vendors`` (GE's, Siemens' and Philips' private elements), ``decay`` (the scan and injection times and the dose
decayed to them), ``suv_types`` (stored SUV of another kind to SUVbw); here the conversion and its checks.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from pydicom.dataset import Dataset

from model.errors import InputError
from studies.suv.decay import decayed_doses
from studies.suv.headers import number_of, positive_number, radiopharmaceutical, text_of, values_of
from studies.suv.suv_types import checked_suv_type, suvbw_factor
from studies.suv.vendors import (
    GE_PET_CREATOR,
    GE_SCAN_DATETIME,
    SIEMENS_PET_CREATOR,
    SIEMENS_SCAN_DATETIME,
    philips_factor,
    private_value,
)

SuvMethod = Literal["qiba", "autopet"]
SUV_METHODS: tuple[str, ...] = get_args(SuvMethod)
# QIBA's vendor-neutral rules: the method wherever none is given (process.py's and studies.dicom's --suv-method).
DEFAULT_SUV_METHOD: SuvMethod = "qiba"
# The manual: a RadionuclideTotalDose above 0 and below this cannot be Bq (FDG doses are 1e8 to 1e9 Bq); it is MBq.
MBQ_DOSE_BELOW = 1e4
F18_HALF_LIFE_S = (6540.0, 6640.0)  # 109.77 min (6586.2 s; GE writes 6588): the model is trained on FDG
FDG_NAMES = ("FDG", "FLUORODEOXYGLUCOSE", "FLUDEOXYGLUCOSE", "DEOXYGLUCOSE")
FDG_CODES = ("35321007", "C-B1031")  # SNOMED CT / SRT: Fluorodeoxyglucose F^18^ (DICOM CID 4021)


@dataclasses.dataclass(frozen=True)
class SuvConversion:
    """SUVbw = stored value x RescaleSlope + RescaleIntercept, times ``factor``; with every value used."""

    method: str
    units: str
    decay_correction: str
    corrected_image: tuple[str, ...]
    factor: float
    rule: str
    weight_kg: float | None = None
    weight_source: str | None = None
    injected_dose_bq: float | None = None
    half_life_s: float | None = None
    injection_time: str | None = None
    injection_time_source: str | None = None
    scan_time: str | None = None
    scan_time_source: str | None = None
    decay_time_s: float | None = None
    decayed_dose_bq: float | None = None
    vendor_factor: float | None = None
    vendor_factor_source: str | None = None
    suv_type_factor: float | None = None  # SUVbw = stored SUV of another kind x this (weight / LBM, IBW, BSA)
    tracer: str | None = None
    notes: tuple[str, ...] = ()
    # Decay corrected frame by frame (DecayCorrection NONE, or scan starts back-computed per frame): one factor
    # per header given to suv_conversion, in that order; empty when ``factor`` holds for every image.
    frame_factors: tuple[float, ...] = ()

    def factor_of(self, index: int) -> float:
        """The factor of the ``index``-th header given to suv_conversion."""
        return self.frame_factors[index] if self.frame_factors else self.factor

    def to_dict(self) -> dict:
        """JSON-ready: the block written to suv.json and into the report (per-frame factors as their range)."""
        document = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                    if k != "frame_factors"}
        if self.frame_factors:
            document["frame_factors"] = {"count": len(self.frame_factors), "min": min(self.frame_factors),
                                         "max": max(self.frame_factors)}
        return document


# What every image of a series must agree on (series-level values), as QIBA's pseudo-code and OHIF's
# calculate-suv require: with the first file's values taken, a mixed series would get a factor that is wrong
# for some of its slices. Numbers compare as numbers ("75" and "75.0" agree).
SERIES_LEVEL: tuple[tuple[str, Callable[[Dataset], object], bool], ...] = (
    ("Units", lambda ds: ds.get("Units"), False),
    ("DecayCorrection", lambda ds: ds.get("DecayCorrection"), False),
    ("CorrectedImage", lambda ds: ds.get("CorrectedImage"), False),
    ("PatientWeight", lambda ds: ds.get("PatientWeight"), True),
    ("SeriesDate", lambda ds: ds.get("SeriesDate"), False),
    ("SeriesTime", lambda ds: ds.get("SeriesTime"), False),
    ("RadionuclideTotalDose", lambda ds: radiopharmaceutical(ds).get("RadionuclideTotalDose"), True),
    ("RadionuclideHalfLife", lambda ds: radiopharmaceutical(ds).get("RadionuclideHalfLife"), True),
    ("RadiopharmaceuticalStartTime", lambda ds: radiopharmaceutical(ds).get("RadiopharmaceuticalStartTime"), False),
    ("RadiopharmaceuticalStartDateTime",
     lambda ds: radiopharmaceutical(ds).get("RadiopharmaceuticalStartDateTime"), False),
    ("GE private scan time (0009,100D)",
     lambda ds: private_value(ds, 0x0009, GE_PET_CREATOR, GE_SCAN_DATETIME), False),
    ("SIEMENS private scan time (0071,1022)",
     lambda ds: private_value(ds, 0x0071, SIEMENS_PET_CREATOR, SIEMENS_SCAN_DATETIME), False),
    ("SUVType", lambda ds: ds.get("SUVType"), False),
    # Read only to turn stored SUV of another kind into SUVbw (suv_conversion skips them otherwise).
    ("PatientSize", lambda ds: ds.get("PatientSize"), True),
    ("PatientSex", lambda ds: ds.get("PatientSex"), False),
)
BODY_SIZE_ONLY = ("PatientSize", "PatientSex")


def _comparable(value: object, numeric: bool) -> object:
    values = values_of(value)
    if numeric and len(values) == 1 and (number := number_of(values[0])) is not None:
        return number
    return "\\".join(values)


def check_series_level(headers: Sequence[Dataset], source: str, skip: Sequence[str] = ()) -> None:
    """One line naming the first series-level value on which the images of the series disagree."""
    for name, getter, numeric in SERIES_LEVEL:
        if name in skip:
            continue
        seen: Counter = Counter()
        shown_as: dict[object, str] = {}
        for ds in headers:
            raw = getter(ds)
            key = _comparable(raw, numeric)
            seen[key] += 1
            shown_as.setdefault(key, "\\".join(values_of(raw)) or "(missing)")
        if len(seen) > 1:
            listing = ", ".join(f"{shown_as[key]!r} in {count} file{'s' * (count > 1)}"
                                for key, count in seen.most_common())
            raise InputError(f"{source}: {name} differs between the images of the series ({listing}): one series "
                             "must have one value")


def check_suv_options(method: str, weight_kg: float | None) -> None:
    """The user's choices, checked before any series is read (InputError)."""
    if method not in SUV_METHODS:
        raise InputError(f"SUV method {method!r}: expected one of {', '.join(SUV_METHODS)}")
    if weight_kg is not None and not (math.isfinite(weight_kg) and weight_kg > 0):
        raise InputError(f"body weight {weight_kg} kg: must be a positive number")


def _corrections(headers: Sequence[Dataset], source: str) -> tuple[tuple[str, ...], str, str, list[str]]:
    """(CorrectedImage, DecayCorrection, Units, notes) of the series, checked."""
    first = headers[0]
    corrected = values_of(first.get("CorrectedImage"))
    decay = text_of(first, "DecayCorrection").upper()
    if decay not in ("START", "ADMIN", "NONE"):
        raise InputError(f"{source}: DecayCorrection {decay or 'missing'}: expected START, ADMIN or NONE")
    # Images not decay corrected (NONE) are decay corrected frame by frame here: they need ATTN only.
    needed = ("ATTN",) if decay == "NONE" else ("ATTN", "DECY")
    missing = [flag for flag in needed if flag not in corrected]
    if missing:
        raise InputError(f"{source}: CorrectedImage {list(corrected)} lacks {' and '.join(missing)}: SUV needs "
                         "attenuation- and decay-corrected images")
    notes = []
    if decay == "NONE" and "DECY" in corrected:
        # The manual decides by DecayCorrection, which names the reference time; CorrectedImage does not.
        notes.append(f"DecayCorrection NONE though CorrectedImage {list(corrected)} lists DECY: DecayCorrection "
                     "followed (frames decay corrected here), as the IBSI manual does")
    units = text_of(first, "Units").upper()
    if units not in ("BQML", "CNTS", "GML", "CM2ML"):
        raise InputError(f"{source}: Units {units or 'missing'}: SUV needs BQML, CNTS (Philips), GML or CM2ML")
    return corrected, decay, units, notes


def _dose_and_half_life(first: Dataset, source: str) -> tuple[float, float, list[str]]:
    """(dose in Bq, half-life in s, notes): a dose that cannot be Bq (below MBQ_DOSE_BELOW) is MBq."""
    if not first.get("RadiopharmaceuticalInformationSequence"):
        raise InputError(f"{source}: no RadiopharmaceuticalInformationSequence: injected dose unknown")
    info = radiopharmaceutical(first)
    dose = positive_number(info.get("RadionuclideTotalDose"))
    half_life = positive_number(info.get("RadionuclideHalfLife"))
    if dose is None:
        raise InputError(f"{source}: RadionuclideTotalDose {text_of(info, 'RadionuclideTotalDose') or 'missing'!r} is "
                         "not a positive number: injected dose unknown")
    if half_life is None:
        raise InputError(f"{source}: RadionuclideHalfLife {text_of(info, 'RadionuclideHalfLife') or 'missing'!r} is "
                         "not a positive number")
    notes = []
    if dose < MBQ_DOSE_BELOW:
        notes.append(f"RadionuclideTotalDose {dose:g} cannot be Bq (below {MBQ_DOSE_BELOW:g}): read as MBq, "
                     f"{dose * 1e6:g} Bq")
        dose *= 1e6
    return dose, half_life, notes


def tracer_note(first: Dataset) -> tuple[str | None, str | None]:
    """(the tracer as the header names it, a note when it is not FDG, which the model is trained for)."""
    info = radiopharmaceutical(first)
    name = text_of(info, "Radiopharmaceutical")
    codes = [text_of(item, "CodeValue").upper() for item in info.get("RadiopharmaceuticalCodeSequence") or []]
    nuclide = [text_of(item, "CodeMeaning") for item in info.get("RadionuclideCodeSequence") or []]
    half_life = positive_number(info.get("RadionuclideHalfLife"))
    shown_as = name or (nuclide[0] if nuclide else None)
    low, high = F18_HALF_LIFE_S
    if half_life is not None and not low <= half_life <= high:
        return shown_as, (f"radionuclide half-life {half_life:g} s is not F-18's ({shown_as or 'tracer unnamed'}): "
                          "the tracer is not FDG, the model is trained on FDG PET")
    named_fdg = any(word in name.upper().replace("-", "") for word in FDG_NAMES) or any(
        code in FDG_CODES for code in codes)
    if (name or codes) and not named_fdg:
        return shown_as, (f"Radiopharmaceutical {name or codes[0]!r} is not FDG: the model is trained on FDG "
                          "PET")
    return shown_as, None


def _weight(first: Dataset, weight_kg: float | None, source: str) -> tuple[float, str]:
    if weight_kg is not None:
        return weight_kg, "--weight-kg"
    weight = positive_number(first.get("PatientWeight"))
    if weight is None:
        written = text_of(first, "PatientWeight")
        raise InputError(f"{source}: PatientWeight missing or 0{f' ({written!r})' if written else ''}: SUVbw needs "
                         "the body weight; give it with --weight-kg")
    return weight, "PatientWeight"


def suv_conversion(headers: Sequence[Dataset], *, method: SuvMethod = DEFAULT_SUV_METHOD,
                   weight_kg: float | None = None, source: str = "PET series") -> SuvConversion:
    """The SUVbw factor of a PET series from its headers (pixel data not needed).

    ``headers`` are the series' images in file-name order (``autopet`` uses the first one); ``weight_kg``
    overrides PatientWeight. Where the factor differs between frames it is in ``frame_factors``, in the order
    of ``headers``. Every refusal is an InputError naming ``source``.
    """
    check_suv_options(method, weight_kg)
    if not headers:
        raise InputError(f"{source}: no images")
    # The series-level values are checked in every file: a series is one set of values, not its first file's.
    skip = (*(("PatientWeight",) if weight_kg is not None else ()),
            *(BODY_SIZE_ONLY if text_of(headers[0], "Units").upper() not in ("GML", "CM2ML") else ()))
    check_series_level(headers, source, skip=skip)
    corrected, decay, units, notes = _corrections(headers, source)
    first = headers[0]
    suv_type = checked_suv_type(first, units, source)
    tracer, tracer_warning = tracer_note(first)
    base = dict(method=method, units=units, decay_correction=decay, corrected_image=corrected, tracer=tracer,
                notes=(*([tracer_warning] if tracer_warning else []), *notes))
    if units in ("GML", "CM2ML"):
        if suv_type == "BW":
            return SuvConversion(**base, factor=1.0, rule="Units GML: the images are SUVbw already")
        weight, weight_source = _weight(first, weight_kg, source)
        factor, rule = suvbw_factor(first, units, suv_type, weight, source)
        return SuvConversion(**base, factor=factor, rule=rule, weight_kg=weight, weight_source=weight_source,
                             suv_type_factor=factor)
    return _activity_conversion(headers, base, units, suv_type, method, decay, weight_kg, source)


def _activity_conversion(headers: Sequence[Dataset], base: dict, units: str, suv_type: str, method: str,
                         decay: str, weight_kg: float | None, source: str) -> SuvConversion:
    """BQML, or CNTS through a Philips factor: SUVbw = Bq/ml x weight[g] / dose decayed to the images' time."""
    vendor_factor, vendor_source = None, None
    if units == "CNTS":
        vendor_factor, vendor_source = philips_factor(headers, suv_type, source)
        if vendor_source.startswith("Philips (7053,1000)"):
            return SuvConversion(**base, factor=vendor_factor, vendor_factor=vendor_factor,
                                 vendor_factor_source=vendor_source,
                                 rule="Units CNTS: SUVbw = value x Philips SUV factor (7053,1000)")
    first = headers[0]
    weight, weight_source = _weight(first, weight_kg, source)
    dose, half_life, notes = _dose_and_half_life(first, source)
    decayed, decay_rule, times, more = decayed_doses(headers, method, decay, dose, half_life, source)
    scale = vendor_factor if vendor_factor is not None else 1.0
    factors = [scale * weight * 1000.0 / frame_dose for frame_dose in decayed]
    if units == "CNTS":
        rule = (f"Units CNTS: SUVbw = value x Philips activity factor (7053,1009) x weight[g] / decayed dose[Bq]; "
                f"{decay_rule}")
    else:
        rule = f"Units BQML: SUVbw = value x weight[g] / decayed dose[Bq]; {decay_rule}"
    uniform = max(factors) == min(factors)
    return SuvConversion(**{**base, "notes": (*base["notes"], *notes, *more)}, factor=factors[0], rule=rule,
                         weight_kg=weight, weight_source=weight_source, injected_dose_bq=dose,
                         half_life_s=half_life, decayed_dose_bq=decayed[0], vendor_factor=vendor_factor,
                         vendor_factor_source=vendor_source, frame_factors=() if uniform else tuple(factors),
                         **times)
