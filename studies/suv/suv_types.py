"""Images stored as SUV of another kind than body weight (Units GML with SUVType LBM, LBMJAMES128, LBMJANMA or
IBW; CM2ML, body surface area) turned into SUVbw with the IBSI manual's formulas; SUVType checked against Units."""

from __future__ import annotations

import math

from pydicom.dataset import Dataset

from model.errors import InputError
from studies.suv.headers import positive_number, text_of

PLAUSIBLE_HEIGHT_M = (0.3, 2.75)  # PatientSize is in metres (DICOM); a phantom or a person


def checked_suv_type(first: Dataset, units: str, source: str) -> str:
    """SUVType (0054,1006) checked against Units: GML holds BW (also when SUVType is absent), LBM, LBMJAMES128,
    LBMJANMA or IBW; CM2ML holds BSA; BQML and CNTS images are not SUV yet."""
    suv_type = text_of(first, "SUVType").upper()
    allowed = {"GML": ("BW", "LBM", "LBMJAMES128", "LBMJANMA", "IBW"), "CM2ML": ("BSA",)}.get(units)
    if allowed is None or not suv_type:
        return suv_type or {"GML": "BW", "CM2ML": "BSA"}.get(units, "")
    if suv_type not in allowed:
        raise InputError(f"{source}: Units {units} with SUVType {suv_type}: expected one of {', '.join(allowed)}")
    return suv_type


def _sex_specific(sex: str, male: float, female: float) -> float:
    # The manual: no consensus for sex "O"; the mean of the two sex-specific values.
    return {"M": male, "F": female}.get(sex, (male + female) / 2.0)


def suv_type_normaliser(suv_type: str, weight_kg: float, height_cm: float, sex: str) -> float:
    """The mass (kg) or, for BSA, the area (m^2) that an SUV of ``suv_type`` divides by (the manual's formulas:
    Morgan / James / Janmahasatian lean body mass, ideal body weight, Du Bois body surface area)."""
    ratio = (weight_kg / height_cm) ** 2
    if suv_type == "LBM":
        return _sex_specific(sex, 1.10 * weight_kg - 120 * ratio, 1.07 * weight_kg - 148 * ratio)
    if suv_type == "LBMJAMES128":
        return _sex_specific(sex, 1.10 * weight_kg - 128 * ratio, 1.07 * weight_kg - 148 * ratio)
    if suv_type == "LBMJANMA":
        bmi = weight_kg / (height_cm / 100.0) ** 2
        return _sex_specific(sex, 9270 * weight_kg / (6680 + 216 * bmi), 9270 * weight_kg / (8780 + 244 * bmi))
    if suv_type == "IBW":
        return _sex_specific(sex, 48.0 + 1.06 * (height_cm - 152), 45.5 + 0.91 * (height_cm - 152))
    if suv_type == "BSA":
        return 0.007184 * height_cm ** 0.725 * weight_kg ** 0.425
    raise ValueError(f"no normaliser for SUV type {suv_type!r}")


def suvbw_factor(first: Dataset, units: str, suv_type: str, weight: float, source: str) -> tuple[float, str]:
    """(factor, rule) that turns stored SUV of ``suv_type`` into SUVbw: weight / normaliser (BSA: cm^2 / 1000)."""
    height_m = positive_number(first.get("PatientSize"))
    sex = text_of(first, "PatientSex").upper()
    if height_m is None:
        raise InputError(f"{source}: Units {units} SUVType {suv_type} needs the height to convert to SUVbw; "
                         f"PatientSize is {text_of(first, 'PatientSize') or 'missing'!r}")
    low, high = PLAUSIBLE_HEIGHT_M
    if not low <= height_m <= high:  # 175 written for 1.75 m would change the LBM silently
        raise InputError(f"{source}: PatientSize {height_m:g} is not a height in metres ({low:g} to {high:g} m; "
                         f"centimetres written?): SUVType {suv_type} cannot be converted to SUVbw")
    if suv_type != "BSA" and sex not in ("M", "F", "O"):
        raise InputError(f"{source}: Units {units} SUVType {suv_type} needs the sex to convert to SUVbw; "
                         f"PatientSex is {sex or 'missing'!r} (expected M, F or O)")
    normaliser = suv_type_normaliser(suv_type, weight, height_m * 100.0, sex)
    if not (math.isfinite(normaliser) and normaliser > 0):
        raise InputError(f"{source}: SUVType {suv_type} of {weight:g} kg, {height_m:g} m gives no positive "
                         "normaliser: weight or height is wrong")
    if suv_type == "BSA":
        return weight / (10.0 * normaliser), (f"Units CM2ML (SUVbsa): SUVbw = value x weight[kg] x 1000 / "
                                              f"(BSA {normaliser:.4f} m^2 x 10^4 cm^2/m^2), BSA by Du Bois")
    return weight / normaliser, (f"Units GML SUVType {suv_type}: SUVbw = value x weight {weight:g} kg / "
                                 f"{suv_type} {normaliser:.3f} kg (sex {sex}, height {height_m:g} m)")
