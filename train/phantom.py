"""Synthetic whole-body FDG PET/CT studies with lesions, for tests, demos and in-silico experiments.

The anatomy changes along z (legs, pelvis, abdomen, thorax with arms, neck, head) and carries the
physiological hot spots that are NOT lesions (brain, bladder, heart, kidneys), so that a model has to
tell lesions from normal uptake. PET is in SUV, blurred to about 6 mm FWHM, with noise; CT in HU.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

# Tissue labels painted per slice; HU and SUV ranges are drawn per study.
AIR, FAT, MUSCLE, LUNG, CORTEX, MARROW, LIVER, HEART, KIDNEY, BRAIN, BLADDER = range(11)
HU = {AIR: -1000, FAT: -100, MUSCLE: 45, LUNG: -850, CORTEX: 900, MARROW: 250, LIVER: 58, HEART: 40,
      KIDNEY: 32, BRAIN: 35, BLADDER: 8}
SUV_RANGE = {AIR: (0.0, 0.0), FAT: (0.3, 0.5), MUSCLE: (0.6, 1.0), LUNG: (0.3, 0.5), CORTEX: (0.4, 0.6),
             MARROW: (0.9, 1.4), LIVER: (1.2, 1.5), HEART: (2.0, 8.0), KIDNEY: (3.0, 6.0), BRAIN: (6.0, 10.0),
             BLADDER: (10.0, 40.0)}
DIAGNOSES = ("MELANOMA", "LUNG_CANCER", "LYMPHOMA")
# Where lesions go, per diagnosis (sites drawn with these weights).
SITE_WEIGHTS = {
    "MELANOMA": {"lung": 2, "liver": 2, "node": 2, "bone": 1, "soft": 3},
    "LUNG_CANCER": {"lung": 5, "liver": 1, "node": 3, "bone": 1, "soft": 0},
    "LYMPHOMA": {"lung": 0, "liver": 1, "node": 7, "bone": 1, "soft": 1},
}


@dataclass(frozen=True)
class PhantomSpec:
    size: int = 400
    spacing: float = 2.0364
    slices: int = 326
    slice_thickness: float = 3.0


@dataclass
class Phantom:
    pet: np.ndarray  # (Z, Y, X) float32 SUV
    ct: np.ndarray  # (Z, Y, X) int16 HU
    mask: np.ndarray  # (Z, Y, X) uint8
    spacing: tuple[float, float, float]  # x, y, z in mm
    diagnosis: str

    def images(self, origin: tuple[float, float, float] | None = None) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
        """PET, CT and mask as SimpleITK images sharing one grid."""
        depth, height, width = self.pet.shape
        if origin is None:
            origin = (-width * self.spacing[0] / 2, -height * self.spacing[1] / 2, -depth * self.spacing[2])
        images = []
        for array in (self.pet, self.ct, self.mask):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(self.spacing)
            image.SetOrigin(origin)
            images.append(image)
        return images[0], images[1], images[2]


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0


def _ramp(t: float, t0: float, t1: float, v0: float, v1: float) -> float:
    f = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
    return v0 + f * (v1 - v0)


class _Body:
    """Per-study anatomy: scales and positions drawn once, painted slice by slice."""

    def __init__(self, rng: np.random.Generator, spec: PhantomSpec):
        self.scale = rng.uniform(0.85, 1.05)
        self.ap = rng.uniform(0.85, 1.1)  # anterior-posterior flattening
        self.height = spec.slices * spec.slice_thickness
        self.offset_y = rng.uniform(-10, 10)

    def torso_axes(self, t: float) -> tuple[float, float]:
        """Semi-axes (x, y) in mm of the trunk at height t (0 = mid-thigh, 1 = vertex)."""
        if t < 0.18:
            return 0.0, 0.0
        if t < 0.8:
            a = _ramp(t, 0.18, 0.3, 165, 150) if t < 0.45 else _ramp(t, 0.6, 0.78, 150, 165)
            return a * self.scale, 105 * self.scale * self.ap
        return 0.0, 0.0

    def paint(self, t: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        labels = np.zeros(xx.shape, dtype=np.int8)
        s, ap, oy = self.scale, self.ap, self.offset_y
        yy = yy - oy
        if t < 0.18:  # thighs
            for side in (-1, 1):
                leg = _ellipse(xx, yy, side * 85 * s, 0, 72 * s, 78 * s * ap)
                labels[leg] = FAT
                labels[_ellipse(xx, yy, side * 85 * s, 0, 60 * s, 66 * s * ap)] = MUSCLE
                labels[_ellipse(xx, yy, side * 85 * s, 5, 14, 14)] = CORTEX
                labels[_ellipse(xx, yy, side * 85 * s, 5, 9, 9)] = MARROW
            return labels
        if t < 0.8:  # trunk
            a, b = self.torso_axes(t)
            labels[_ellipse(xx, yy, 0, 0, a, b)] = FAT
            labels[_ellipse(xx, yy, 0, 0, a - 14, b - 14)] = MUSCLE
            if 0.3 < t < 0.8:  # arms along the trunk
                for side in (-1, 1):
                    cx = side * (a + 48 * s)
                    labels[_ellipse(xx, yy, cx, 0, 40 * s, 45 * s)] = FAT
                    labels[_ellipse(xx, yy, cx, 0, 32 * s, 36 * s)] = MUSCLE
                    labels[_ellipse(xx, yy, cx, 0, 10, 10)] = CORTEX
            if t > 0.25:  # spine
                labels[_ellipse(xx, yy, 0, b - 45, 22, 20)] = CORTEX
                labels[_ellipse(xx, yy, 0, b - 45, 16, 14)] = MARROW
            if t < 0.33:  # pelvis: iliac bones and bladder
                for side in (-1, 1):
                    labels[_ellipse(xx, yy, side * 95 * s, 25, 30, 45)] = CORTEX
                    labels[_ellipse(xx, yy, side * 95 * s, 25, 22, 37)] = MARROW
                if 0.19 < t < 0.28:
                    r = 45 * np.sin(np.pi * (t - 0.19) / 0.09) * s
                    labels[_ellipse(xx, yy, 0, -30, r + 1, 0.8 * r + 1)] = BLADDER
            if 0.36 < t < 0.48:  # kidneys
                r = 32 * np.sin(np.pi * (t - 0.36) / 0.12)
                for side in (-1, 1):
                    labels[_ellipse(xx, yy, side * 65 * s, b - 55, 0.7 * r + 1, r + 1)] = KIDNEY
            if 0.44 < t < 0.62:  # liver, on the patient's right
                r = 85 * np.sin(np.pi * (t - 0.44) / 0.18) * s
                labels[_ellipse(xx, yy, -50 * s, -5, r + 1, 0.75 * r + 1)] = LIVER
            if 0.58 < t < 0.79:  # lungs
                r = np.sin(np.pi * (t - 0.58) / 0.21)
                for side in (-1, 1):
                    labels[_ellipse(xx, yy, side * 68 * s, 5, 55 * r * s + 1, 75 * r * ap + 1)] = LUNG
            if 0.62 < t < 0.72:  # heart, left anterior
                r = 55 * np.sin(np.pi * (t - 0.62) / 0.10) * s
                labels[_ellipse(xx, yy, 25 * s, -25, r + 1, 0.85 * r + 1)] = HEART
            return labels
        if t < 0.87:  # neck
            labels[_ellipse(xx, yy, 0, 0, 60 * s, 60 * s)] = FAT
            labels[_ellipse(xx, yy, 0, 0, 50 * s, 50 * s)] = MUSCLE
            labels[_ellipse(xx, yy, 0, 20, 14, 12)] = CORTEX
            labels[_ellipse(xx, yy, 0, 20, 9, 8)] = MARROW
            return labels
        r = np.sqrt(max(1 - ((t - 0.93) / 0.075) ** 2, 0.0))  # head
        if r > 0.05:
            labels[_ellipse(xx, yy, 0, 0, 78 * r * s, 95 * r * s)] = CORTEX
            labels[_ellipse(xx, yy, 0, 0, 72 * r * s - 1, 89 * r * s - 1)] = BRAIN
        return labels


def _lesion_centres(rng: np.random.Generator, site: str, body: _Body, spec: PhantomSpec,
                    labels_at: callable) -> tuple[float, float, float] | None:
    """A lesion centre (x, y, z in mm) at a site, found by rejection sampling on the painted anatomy."""
    wanted = {"lung": (LUNG,), "liver": (LIVER,), "bone": (MARROW, CORTEX), "soft": (MUSCLE, FAT),
              "node": (MUSCLE, FAT)}[site]
    t_ranges = {"lung": (0.6, 0.77), "liver": (0.46, 0.6), "bone": (0.2, 0.86), "soft": (0.05, 0.85),
                "node": None}[site]
    for _ in range(200):
        if site == "node":  # lymph-node stations: neck, axilla, mediastinum, para-aortic, iliac/inguinal
            station = rng.integers(5)
            t = [rng.uniform(0.81, 0.86), rng.uniform(0.74, 0.78), rng.uniform(0.62, 0.72),
                 rng.uniform(0.38, 0.5), rng.uniform(0.2, 0.3)][station]
            x = [rng.choice([-1, 1]) * rng.uniform(20, 40), rng.choice([-1, 1]) * rng.uniform(95, 130),
                 rng.uniform(-15, 15), rng.uniform(-30, 30), rng.choice([-1, 1]) * rng.uniform(50, 80)][station]
            y = rng.uniform(-20, 30)
        else:
            t = rng.uniform(*t_ranges)
            x, y = rng.uniform(-180, 180), rng.uniform(-120, 120)
        labels, to_index = labels_at(t)
        iy, ix = to_index(x, y)
        if 0 <= iy < labels.shape[0] and 0 <= ix < labels.shape[1] and labels[iy, ix] in wanted:
            return x, y, t * body.height
    return None


def make_phantom(seed: int, positive: bool = True, spec: PhantomSpec = PhantomSpec(),
                 diagnosis: str | None = None) -> Phantom:
    """One synthetic study. Positive studies get 1 to 6 lesions; negative ones none."""
    rng = np.random.default_rng(seed)
    body = _Body(rng, spec)
    n, dz = spec.size, spec.slice_thickness
    coords = (np.arange(n) - (n - 1) / 2) * spec.spacing
    xx, yy = np.meshgrid(coords, coords)
    hu_table = np.array([HU[k] + (rng.normal(0, 5) if k not in (AIR,) else 0) for k in range(11)],
                        dtype=np.float32)
    suv_table = np.array([rng.uniform(*SUV_RANGE[k]) for k in range(11)], dtype=np.float32)

    labels = np.empty((spec.slices, n, n), dtype=np.int8)
    for z in range(spec.slices):
        labels[z] = body.paint((z + 0.5) / spec.slices, xx, yy)
    ct = hu_table[labels]
    pet = suv_table[labels]
    mask = np.zeros(labels.shape, dtype=np.uint8)

    if diagnosis is None:
        diagnosis = str(rng.choice(DIAGNOSES)) if positive else "NEGATIVE"
    if positive:
        def labels_at(t: float):
            z = min(int(t * spec.slices), spec.slices - 1)
            return labels[z], lambda x, y: (round(y / spec.spacing + (n - 1) / 2 + body.offset_y / spec.spacing),
                                             round(x / spec.spacing + (n - 1) / 2))

        weights = SITE_WEIGHTS[diagnosis]
        sites = [s for s in weights if weights[s]]
        p = np.array([weights[s] for s in sites], dtype=float)
        for _ in range(rng.integers(1, 7)):
            site = str(rng.choice(sites, p=p / p.sum()))
            centre = _lesion_centres(rng, site, body, spec, labels_at)
            if centre is None:
                continue
            _add_lesion(rng, centre, site, pet, ct, mask, labels, spec, body.offset_y)

    sigma_mm = 6.0 / 2.3548
    pet = gaussian_filter(pet, sigma=(sigma_mm / dz, sigma_mm / spec.spacing, sigma_mm / spec.spacing))
    noise = rng.standard_normal(pet.shape, dtype=np.float32)
    noise = gaussian_filter(noise, sigma=0.7)
    pet = np.clip(pet * (1.0 + 0.25 * noise) + 0.02 * np.abs(noise), 0.0, None).astype(np.float32)
    ct = (ct + rng.normal(0, 12, size=ct.shape).astype(np.float32)).round().astype(np.int16)
    return Phantom(pet=pet, ct=ct, mask=mask, spacing=(spec.spacing, spec.spacing, dz), diagnosis=diagnosis)


def _add_lesion(rng: np.random.Generator, centre: tuple[float, float, float], site: str, pet: np.ndarray,
                ct: np.ndarray, mask: np.ndarray, labels: np.ndarray, spec: PhantomSpec, offset_y: float) -> None:
    diameter = rng.uniform(5, 50) if site != "lung" else rng.uniform(5, 35)
    semi = diameter / 2 * rng.uniform(0.7, 1.3, size=3)  # ellipsoid semi-axes x, y, z in mm
    suv = rng.uniform(3, 25)
    n = spec.size
    cx = centre[0] / spec.spacing + (n - 1) / 2
    cy = (centre[1] + offset_y) / spec.spacing + (n - 1) / 2
    cz = centre[2] / spec.slice_thickness - 0.5
    rx, ry, rz = semi[0] / spec.spacing, semi[1] / spec.spacing, semi[2] / spec.slice_thickness
    z0, z1 = max(int(cz - rz), 0), min(int(cz + rz) + 2, pet.shape[0])
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 2, n)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 2, n)
    if z0 >= z1 or y0 >= y1 or x0 >= x1:
        return
    zz, yy, xx = np.ogrid[z0:z1, y0:y1, x0:x1]
    inside = ((xx - cx) / max(rx, 0.5)) ** 2 + ((yy - cy) / max(ry, 0.5)) ** 2 + ((zz - cz) / max(rz, 0.5)) ** 2 <= 1
    inside &= labels[z0:z1, y0:y1, x0:x1] != AIR
    region = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
    pet[region][inside] = suv
    ct[region][inside] = {"lung": 35, "liver": 42, "bone": 120, "node": 38, "soft": 40}[site]
    mask[region][inside] = 1


def _study_uid(rng_seed: int, index: int) -> str:
    return str(uuid.UUID(int=(rng_seed * 1_000_003 + index) % (1 << 128) | (1 << 127)))


def write_dataset(out: Path, cases: int, seed: int, layout: str = "tcia", spec: PhantomSpec = PhantomSpec(),
                  negative_fraction: float = 0.3, progress: bool | None = None) -> list[dict]:
    """Write ``cases`` phantoms in the TCIA NIfTI layout or the grand-challenge .mha layout."""
    from tqdm.auto import tqdm

    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    patient = 0
    for index in tqdm(range(cases), desc="phantoms", unit="case", disable=None if progress is None else not progress):
        positive = rng.random() >= negative_fraction
        case_seed = int(rng.integers(1 << 31))
        phantom = make_phantom(case_seed, positive=positive, spec=spec)
        # Some patients have a second study, as in the real data (1014 studies of 900 patients).
        if index > 0 and rng.random() < 0.12:
            patient -= 1
        patient_id = f"PETCT_{seed:03d}{patient:04d}"
        patient += 1
        study = _study_uid(seed, index)
        pet, ct, mask = phantom.images()
        if layout == "tcia":
            folder = out / patient_id / study
            folder.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(pet, str(folder / "SUV.nii.gz"), useCompression=True)
            sitk.WriteImage(ct, str(folder / "CTres.nii.gz"), useCompression=True)
            sitk.WriteImage(mask, str(folder / "SEG.nii.gz"), useCompression=True)
            location = f"./{patient_id}/{study}"
        elif layout == "grand-challenge":
            stem = f"{index:04d}_{patient_id}"
            for sub in ("images/pet", "images/ct", "labels"):
                (out / sub).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(pet, str(out / "images/pet" / f"{stem}_pet-{study[:8]}.mha"), useCompression=True)
            sitk.WriteImage(ct, str(out / "images/ct" / f"{stem}.mha"), useCompression=True)
            sitk.WriteImage(mask, str(out / "labels" / f"{stem}.mha"), useCompression=True)
            location = stem
        else:
            raise ValueError(f"unknown layout {layout!r}")
        rows.append({"Subject ID": patient_id, "Study UID": study, "diagnosis": phantom.diagnosis,
                     "age": int(rng.integers(25, 85)), "sex": str(rng.choice(["M", "F"])),
                     "File Location": location})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "Metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
