"""One study: the grid's spec, the result, and make_phantom, which draws the rest in order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from phantoms.anatomy import paint_body
from phantoms.body import Body
from phantoms.geometry import Canvas
from phantoms.imaging import ct_image, pet_image, tissue_hu
from phantoms.lesions import DIAGNOSES, Lesion, add_lesions
from phantoms.physiology import shift_at_diaphragm, uptake_map


@dataclass(frozen=True)
class PhantomSpec:
    """The grid a study is drawn on. The defaults are autoPET's (400 x 400 at 2.0364 mm, 326 slices of 3 mm):
    the one place they are stated (``python -m train synth`` takes its defaults from DEFAULT_SPEC)."""

    size: int = 400
    spacing: float = 2.0364
    slices: int = 326
    slice_thickness: float = 3.0
    # Fraction of studies whose field of view runs on to the feet: those get as many slices as that takes,
    # the others exactly ``slices``.
    feet_fraction: float = 0.0

    def __post_init__(self):
        if min(self.size, self.slices) < 1 or min(self.spacing, self.slice_thickness) <= 0:
            raise ValueError(f"phantom grid needs a positive size, spacing, slices and thickness: {self}")
        if not 0 <= self.feet_fraction <= 1:
            raise ValueError(f"feet_fraction {self.feet_fraction} is not a fraction")


DEFAULT_SPEC = PhantomSpec()



@dataclass
class Phantom:
    pet: np.ndarray  # (Z, Y, X) float32 SUV, as imaged
    ct: np.ndarray  # (Z, Y, X) int16 HU
    mask: np.ndarray  # (Z, Y, X) uint8, the true lesion extent
    spacing: tuple[float, float, float]  # x, y, z in mm
    diagnosis: str
    labels: np.ndarray  # (Z, Y, X) uint8 tissue index into TISSUES, in the CT's frame
    activity: np.ndarray  # (Z, Y, X) float32 true SUV before blur and noise, in the PET's frame
    lesions: list[Lesion] = field(default_factory=list)
    features: dict = field(default_factory=dict)  # what was drawn: body, field of view, uptake, imaging

    def images(self, origin: tuple[float, float, float] | None = None) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
        """PET, CT and mask as SimpleITK images sharing one grid."""
        pet, ct, mask = (self._on_grid(array, origin) for array in (self.pet, self.ct, self.mask))
        return pet, ct, mask

    def tissue_image(self, origin: tuple[float, float, float] | None = None) -> sitk.Image:
        """The tissue labels (indices into TISSUES) on the images' grid: where a false positive lies
        (``train evaluate --tissues``)."""
        return self._on_grid(self.labels, origin)

    def _on_grid(self, array: np.ndarray, origin: tuple[float, float, float] | None) -> sitk.Image:
        depth, height, width = array.shape
        if origin is None:
            origin = (-width * self.spacing[0] / 2, -height * self.spacing[1] / 2, -depth * self.spacing[2])
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(origin)
        return image


def make_phantom(seed: int, positive: bool = True, spec: PhantomSpec = DEFAULT_SPEC,
                 diagnosis: str | None = None) -> Phantom:
    """One synthetic study. Positive studies get one or more lesions (unless the field of view holds no body,
    as a few slices above the vertex), negative ones none. ``diagnosis`` chooses a positive study's lesion
    pattern (drawn when None); a negative study carries it as its label.

    The body, organs and uptake come from the seed alone; lesion sites are found on the spec's grid. Four
    generators spawned from the seed (anatomy, lesions, CT, PET) keep each part's draws independent of the
    others'; within a part, the order of the calls below is the order of the draws.
    """
    if diagnosis is not None and diagnosis not in DIAGNOSES:
        raise ValueError(f"unknown diagnosis {diagnosis!r}; one of {DIAGNOSES}")
    anatomy_rng, lesion_rng, ct_rng, pet_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    body = Body(anatomy_rng, spec.feet_fraction)
    dz = spec.slice_thickness
    slices = spec.slices
    if body.to_feet:  # on past the soles
        slices = max(slices, math.ceil((body.fov_top + 20) / dz))
    canvas = Canvas(spec.size, spec.spacing, slices, dz, body.fov_top)
    bladder_ml = paint_body(body, canvas, anatomy_rng)
    features = {"sex": "M" if body.male else "F", "age": body.age, "height_mm": round(body.height),
                "fat_mm": round(body.fat, 1), "frame": round(body.frame, 3), "arms": body.arms,
                "head_yaw_deg": round(math.degrees(body.head_yaw), 1),
                "fov": ("vertex" if body.from_vertex else "neck") + " to " + ("feet" if body.to_feet else "thigh"),
                "slices": slices, "bladder_ml": round(bladder_ml)}
    activity = uptake_map(body, canvas, anatomy_rng, features)
    shift = anatomy_rng.uniform(6, 20) if anatomy_rng.random() < 0.25 else 0.0
    features["misregistration_mm"] = round(shift, 1)
    if shift:
        shift_at_diaphragm(body, canvas, activity, shift)
    hu = tissue_hu(anatomy_rng, body.age)[canvas.labels]

    mask = np.zeros(canvas.labels.shape, dtype=np.uint8)
    lesions: list[Lesion] = []
    if positive:
        if diagnosis is None:
            diagnosis = str(lesion_rng.choice(DIAGNOSES))
        lesions = add_lesions(body, canvas, lesion_rng, diagnosis, float(features["uptake"]["liver"]),
                              (activity, hu, mask))
    else:
        diagnosis = "NEGATIVE" if diagnosis is None else diagnosis
    features["lesions"] = len(lesions)

    ct = ct_image(canvas, hu, ct_rng, features)
    del hu
    pet = pet_image(canvas, activity, pet_rng, features, 0.85 + body.fat / 60)
    return Phantom(pet=pet, ct=ct, mask=mask, spacing=canvas.spacing, diagnosis=diagnosis, labels=canvas.labels,
                   activity=activity, lesions=lesions, features=features)
