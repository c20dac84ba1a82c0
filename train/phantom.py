"""Synthetic whole-body FDG PET/CT studies with lesions, for tests, demos and in-silico experiments.

Each study is drawn from its seed:

- a body: height, frame, fat; arms down, raised above the head or one raised; head turned or straight; the
  field of view from the vertex or from the neck down (to the feet in a fraction of studies, when the spec
  asks for it); a patient table under the body in the CT;
- organs as smooth shapes deformed by random low-frequency fields, with FDG's physiological uptake, the
  hot spots a lesion model must learn to ignore: brain, myocardium (a shell, from background to SUV 15),
  urine in renal pelvis, ureters and bladder (SUV 5-60), patchy bowel, tonsils, salivary glands, vocal
  cords, bone marrow, a textured liver, brown fat in some studies, exercised muscle in some;
- lesions as autoPET has them (none in negative studies): lymph-node chains (neck, axilla, mediastinum,
  retroperitoneum, iliac and groin), lung nodules and primaries, liver and bone metastases, subcutaneous
  nodules, large soft-tissue masses with low uptake and necrotic cores; homogeneous or heterogeneous,
  from 5 mm;
- the imaging: PET at the spec's grid, blurred to 5-7 mm FWHM, noise whose variance grows with the counts,
  so small lesions lose contrast to partial volume while the mask keeps their true extent; CT with HU
  texture and noise; in some studies the PET shifted against the CT around the diaphragm (breathing).

Coordinates inside are in mm, LPS-like: x towards the patient's left, y posterior, u the height above the
soles; array axes are (z, y, x) with z growing towards the head.
"""

from __future__ import annotations

import csv
import itertools
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.special import ndtri

TISSUES = ("air", "fat", "muscle", "soft", "lung", "gas", "cortex", "marrow", "liver", "spleen", "kidney", "urine",
           "bladder", "myocardium", "blood", "grey_matter", "white_matter", "tonsil", "salivary", "vocal_cords",
           "bowel", "stomach", "brown_fat", "table")
(AIR, FAT, MUSCLE, SOFT, LUNG, GAS, CORTEX, MARROW, LIVER, SPLEEN, KIDNEY, URINE, BLADDER, MYOCARDIUM, BLOOD,
 GREY_MATTER, WHITE_MATTER, TONSIL, SALIVARY, VOCAL_CORDS, BOWEL, STOMACH, BROWN_FAT, TABLE) = range(len(TISSUES))

# CT: mean HU and the SD of its smooth texture, per tissue (the mean is jittered per study).
HU = {AIR: (-1000, 0), FAT: (-100, 12), MUSCLE: (50, 8), SOFT: (35, 10), LUNG: (-840, 45), GAS: (-990, 5),
      CORTEX: (800, 120), MARROW: (230, 40), LIVER: (60, 6), SPLEEN: (50, 5), KIDNEY: (35, 6), URINE: (8, 3),
      BLADDER: (8, 3), MYOCARDIUM: (45, 5), BLOOD: (42, 5), GREY_MATTER: (38, 3), WHITE_MATTER: (28, 3),
      TONSIL: (45, 6), SALIVARY: (30, 8), VOCAL_CORDS: (45, 8), BOWEL: (25, 25), STOMACH: (25, 15),
      BROWN_FAT: (-65, 15), TABLE: (-350, 60)}
# Physiological FDG uptake: the range a study's mean SUV is drawn from, per tissue. Urine in the renal
# pelvis and ureters follows the bladder; the myocardium is drawn from a mixture (fasting, diet), see
# MYOCARDIUM_SUV; white matter is a fraction of grey.
SUV_RANGE = {AIR: (0.0, 0.0), FAT: (0.2, 0.5), MUSCLE: (0.5, 1.0), SOFT: (0.6, 1.2), LUNG: (0.3, 0.7),
             GAS: (0.0, 0.0), CORTEX: (0.3, 0.7), MARROW: (0.8, 2.0), LIVER: (1.5, 3.0), SPLEEN: (1.2, 2.6),
             KIDNEY: (2.0, 5.0), URINE: (1.0, 60.0), BLADDER: (5.0, 60.0), MYOCARDIUM: (0.8, 15.0),
             BLOOD: (1.2, 2.4), GREY_MATTER: (5.0, 13.0), WHITE_MATTER: (1.5, 6.0), TONSIL: (2.0, 7.0),
             SALIVARY: (1.3, 4.0), VOCAL_CORDS: (1.0, 5.0), BOWEL: (1.0, 2.5), STOMACH: (1.2, 3.5),
             BROWN_FAT: (2.0, 15.0), TABLE: (0.0, 0.0)}
MYOCARDIUM_SUV = ((0.3, (0.8, 2.5)), (0.4, (2.5, 8.0)), (0.3, (8.0, 15.0)))  # (probability, range)
DIAGNOSES = ("MELANOMA", "LUNG_CANCER", "LYMPHOMA")
ARMS = ("down", "up", "one up")
ARMS_P = (0.35, 0.5, 0.15)
# Lesion kinds per diagnosis, with weights (chains of nodes count as one draw; see _draw_lesions).
LESION_WEIGHTS = {
    "MELANOMA": {"nodes": 4, "lung": 2, "liver": 2, "bone": 1.5, "subcutaneous": 2, "mass": 1},
    "LUNG_CANCER": {"nodes": 4, "lung": 2, "lung_primary": 3, "liver": 1, "bone": 1.5, "mass": 0.3},
    "LYMPHOMA": {"nodes": 8, "bulky": 1.5, "liver": 0.5, "spleen": 0.7, "bone": 1, "lung": 0.3, "mass": 0.3},
}
NODE_STATIONS = ("cervical", "axillary", "mediastinal", "hilar", "retroperitoneal", "iliac", "inguinal")


@dataclass(frozen=True)
class PhantomSpec:
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


@dataclass
class Lesion:
    kind: str
    centre: tuple[float, float, float]  # x, y, u in mm
    diameter_mm: float  # of the sphere of the same nominal volume
    suv: float  # uptake of the viable tumour before blur
    necrotic: bool
    heterogeneous: bool
    nominal_ml: float  # of the undeformed ellipsoid
    volume_ml: float = 0.0  # of its voxels on the grid (voxel centres inside), before other lesions overlap it
    clipped: bool = False  # parts of it fell outside the organ or body it lives in, or outside the grid
    voxel: tuple[int, int, int] = (0, 0, 0)  # (z, y, x) index of the voxel nearest its centre


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


# ---------------------------------------------------------------------------------------------------------
# Geometry: a grid in mm, smooth random fields, and the shapes painted on it.

class _Waves:
    """A smooth random field of unit variance: a few plane waves of about one wavelength, in mm."""

    def __init__(self, rng: np.random.Generator, wavelength: float, count: int = 4):
        direction = rng.normal(size=(count, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        k = 2 * np.pi / (wavelength * rng.uniform(0.75, 1.3, count))
        self.k = (direction * k[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, count).astype(np.float32)
        self.scale = np.float32(np.sqrt(2.0 / count))

    def __call__(self, x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
        # cos(a + b) with a over the (y, x) plane and b along u: two plane-sized and two volume-sized passes.
        total = None
        for (kx, ky, ku), phase in zip(self.k, self.phase, strict=True):
            plane = kx * x + ky * y + phase
            line = ku * u
            wave = np.cos(plane) * np.cos(line) - np.sin(plane) * np.sin(line)
            total = wave if total is None else total + wave
        return total * self.scale


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Columns = the local axes in world coordinates: yaw about u, pitch about x, roll about y (radians)."""
    cz, sz, cx, sx, cy, sy = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def _axis_rotation(direction: Sequence[float]) -> np.ndarray:
    """A rotation whose first local axis points along ``direction``."""
    a = np.asarray(direction, dtype=float)
    a /= np.linalg.norm(a)
    helper = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b = np.cross(helper, a)
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)], axis=1)


class _Canvas:
    """The study's grid in mm and its tissue labels; shapes are evaluated only inside their bounding box."""

    def __init__(self, size: int, spacing: float, slices: int, thickness: float, u_top: float):
        self.x = ((np.arange(size) - (size - 1) / 2) * spacing).astype(np.float32)
        self.y = self.x.copy()
        self.u = (u_top - (slices - 0.5 - np.arange(slices)) * thickness).astype(np.float32)
        self.spacing = (spacing, spacing, thickness)
        self.labels = np.zeros((slices, size, size), dtype=np.uint8)
        self.extent: dict[int, list[int]] = {}  # tissue -> z0, z1, y0, y1, x0, x1 of the boxes painted with it

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) of the voxels whose centres lie in [lo, hi] (x, y, u in mm); None if empty."""
        out = []
        for coords, a, b in ((self.u, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            i0, i1 = int(np.searchsorted(coords, a)), int(np.searchsorted(coords, b, side="right"))
            if i0 >= i1:
                return None
            out.append(slice(i0, i1))
        return out[0], out[1], out[2]

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (1, 1, X), y (1, Y, 1), u (Z, 1, 1) of a box, for broadcasting."""
        return self.x[box[2]][None, None, :], self.y[box[1]][None, :, None], self.u[box[0]][:, None, None]

    def paint(self, box: tuple[slice, slice, slice], inside: np.ndarray, tissue: int,
              over: Sequence[int] | None = None) -> None:
        """Label ``inside`` as ``tissue``, only where the current label is one of ``over`` (if given)."""
        view = self.labels[box]
        if over is not None:
            allowed = np.zeros(256, dtype=bool)
            allowed[list(over)] = True
            inside = inside & allowed[view]
        view[inside] = tissue
        bounds = [box[0].start, box[0].stop, box[1].start, box[1].stop, box[2].start, box[2].stop]
        known = self.extent.setdefault(tissue, bounds)
        for k in range(6):
            known[k] = min(known[k], bounds[k]) if k % 2 == 0 else max(known[k], bounds[k])

    def region(self, tissue: int) -> tuple[slice, slice, slice] | None:
        """The box holding every voxel painted with ``tissue``."""
        if tissue not in self.extent:
            return None
        z0, z1, y0, y1, x0, x1 = self.extent[tissue]
        return slice(z0, z1), slice(y0, y1), slice(x0, x1)


@dataclass
class _Blob:
    """A deformed ellipsoid: centre and semi-axes in mm, rotation (columns = local axes), a wobble field."""

    centre: Sequence[float]
    semi: Sequence[float]
    rotation: np.ndarray | None = None
    wobble: _Waves | None = None
    amplitude: float = 0.0

    def field(self, canvas: _Canvas, pad: float = 0.0) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """(box, q): q <= 1 inside, q about 1 + distance / radius outside; the box is padded by ``pad`` mm."""
        semi = np.asarray(self.semi, dtype=float)
        rot = np.eye(3) if self.rotation is None else self.rotation
        half = np.sqrt(((rot * semi[None, :]) ** 2).sum(axis=1)) * (1 + 1.5 * self.amplitude) + pad
        c = np.asarray(self.centre, dtype=float)
        box = canvas.box(c - half, c + half)
        if box is None:
            return None
        x, y, u = canvas.coords(box)
        dx, dy, du = x - np.float32(c[0]), y - np.float32(c[1]), u - np.float32(c[2])
        m = (rot / semi[None, :] ** 2) @ rot.T  # q^2 = d' M d
        m = m.astype(np.float32)
        plane = m[0, 0] * dx * dx + m[1, 1] * dy * dy + 2 * m[0, 1] * dx * dy
        q2 = plane + du * (2 * m[0, 2] * dx + 2 * m[1, 2] * dy) + m[2, 2] * du * du
        q = np.sqrt(np.maximum(q2, 0, out=q2), out=q2)
        if self.wobble is not None and self.amplitude > 0:
            q /= 1 + np.float32(self.amplitude) * self.wobble(dx, dy, du)
        return box, q

    def paint(self, canvas: _Canvas, tissue: int, over: Sequence[int] | None = None, cut: float = 1.0,
              where: Callable | None = None) -> None:
        found = self.field(canvas)
        if found is not None:
            box, q = found
            inside = q <= cut
            if where is not None:
                inside &= where(*canvas.coords(box))
            canvas.paint(box, inside, tissue, over)


def _segments(canvas: _Canvas, points: np.ndarray, pad: float):
    """Per segment of a polyline: (box, distance to the segment in mm, position 0-1 along it, segment index)."""
    points = np.asarray(points, dtype=float)
    for index, (a, b) in enumerate(itertools.pairwise(points)):
        box = canvas.box(np.minimum(a, b) - pad, np.maximum(a, b) + pad)
        if box is None:
            continue
        x, y, u = canvas.coords(box)
        d = (b - a).astype(np.float32)
        length2 = np.float32(max(float(d @ d), 1e-6))
        px, py, pu = x - np.float32(a[0]), y - np.float32(a[1]), u - np.float32(a[2])
        t = (px * d[0] + py * d[1]) + pu * d[2]
        t /= length2
        np.clip(t, 0, 1, out=t)
        dist2 = (px * px + py * py) + pu * pu - t * t * length2
        dist = np.sqrt(np.maximum(dist2, 0, out=dist2), out=dist2)
        yield box, dist, t, index


def _paint_tube(canvas: _Canvas, points: Sequence, layers: Sequence[tuple]) -> None:
    """A layered tube along a polyline. ``layers``: (radius per point or one radius, tissue, over), outer first."""
    points = np.asarray(points, dtype=float)
    radii = [np.broadcast_to(np.asarray(r, dtype=float), (len(points),)) for r, _, _ in layers]
    for box, dist, t, i in _segments(canvas, points, float(max(r.max() for r in radii))):
        for radius, (_, tissue, over) in zip(radii, layers, strict=True):
            ra, rb = np.float32(radius[i]), np.float32(radius[i + 1])
            canvas.paint(box, dist <= ra + t * (rb - ra), tissue, over)


# ---------------------------------------------------------------------------------------------------------
# The body: per-study proportions drawn once, then painted on any grid.

def _lerp(t: np.ndarray | float, knots: Sequence[float], values: Sequence[float]) -> np.ndarray:
    return np.interp(t, knots, values)


# Trunk and neck along the body's height t = u / H: half-width A and half-depth B of the muscle boundary
# (mm for a 1.75 m body), the centre's posterior offset, and where the subcutaneous fat is thick.
T_KNOTS = (0.455, 0.47, 0.49, 0.52, 0.56, 0.60, 0.64, 0.68, 0.72, 0.76, 0.795, 0.815, 0.83, 0.845, 0.87, 0.9)
A_TRUNK = (60, 135, 150, 157, 148, 132, 133, 140, 146, 150, 156, 148, 92, 56, 54, 54)
B_TRUNK = (40, 82, 92, 98, 92, 88, 92, 100, 106, 106, 100, 88, 66, 55, 55, 56)
# How far the back stays off the table (mm): lumbar lordosis, the neck.
GAP_TRUNK = (0, 0, 0, 0, 4, 16, 10, 3, 0, 0, 0, 4, 14, 26, 30, 30)
FAT_TRUNK = (0.4, 0.8, 1.0, 1.0, 1.05, 1.1, 1.0, 0.85, 0.8, 0.75, 0.65, 0.5, 0.35, 0.3, 0.3, 0.3)
# Where the spine's body sits, as a fraction of B behind the centre; its half-width; vertebra height.
SPINE_K = (0.55, 0.55, 0.5, 0.45, 0.38, 0.35, 0.42, 0.5, 0.55, 0.55, 0.5, 0.45, 0.35, 0.28, 0.22, 0.2)
SPINE_A = (0, 0, 30, 28, 24, 24, 22, 20, 19, 18, 17, 16, 14, 13, 13, 12)
SPINE_PITCH = (40, 40, 40, 38, 36, 34, 30, 27, 25, 24, 23, 22, 19, 17, 17, 17)
# Cavity (thorax and abdomen) as a fraction of the muscle boundary, tapered at the pelvic floor and apex.
CAVITY_TAPER = ((0.47, 0.49, 0.505, 0.79, 0.815, 0.83, 0.836), (0.0, 0.7, 1.0, 1.0, 0.8, 0.35, 0.0))
# Legs: half-width of the muscle (mm for 1.75 m), from the crotch to the ankle; the feet are blobs.
LEG_KNOTS = (0.03, 0.045, 0.08, 0.14, 0.21, 0.25, 0.285, 0.31, 0.38, 0.45, 0.5, 0.52)
LEG_R = (24, 27, 30, 40, 52, 48, 45, 50, 64, 76, 80, 40)
LEG_FAT = (0.2, 0.25, 0.3, 0.4, 0.5, 0.45, 0.4, 0.55, 0.7, 0.85, 0.9, 0.9)
# Arms hanging by the trunk: half-width, half-depth (mm) from the fingertips to the shoulder.
ARM_KNOTS = (0.38, 0.40, 0.44, 0.475, 0.49, 0.56, 0.63, 0.70, 0.77, 0.80, 0.815, 0.825)
ARM_A = (8, 13, 14, 14, 20, 30, 30, 36, 42, 46, 35, 10)
ARM_B = (20, 35, 42, 40, 24, 33, 32, 38, 42, 46, 35, 10)


class _Body:
    """Proportions, posture and physiology of one study, drawn from its own generator (grid-independent)."""

    def __init__(self, rng: np.random.Generator, feet_fraction: float):
        self.male = bool(rng.random() < 0.55)
        self.age = int(rng.integers(25, 86))
        self.height = float(np.clip(rng.normal(1780 if self.male else 1650, 70), 1500, 1980))
        self.s = self.height / 1750
        self.frame = rng.uniform(0.88, 1.1) * (1.03 if self.male else 0.97)
        self.depth = rng.uniform(0.88, 1.12)
        self.fat = float(np.clip(rng.lognormal(math.log(16), 0.55), 4, 60))
        self.belly = self.fat * rng.uniform(0.0, 1.4)
        self.arms = str(rng.choice(ARMS, p=ARMS_P))
        self.raised_side = int(rng.choice([-1, 1]))  # for "one up"
        self.head_yaw = math.radians(rng.uniform(8, 35) * rng.choice([-1, 1])) if rng.random() < 0.35 else 0.0
        self.head_scale = rng.uniform(0.93, 1.07)
        self.from_vertex = bool(rng.random() < 0.7)
        self.to_feet = bool(rng.random() < feet_fraction)
        self.from_vertex = self.from_vertex or self.to_feet  # whole-body studies start at the skull
        self.fov_top = (self.height + rng.uniform(5, 60)) if self.from_vertex \
            else self.height * rng.uniform(0.865, 0.93)
        self.offset = (rng.uniform(-15, 15), rng.uniform(-20, 15))
        self.dome_right = self.height * rng.uniform(0.705, 0.73)
        self.dome_left = self.dome_right - rng.uniform(5, 25)
        self.gap_arm = rng.uniform(2, 30)
        self.table_thickness = rng.uniform(15, 45)
        self.female_hips = 1.0 if self.male else 1.06
        self.table_y = self.offset[1] + 110 * self.s * self.depth + 0.8 * self.fat  # the back rests on it

    # Profiles along u (mm): muscle boundary, fat, cavity.
    def t(self, u: np.ndarray | float) -> np.ndarray:
        return np.asarray(u) / self.height

    def trunk(self, u: np.ndarray | float) -> tuple[np.ndarray, ...]:
        """cx, cy, A, B of the muscle boundary, the subcutaneous fat's thickness and the belly's (mm)."""
        t = self.t(u)
        s = self.s
        hips = 1 + (self.female_hips - 1) * np.exp(-(((t - 0.51) / 0.03) ** 2))
        shoulders = 1 - 0.07 * (not self.male) * np.exp(-(((t - 0.79) / 0.025) ** 2))
        a = _lerp(t, T_KNOTS, A_TRUNK) * s * self.frame * hips * shoulders
        b = _lerp(t, T_KNOTS, B_TRUNK) * s * self.depth
        fat = _lerp(t, T_KNOTS, FAT_TRUNK) * self.fat
        belly = self.belly * np.exp(-(((t - 0.585) / 0.045) ** 2))
        cy = self.table_y - _lerp(t, T_KNOTS, GAP_TRUNK) * s - (b + fat + 0.5 * belly) - 1.0
        cx = np.full_like(a, self.offset[0])
        return cx, cy, a, b, fat, belly

    def cavity(self, u: np.ndarray | float) -> tuple[np.ndarray, ...]:
        cx, cy, a, b, _, _ = self.trunk(u)
        taper = _lerp(self.t(u), *CAVITY_TAPER)
        return cx, cy - 0.12 * b, a * 0.84 * taper, b * 0.72 * taper

    def spine(self, u: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """y of the vertebral bodies' centre and their half-width."""
        _, cy, _, b, _, _ = self.trunk(u)
        t = self.t(u)
        return cy + _lerp(t, T_KNOTS, SPINE_K) * b, _lerp(t, T_KNOTS, SPINE_A) * self.s

    def diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height u of the diaphragm's surface over (x, y): two domes, lower behind (the posterior recesses)."""
        u_mid = self.dome_right - 40 * self.s
        _, yc, ac, bc = (float(v) for v in self.cavity(u_mid))
        side = np.where(x < self.offset[0], -1.0, 1.0)
        dome = np.where(side < 0, self.dome_right, self.dome_left)
        xn = (x - self.offset[0] - side * 0.5 * ac) / (0.6 * ac)
        yn = (y - yc) / bc
        return dome - 70 * self.s * xn * xn - 25 * self.s * yn * yn - 35 * self.s * yn

    def leg(self, u: np.ndarray | float) -> tuple[np.ndarray, ...]:
        """x of the right leg's centre (the left mirrors it), y, half-width of the muscle, fat."""
        t = self.t(u)
        s = self.s
        r = _lerp(t, LEG_KNOTS, LEG_R) * s * (0.85 + 0.15 * self.frame) * (1 + 0.004 * (self.fat - 16))
        fat = _lerp(t, LEG_KNOTS, LEG_FAT) * self.fat
        hip_a = float(self.trunk(0.49 * self.height)[2])
        x = -_lerp(t, (0.0, 0.045, 0.285, 0.5), (95 * s, 85 * s, 72 * s, 0.52 * hip_a))
        y = self.table_y - 3 - (r + fat) * 1.05
        return x + self.offset[0], y, r, fat

    def arm_down(self, u: np.ndarray | float, side: int) -> tuple[np.ndarray, ...]:
        """Centre x, y, half-width, half-depth of the muscle and the fat, of an arm hanging at ``side``."""
        t = self.t(u)
        s = self.s
        a = _lerp(t, ARM_KNOTS, ARM_A) * s * (0.85 + 0.15 * self.frame)
        b = _lerp(t, ARM_KNOTS, ARM_B) * s * (0.85 + 0.15 * self.frame)
        fat = 0.6 * self.fat * (t > 0.49) + 0.15 * self.fat * (t <= 0.49)
        _, cy, ta, tb, tfat, _ = self.trunk(np.maximum(u, 0.47 * self.height))
        lx, _, lr, lfat = self.leg(u)
        beside_trunk = ta + tfat
        beside_leg = np.abs(lx - self.offset[0]) + lr + lfat
        reach = np.where(t >= 0.47, beside_trunk, np.maximum(beside_trunk * (t > 0.45), beside_leg))
        x = self.offset[0] + side * (reach + self.gap_arm + a + fat)
        y = cy + 0.1 * tb
        return x, y, a, b, fat


# ---------------------------------------------------------------------------------------------------------
# Painting the anatomy.

def _paint_body(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> float:
    """Paint every tissue, the table under the body too; returns the bladder's volume (ml)."""
    s, h = body.s, body.height
    table = canvas.box((-230, body.table_y, -1e9), (230, body.table_y + body.table_thickness, 1e9))
    if table is not None:
        canvas.paint(table, np.ones(canvas.labels[table].shape, dtype=bool), TABLE)
    _paint_trunk(body, canvas, rng)
    _paint_legs(body, canvas)
    _paint_head(body, canvas, rng)
    _paint_arms(body, canvas, rng)
    _paint_spine_and_bones(body, canvas)
    _paint_thorax(body, canvas, rng)
    bladder_ml = _paint_abdomen(body, canvas, rng)
    if body.to_feet:
        for side in (-1, 1):
            x, y, _, _ = (float(v) for v in body.leg(0.04 * h))
            x = body.offset[0] + side * abs(x - body.offset[0])
            _Blob((x, y - 55 * s, 40 * s), (38 * s, 110 * s, 38 * s)).paint(canvas, SOFT, over=(AIR, FAT))
            _Blob((x, y - 10 * s, 35 * s), (22 * s, 40 * s, 25 * s)).paint(canvas, MARROW, over=(SOFT,))
    return bladder_ml


def _trunk_box(body: _Body, canvas: _Canvas, u_lo: float, u_hi: float, grow: float = 0.0):
    u = np.linspace(u_lo, u_hi, 64)
    cx, cy, a, b, fat, belly = body.trunk(u)
    lo = (float(np.min(cx - a - fat)) - grow, float(np.min(cy - b - fat - belly)) - grow, u_lo)
    hi = (float(np.max(cx + a + fat)) + grow, float(np.max(cy + b + fat)) + grow, u_hi)
    return canvas.box(lo, hi)


def _paint_trunk(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> None:
    h, s = body.height, body.s
    box = _trunk_box(body, canvas, 0.455 * h, 0.9 * h, grow=12)
    if box is None:
        return
    x, y, u = canvas.coords(box)
    uu = u[:, 0, 0]
    cx, cy, a, b, fat, belly = (v[:, None, None].astype(np.float32) for v in body.trunk(uu))
    wobble = _Waves(rng, 260 * s, 4)
    bump = 1 + np.float32(0.035) * wobble(x, y, u)  # the outline's irregularity, shared by all layers

    def inside(a_, b_, cy_):
        q = ((x - cx) / a_) ** 2 + ((y - cy_) / b_) ** 2
        return q <= bump * bump

    outer = inside(a + fat, b + fat + belly, cy - 0.5 * belly)  # the belly grows forwards
    canvas.paint(box, outer, FAT)
    canvas.paint(box, inside(a, b, cy), MUSCLE)
    # Cavity: thorax above the diaphragm (mediastinal soft tissue; lungs painted into it), abdomen below.
    ccx, ccy, ca, cb = (v[:, None, None].astype(np.float32) for v in body.cavity(uu))
    ca = np.maximum(ca, 1e-3)
    cb = np.maximum(cb, 1e-3)
    q_cavity = ((x - ccx) / ca) ** 2 + ((y - ccy) / cb) ** 2
    cavity = q_cavity <= bump * bump
    above = u > body.diaphragm(x, y).astype(np.float32)
    canvas.paint(box, cavity & above, SOFT)
    canvas.paint(box, cavity & ~above, FAT)
    # Ribs: bands in the chest wall just outside the cavity, sloping down towards the front.
    t = uu / h
    thorax = ((t > 0.655) & (t < 0.81))[:, None, None]
    wall = (q_cavity > bump * bump) & (q_cavity < (bump * (1 + 14 * s / np.minimum(ca, cb))) ** 2)
    front = -(y - ccy) / cb
    lateral = np.abs(x - ccx) / ca
    phase = (u + 45 * s * front + 30 * s * lateral) / np.float32(26 * s)
    frac = phase - np.floor(phase)
    ribs = thorax & wall & (frac < 0.38) & ~((np.abs(x - ccx) < 28 * s) & (front > 0.5))
    canvas.paint(box, ribs, CORTEX, over=(MUSCLE, FAT))
    canvas.paint(box, ribs & (frac > 0.1) & (frac < 0.28), MARROW, over=(CORTEX,))


def _paint_legs(body: _Body, canvas: _Canvas) -> None:
    h, s = body.height, body.s
    u_top = 0.52 * h
    u_bottom = 0.03 * h
    for side in (-1, 1):
        uu = np.linspace(u_bottom, u_top, 48)
        x, y, r, fat = body.leg(uu)
        x = body.offset[0] + side * -(x - body.offset[0])
        lo = (float(np.min(x - r - fat)) - 5, float(np.min(y - r - fat)) - 5, u_bottom)
        hi = (float(np.max(x + r + fat)) + 5, float(np.max(y + r + fat)) + 5, u_top)
        box = canvas.box(lo, hi)
        if box is None:
            continue
        x, y, u = canvas.coords(box)
        lx, ly, lr, lfat = (np.asarray(v, dtype=np.float32)[:, None, None] for v in body.leg(u[:, 0, 0]))
        lx = np.float32(body.offset[0]) + side * -(lx - np.float32(body.offset[0]))
        q = ((x - lx) / (lr + lfat)) ** 2 + ((y - ly) / ((lr + lfat) * 1.05)) ** 2
        canvas.paint(box, q <= 1, FAT, over=(AIR,))
        q = ((x - lx) / lr) ** 2 + ((y - ly) / (lr * 1.05)) ** 2
        canvas.paint(box, q <= 1, MUSCLE, over=(AIR, FAT))
        # Femur from the hip to the knee, tibia and fibula to the ankle.
        knee = [float(v) for v in body.leg(0.285 * h)[:2]]
        ankle = [float(v) for v in body.leg(0.05 * h)[:2]]
        hip_x = body.offset[0] + side * 0.47 * float(body.trunk(0.5 * h)[2])
        knee_x = body.offset[0] + side * -(knee[0] - body.offset[0])
        ankle_x = body.offset[0] + side * -(ankle[0] - body.offset[0])
        cy_hip = float(body.trunk(0.5 * h)[1])
        trochanter = (body.offset[0] + side * 0.72 * float(body.trunk(0.5 * h)[2]), cy_hip, 0.495 * h)
        femur = np.array([(hip_x, cy_hip, 0.505 * h), trochanter, (knee_x, knee[1], 0.3 * h)])
        _paint_tube(canvas, femur, ((np.array([14, 15, 14]) * s, CORTEX, None), (np.array([8, 9, 9]) * s,
                                                                                      MARROW, None)))
        _Blob((knee_x, knee[1], 0.285 * h), (36 * s, 30 * s, 24 * s)).paint(canvas, CORTEX)
        _Blob((knee_x, knee[1], 0.285 * h), (30 * s, 24 * s, 19 * s)).paint(canvas, MARROW)
        tibia = np.array([(knee_x, knee[1] - 5 * s, 0.28 * h), (ankle_x, ankle[1] - 5 * s, 0.05 * h)])
        _paint_tube(canvas, tibia, ((np.array([15, 11]) * s, CORTEX, None), (np.array([9, 6]) * s, MARROW, None)))
        fibula = tibia + np.array([side * 24 * s, 12 * s, -8 * s])
        _paint_tube(canvas, fibula, ((7 * s, CORTEX, None), (3 * s, MARROW, None)))
        _Blob((hip_x, cy_hip, 0.505 * h), (24 * s, 24 * s, 24 * s)).paint(canvas, CORTEX)
        _Blob((hip_x, cy_hip, 0.505 * h), (18 * s, 18 * s, 18 * s)).paint(canvas, MARROW)


def _paint_arms(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> None:
    h, s = body.height, body.s
    for side in (-1, 1):
        raised = body.arms == "up" or (body.arms == "one up" and side == body.raised_side)
        if raised:
            _paint_raised_arm(body, canvas, side, rng)
            continue
        u_lo, u_hi = 0.38 * h, 0.825 * h
        uu = np.linspace(u_lo, u_hi, 64)
        x, y, a, b, fat = body.arm_down(uu, side)
        lo = (float(np.min(x - a - fat)) - 5, float(np.min(y - b - fat)) - 5, u_lo)
        hi = (float(np.max(x + a + fat)) + 5, float(np.max(y + b + fat)) + 5, u_hi)
        box = canvas.box(lo, hi)
        if box is None:
            continue
        x, y, u = canvas.coords(box)
        ax, ay, aa, ab, afat = (np.asarray(v, dtype=np.float32)[:, None, None]
                                for v in body.arm_down(u[:, 0, 0], side))
        q = ((x - ax) / (aa + afat)) ** 2 + ((y - ay) / (ab + afat)) ** 2
        canvas.paint(box, q <= 1, FAT, over=(AIR,))
        q = ((x - ax) / aa) ** 2 + ((y - ay) / ab) ** 2
        canvas.paint(box, q <= 1, MUSCLE, over=(AIR, FAT))
        # Humerus, then radius and ulna as one bone.
        x_arm, y_arm, *_ = body.arm_down(np.array([0.805, 0.64, 0.625, 0.49, 0.8]) * h, side)
        at = [(float(x_), float(y_), t * h) for x_, y_, t in zip(x_arm, y_arm, (0.805, 0.64, 0.625, 0.49, 0.8),
                                                                  strict=True)]
        _paint_tube(canvas, at[0:2], ((12 * s, CORTEX, None), (7 * s, MARROW, None)))
        _paint_tube(canvas, at[2:4], ((10 * s, CORTEX, None), (5 * s, MARROW, None)))
        _Blob(at[4], (22 * s, 22 * s, 22 * s)).paint(canvas, CORTEX, over=(MUSCLE, FAT))
        _Blob(at[4], (17 * s, 17 * s, 17 * s)).paint(canvas, MARROW, over=(CORTEX,))


def _paint_raised_arm(body: _Body, canvas: _Canvas, side: int, rng: np.random.Generator) -> None:
    h, s = body.height, body.s
    cx, cy, a, _, _, _ = (float(v) for v in body.trunk(0.8 * h))
    shoulder = (cx + side * (a - 30 * s), cy + 5 * s, 0.8 * h)
    elbow = (cx + side * rng.uniform(115, 170) * s, cy + rng.uniform(-20, 30) * s, h + rng.uniform(-50, 50) * s)
    wrist = (cx + side * rng.uniform(15, 90) * s, cy + rng.uniform(-70, 10) * s, elbow[2] + rng.uniform(150, 230) * s)
    hand = (wrist[0] - side * 40 * s, wrist[1] - 20 * s, wrist[2] + 70 * s)
    points = np.array([shoulder, elbow, wrist, hand])
    muscle = np.array([46, 34, 24, 18]) * s * (0.85 + 0.15 * body.frame)
    fat = muscle + 0.6 * body.fat * np.array([1, 1, 0.5, 0.3])
    _paint_tube(canvas, points, ((fat, FAT, (AIR,)), (muscle, MUSCLE, (AIR, FAT))))
    _paint_tube(canvas, points[:2], ((12 * s, CORTEX, (MUSCLE, FAT)), (7 * s, MARROW, (CORTEX,))))
    _paint_tube(canvas, points[1:3], ((10 * s, CORTEX, (MUSCLE, FAT)), (5 * s, MARROW, (CORTEX,))))
    _Blob(shoulder, (22 * s, 22 * s, 22 * s)).paint(canvas, CORTEX, over=(MUSCLE, FAT))
    _Blob(shoulder, (17 * s, 17 * s, 17 * s)).paint(canvas, MARROW, over=(CORTEX,))


def _paint_head(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> None:
    """Head and face, turned by the study's yaw about the neck's axis; neck airway and vocal cords."""
    h, s = body.height, body.s
    hs = s * body.head_scale
    _, cy_neck, _, b_neck, _, _ = (float(v) for v in body.trunk(0.87 * h))
    pivot = np.array([body.offset[0], cy_neck])
    u_head = h - 95 * hs
    turn = _rotation(yaw=body.head_yaw)

    def at(dx: float, dy: float, du: float) -> tuple[float, float, float]:
        """A point given relative to the head (mm, before the turn) in world coordinates."""
        x, y = turn[:2, :2] @ np.array([dx, dy - 14 * hs]) + pivot
        return float(x), float(y), u_head + du

    def blob(dx, dy, du, semi, amplitude=0.06, wavelength=120.0):
        return _Blob(at(dx * hs, dy * hs, du * hs), np.asarray(semi) * hs, turn, _Waves(rng, wavelength * hs),
                     amplitude)

    soft_tissue = (FAT, MUSCLE, SOFT)
    blob(0, 0, 0, (76, 96, 100), 0.03).paint(canvas, SOFT, over=(AIR, FAT, MUSCLE))
    blob(0, -48, -78, (54, 50, 60), 0.05).paint(canvas, SOFT, over=(AIR, FAT, MUSCLE))
    skull_base = u_head - 45 * hs
    blob(0, 0, 0, (70, 90, 94), 0.02).paint(canvas, CORTEX, over=(SOFT,), where=lambda x, y, u: u > skull_base)
    brain = blob(0, 0, 6, (63, 83, 84), 0.03)
    found = brain.field(canvas)
    if found is not None:
        box, q = found
        x, y, u = canvas.coords(box)
        above = u > u_head - 40 * hs
        canvas.paint(box, (q <= 1) & above, WHITE_MATTER, over=(CORTEX, SOFT))
        gyri = _Waves(rng, 40 * hs, 6)(x, y, u)
        ribbon = (q <= 1) & above & ((q > 0.84) | ((np.abs(gyri) < 0.4) & (q > 0.55)))
        canvas.paint(box, ribbon, GREY_MATTER, over=(WHITE_MATTER,))
    blob(0, 38, -50, (46, 30, 24), 0.05).paint(canvas, GREY_MATTER, over=(CORTEX, SOFT, WHITE_MATTER))
    for side in (-1, 1):
        blob(side * 22, -18, 6, (10, 18, 13), 0.05).paint(canvas, GREY_MATTER, over=(WHITE_MATTER,))
        blob(side * 10, 2, 4, (9, 13, 10), 0.05).paint(canvas, GREY_MATTER, over=(WHITE_MATTER,))
        blob(side * 46, -6, -62, (12, 20, 26), 0.1, 40).paint(canvas, SALIVARY, over=soft_tissue)
        blob(side * 34, -62, -128, (12, 13, 10), 0.1, 30).paint(canvas, SALIVARY, over=soft_tissue)
        blob(side * 14, -38, -104, (9, 10, 13), 0.1, 30).paint(canvas, TONSIL, over=soft_tissue)
        mandible = [at(side * 48 * hs, -22 * hs, -95 * hs), at(side * 44 * hs, -62 * hs, -128 * hs),
                    at(0, -92 * hs, -136 * hs)]
        _paint_tube(canvas, mandible, ((8 * hs, CORTEX, soft_tissue), (4 * hs, MARROW, (CORTEX,))))
    blob(0, -84, -45, (13, 22, 22), 0.1, 40).paint(canvas, GAS, over=(SOFT,))
    pharynx = [at(0, -40 * hs, -55 * hs), at(0, -38 * hs, -110 * hs)]
    # The airway runs on into the neck (not turned): larynx, vocal cords, trachea.
    larynx_y = cy_neck - 0.58 * b_neck
    airway = [pharynx[0], pharynx[1], (body.offset[0], larynx_y, 0.875 * h), (body.offset[0], larynx_y, 0.83 * h)]
    _paint_tube(canvas, airway, ((7 * s, GAS, soft_tissue),))
    u_cords = 0.848 * h
    for side in (-1, 1):
        _Blob((body.offset[0] + side * 6 * s, larynx_y, u_cords), (4 * s, 9 * s, 4 * s)).paint(
            canvas, VOCAL_CORDS, over=(*soft_tissue, GAS))


def _spine_phase(body: _Body, u: np.ndarray) -> np.ndarray:
    """Vertebra count from the sacrum up at height u: its fractional part says body or disc."""
    grid = np.arange(0.44 * body.height, 0.92 * body.height, 1.0)
    pitch = _lerp(grid / body.height, T_KNOTS, SPINE_PITCH) * body.s
    return np.interp(u, grid, np.cumsum(1.0 / pitch))


def _paint_spine_and_bones(body: _Body, canvas: _Canvas) -> None:
    h, s = body.height, body.s
    u_lo, u_hi = 0.545 * h, 0.895 * h
    uu = np.linspace(u_lo, u_hi, 64)
    ys, av = body.spine(uu)
    x0 = body.offset[0]
    box = canvas.box((x0 - 45 * s, float(np.min(ys - av)) - 5, u_lo),
                     (x0 + 45 * s, float(np.max(ys + 2.2 * av)) + 30 * s, u_hi))
    if box is not None:
        x, y, u = canvas.coords(box)
        ys, av = (np.asarray(v, dtype=np.float32)[:, None, None] for v in body.spine(u[:, 0, 0]))
        phase = _spine_phase(body, u[:, 0, 0])
        disc = ((phase - np.floor(phase)) < 0.2)[:, None, None]
        bv = 0.85 * av
        q = ((x - x0) / av) ** 2 + ((y - ys) / bv) ** 2
        over = (MUSCLE, FAT, SOFT)
        canvas.paint(box, (q <= 1) & ~disc, CORTEX, over)
        canvas.paint(box, (q <= 0.75) & ~disc, MARROW, (CORTEX,))
        canvas.paint(box, (q <= 1) & disc, SOFT, over)
        arch_y = ys + bv + 16 * s
        q = ((x - x0) / (0.9 * av)) ** 2 + ((y - arch_y) / (14 * s)) ** 2
        canvas.paint(box, q <= 1, CORTEX, over)
        canvas.paint(box, q <= 0.35, MARROW, (CORTEX,))
        q = ((x - x0) / (0.35 * av)) ** 2 + ((y - (ys + bv + 8 * s)) / (0.35 * av)) ** 2
        canvas.paint(box, q <= 1, SOFT, (CORTEX, MARROW))  # the spinal canal

    def trunk_at(t):
        cx, cy, a, b, _, _ = (float(v) for v in body.trunk(t * h))
        return cx, cy, a, b

    def bone(centre, semi, rotation=None, inner=0.7, over=(MUSCLE, FAT, SOFT)):
        _Blob(centre, semi, rotation).paint(canvas, CORTEX, over=over)
        _Blob(centre, np.asarray(semi) * inner, rotation).paint(canvas, MARROW, over=(CORTEX,))

    cx, cy, a, b = trunk_at(0.53)
    bone((cx, cy + 0.6 * b, 0.53 * h), (42 * s, 16 * s, 50 * s), _rotation(pitch=math.radians(25)), 0.65)
    cx, cy, a, b = trunk_at(0.565)
    for side in (-1, 1):
        bone((cx + side * 0.6 * a, cy + 0.12 * b, 0.565 * h), (9 * s, 62 * s, 48 * s),
             _rotation(yaw=math.radians(-side * 40)), 0.55)
        cx5, cy5, a5, b5 = trunk_at(0.5)
        pubis = [(cx5 + side * 0.45 * a5, cy5 - 0.1 * b5, 0.5 * h), (cx5 + side * 10 * s, cy5 - 0.72 * b5, 0.488 * h)]
        _paint_tube(canvas, pubis, ((10 * s, CORTEX, (MUSCLE, FAT, SOFT)), (6 * s, MARROW, (CORTEX,))))
        ischium = [(cx5 + side * 0.42 * a5, cy5 + 0.15 * b5, 0.5 * h), (cx5 + side * 0.3 * a5, cy5 + 0.45 * b5,
                                                                         0.478 * h)]
        _paint_tube(canvas, ischium, ((12 * s, CORTEX, (MUSCLE, FAT, SOFT)), (7 * s, MARROW, (CORTEX,))))
    cx, cy, a, b = trunk_at(0.77)
    _paint_tube(canvas, [(cx, cy - b + 14 * s, 0.805 * h), (cx, cy - b + 12 * s, 0.715 * h)],
                ((11 * s, CORTEX, (MUSCLE, FAT, SOFT)), (6 * s, MARROW, (CORTEX,))))
    for side in (-1, 1):
        cx8, cy8, a8, b8 = trunk_at(0.81)
        clavicle = [(cx8 + side * 20 * s, cy8 - b8 + 22 * s, 0.812 * h), (cx8 + side * 0.86 * a8, cy8 + 0.05 * b8,
                                                                           0.824 * h)]
        _paint_tube(canvas, clavicle, ((8 * s, CORTEX, (MUSCLE, FAT, SOFT)), (4 * s, MARROW, (CORTEX,))))
        # Scapula: a thin blade on the back of the chest, running forwards as it goes out.
        bone((cx + side * 0.55 * a, cy + 0.78 * b, 0.765 * h), (55 * s, 5 * s, 70 * s),
             _rotation(yaw=math.radians(-side * 28)), 0.5, over=(MUSCLE, FAT))


def _paint_thorax(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> None:
    h, s = body.height, body.s
    apex = 0.83 * h
    u_lo = min(body.dome_right, body.dome_left) - 110 * s
    for side in (-1, 1):
        uu = np.linspace(u_lo, apex, 48)
        ccx, ccy, ca, cb = body.cavity(uu)
        lo = (float(np.min(ccx + side * 0.5 * ca - 0.5 * ca)), float(np.min(ccy - cb)), u_lo)
        hi = (float(np.max(ccx + side * 0.5 * ca + 0.5 * ca)), float(np.max(ccy + cb)), apex)
        box = canvas.box(lo, hi)
        if box is None:
            continue
        x, y, u = canvas.coords(box)
        ccx, ccy, ca, cb = (np.asarray(v, dtype=np.float32)[:, None, None] for v in body.cavity(u[:, 0, 0]))
        round_top = np.sqrt(np.clip((apex - u) / (45 * s), 0, 1)).astype(np.float32)
        la = np.maximum(0.43 * ca * round_top, 1e-3)
        lb = np.maximum(0.95 * cb * round_top, 1e-3)
        q = ((x - (ccx + side * 0.52 * ca)) / la) ** 2 + ((y - (ccy + 0.04 * cb)) / lb) ** 2
        q *= 1 + np.float32(0.08) * _Waves(rng, 150 * s, 3)(x, y, u)
        canvas.paint(box, q <= 1, LUNG, over=(SOFT,))
    # Heart: chambers of blood, the left ventricle's wall a shell of myocardium.
    u_heart = body.dome_left + 48 * s
    ccx, ccy, ca, cb = (float(v) for v in body.cavity(u_heart))
    size = rng.uniform(0.9, 1.15) * s
    centre = np.array([ccx + 0.2 * ca, ccy - 0.2 * cb, u_heart])
    axis = np.array([0.62, -0.42, -0.66]) + rng.normal(0, 0.08, 3)
    rot = _axis_rotation(axis)
    axis = rot[:, 0]
    wobble = _Waves(rng, 90 * s, 3)
    _Blob(centre, np.array([62, 47, 44]) * size, rot, wobble, 0.05).paint(canvas, BLOOD, over=(SOFT, LUNG, FAT))
    lv = centre + 14 * size * axis + rot @ np.array([0, 6, 0]) * size
    wall = rng.uniform(9, 13)
    _Blob(lv, np.array([50, 30, 29]) * size, rot, wobble, 0.04).paint(canvas, MYOCARDIUM, over=(BLOOD, SOFT, LUNG))
    _Blob(lv - 4 * axis, np.array([50 - wall, 30 - wall, 29 - wall]) * size, rot, wobble, 0.04).paint(
        canvas, BLOOD, over=(MYOCARDIUM,))
    # Aorta from the root over the arch down beside the spine to the iliac arteries.
    x0 = body.offset[0]

    def spine_front(t, dx, dy):
        ys, av = body.spine(t * h)
        return x0 + dx * s, float(ys - 0.85 * av) - dy * s, t * h

    _, cy7, _, b7, _, _ = (float(v) for v in body.trunk(0.785 * h))
    aorta = [centre + np.array([-18 * s, 0, 30 * s]), (x0 - 18 * s, cy7 - 0.2 * b7, 0.775 * h),
             (x0, cy7 - 0.05 * b7, 0.79 * h), spine_front(0.77, 22, 14), spine_front(0.7, 20, 12),
             spine_front(0.62, 14, 14), spine_front(0.575, 5, 14)]
    radius = np.array([15, 15, 14, 13, 12, 10, 9]) * s
    _paint_tube(canvas, aorta, ((radius, BLOOD, (SOFT, LUNG, FAT, MUSCLE)),))
    for side in (-1, 1):
        cx5, cy5, a5, b5, _, _ = (float(v) for v in body.trunk(0.5 * h))
        iliac = [spine_front(0.575, 5, 14), spine_front(0.54, side * 40, 20), (cx5 + side * 0.5 * a5, cy5 - 0.3 * b5,
                                                                               0.49 * h)]
        _paint_tube(canvas, iliac, ((np.array([8, 7, 6]) * s, BLOOD, (SOFT, FAT, MUSCLE, BOWEL)),))
    # Trachea and main bronchi.
    _, cy_neck, _, b_neck, _, _ = (float(v) for v in body.trunk(0.87 * h))
    carina = (x0, cy7 + 0.05 * b7, 0.77 * h)
    _paint_tube(canvas, [(x0, cy_neck - 0.58 * b_neck, 0.83 * h), carina], ((9 * s, GAS, (SOFT, LUNG, MUSCLE, FAT)),))
    for side in (-1, 1):
        _paint_tube(canvas, [carina, (x0 + side * 45 * s, cy7 + 0.1 * b7, 0.745 * h)],
                    ((6 * s, GAS, (SOFT, LUNG, BLOOD)),))
    if not body.male:
        cx, cy, a, b, fat, _ = (float(v) for v in body.trunk(0.745 * h))
        size = rng.uniform(0.7, 1.3) * (1 + fat / 40)
        for side in (-1, 1):
            centre = (cx + side * 0.45 * a, cy - b - fat - 8 * size * s, 0.745 * h)
            _Blob(centre, np.array([55, 38, 55]) * s * size).paint(canvas, FAT, over=(AIR,))
            _Blob(centre, np.array([32, 22, 30]) * s * size).paint(canvas, SOFT, over=(FAT,))


def _paint_abdomen(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> float:
    """Bowel, liver, spleen, stomach, kidneys, ureters and bladder; returns the bladder's volume (ml)."""
    h, s = body.height, body.s
    x0 = body.offset[0]
    cavity = (FAT, BOWEL)
    retro = (FAT, BOWEL, MUSCLE, SOFT)

    def cav(t):
        return tuple(float(v) for v in body.cavity(t * h))

    # Small bowel: a folded sheet of gut filling the mid-abdomen's free space, then the colon's frame.
    ccx, ccy, ca, cb = cav(0.56)
    box = canvas.box((x0 - 0.8 * ca, ccy - cb, 0.495 * h), (x0 + 0.8 * ca, ccy + 0.6 * cb, 0.625 * h))
    if box is not None:
        sheet = _Waves(rng, 55 * s, 6)(*canvas.coords(box))
        canvas.paint(box, np.abs(sheet) < 0.38, BOWEL, over=(FAT,))

    def jitter(point, amount=12.0):
        return tuple(np.asarray(point) + rng.normal(0, amount * s, 3) * np.array([1, 1, 0.6]))

    c54, c60, c62, c51 = cav(0.54), cav(0.6), cav(0.62), cav(0.51)
    colon = [(x0 - 0.6 * c54[2], c54[1] - 0.1 * c54[3], 0.535 * h),
             (x0 - 0.66 * c60[2], c60[1], 0.6 * h),
             (x0 - 0.55 * c62[2], c62[1] - 0.3 * c62[3], body.dome_right - 105 * s),
             (x0, c60[1] - 0.62 * c60[3], 0.59 * h),
             (x0 + 0.6 * c62[2], c62[1], body.dome_left - 80 * s),
             (x0 + 0.7 * c54[2], c54[1] + 0.1 * c54[3], 0.555 * h),
             (x0 + 0.35 * c51[2], c51[1] - 0.2 * c51[3], 0.515 * h),
             (x0, c51[1] + 0.45 * c51[3], 0.5 * h),
             (x0, float(body.spine(0.56 * h)[0]) + 10 * s, 0.475 * h)]
    colon = [jitter(p) for p in colon]
    radius = np.array([28, 24, 22, 22, 22, 20, 18, 18, 16]) * s * rng.uniform(0.85, 1.15)
    _paint_tube(canvas, colon, ((radius, BOWEL, cavity),))
    region = canvas.region(BOWEL)
    if region is not None:
        gas = _Waves(rng, 45 * s, 5)(*canvas.coords(region)) > 1.05
        canvas.paint(region, gas, GAS, over=(BOWEL,))

    # Liver under the right dome, with a left lobe; spleen and stomach under the left dome.
    u_liver = body.dome_right - 62 * s
    ccx, ccy, ca, cb = cav(u_liver / h)
    size = rng.uniform(0.88, 1.15)
    liver = _Blob((ccx - 0.3 * ca, ccy + 0.02 * cb, u_liver), np.array([0.78 * ca, 0.9 * cb, 90 * s]) * size,
                  _rotation(yaw=math.radians(rng.uniform(-10, 10))), _Waves(rng, 160 * s, 4), 0.1)
    liver.paint(canvas, LIVER, over=cavity)
    _Blob((ccx + 0.05 * ca, ccy - 0.5 * cb, u_liver + 20 * s), np.array([0.38 * ca, 0.32 * cb, 42 * s]) * size,
          None, _Waves(rng, 120 * s, 3), 0.12).paint(canvas, LIVER, over=cavity)
    u_spleen = body.dome_left - 58 * s
    ccx, ccy, ca, cb = cav(u_spleen / h)
    size = rng.uniform(0.8, 1.25)
    _Blob((ccx + 0.66 * ca, ccy + 0.42 * cb, u_spleen), np.array([30, 55, 55]) * s * size,
          _rotation(yaw=math.radians(35)), _Waves(rng, 90 * s, 3), 0.08).paint(canvas, SPLEEN, over=cavity)
    stomach = (ccx + 0.3 * ca, ccy - 0.3 * cb, body.dome_left - 50 * s)
    _Blob(stomach, np.array([45, 38, 55]) * s * rng.uniform(0.8, 1.2), _rotation(yaw=math.radians(-20)),
          _Waves(rng, 90 * s, 3), 0.1).paint(canvas, STOMACH, over=cavity)
    _Blob(np.add(stomach, (0, -10 * s, 28 * s)), np.array([24, 18, 14]) * s).paint(canvas, GAS, over=(STOMACH,))

    # Kidneys with their urine-filled pelvis, ureters down to the bladder.
    bladder_ml = float(np.exp(rng.uniform(np.log(30), np.log(650))))
    r = (3 * bladder_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    bladder_semi = np.array([1.15, 0.9, 0.95]) * r * rng.uniform(0.9, 1.1, 3)
    bladder_semi /= np.prod(bladder_semi / r) ** (1 / 3)  # keep the drawn volume
    _, cy5, _, b5, _, _ = (float(v) for v in body.trunk(0.5 * h))
    bladder = (x0, cy5 - 0.35 * b5 + 0.3 * (r - 40), 0.488 * h + 0.85 * bladder_semi[2])
    for side, t in ((1, 0.628), (-1, 0.613)):
        ys, _ = body.spine(t * h)
        kidney = np.array([x0 + side * 64 * s, float(ys) - 4 * s, t * h])
        rot = _rotation(yaw=math.radians(side * rng.uniform(20, 40)), roll=math.radians(side * rng.uniform(-18, -8)))
        size = rng.uniform(0.9, 1.1) * s
        _Blob(kidney, np.array([26, 22, 55]) * size, rot, _Waves(rng, 80 * s, 3), 0.06).paint(canvas, KIDNEY, retro)
        pelvis = kidney + rot @ np.array([-side * 13, -6, -4]) * size
        _Blob(pelvis, np.array([10, 8, 18]) * size, rot, _Waves(rng, 30 * s, 3), 0.2).paint(canvas, URINE, (KIDNEY,))
        ys58, _ = body.spine(0.58 * h)
        ureter = [pelvis + np.array([-side * 12 * s, -4 * s, -10 * s]), (x0 + side * 42 * s, float(ys58) - 14 * s,
                                                                           0.58 * h),
                  (x0 + side * 52 * s, float(body.spine(0.54 * h)[0]) - 22 * s, 0.54 * h),
                  (x0 + side * 42 * s, cy5 + 0.15 * b5, 0.51 * h),
                  (x0 + side * 0.35 * bladder_semi[0], bladder[1] + 0.7 * bladder_semi[1], bladder[2] -
                   0.3 * bladder_semi[2])]
        _paint_tube(canvas, [jitter(p, 5.0) for p in ureter], ((rng.uniform(2.5, 4.0) * s, URINE, retro),))
    _Blob(bladder, bladder_semi, None, _Waves(rng, 3 * r, 3), 0.05).paint(canvas, BLADDER, over=retro)
    return bladder_ml


# ---------------------------------------------------------------------------------------------------------
# Physiology: uptake per tissue and its patterns.

def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _draw_uptake(rng: np.random.Generator) -> np.ndarray:
    """Mean SUV per tissue for one study."""
    suv = np.zeros(256, dtype=np.float32)
    for tissue, (lo, hi) in SUV_RANGE.items():
        suv[tissue] = rng.uniform(lo, hi)
    suv[BLADDER] = _log_uniform(rng, *SUV_RANGE[BLADDER])
    suv[URINE] = suv[BLADDER] * rng.uniform(0.3, 1.0)
    suv[WHITE_MATTER] = suv[GREY_MATTER] * rng.uniform(0.3, 0.45)
    probability = [p for p, _ in MYOCARDIUM_SUV]
    lo, hi = MYOCARDIUM_SUV[rng.choice(len(MYOCARDIUM_SUV), p=probability)][1]
    suv[MYOCARDIUM] = rng.uniform(lo, hi)
    if rng.random() < 0.1:  # marrow stimulated (chemotherapy, G-CSF): diffusely hot
        suv[MARROW] = rng.uniform(2.0, 3.5)
    return suv


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                  spacing: tuple[float, float, float]) -> np.ndarray:
    """Gaussian-filtered white noise of unit variance (voxel axes z, y, x)."""
    sigma = [sigma_mm / spacing[2], sigma_mm / spacing[1], sigma_mm / spacing[0]]
    noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=3.0)
    return noise / np.float32(_filtered_sd(sigma))


def _filtered_sd(sigma: Sequence[float]) -> float:
    """SD of unit white noise after scipy's Gaussian filter of these sigmas (voxels; truncate 3)."""
    sd = 1.0
    for s in sigma:
        delta = np.zeros(int(8 * max(s, 0.5)) * 2 + 3)
        delta[len(delta) // 2] = 1.0
        kernel = gaussian_filter1d(delta, s, truncate=3.0) if s > 0 else delta
        sd *= math.sqrt(float((kernel ** 2).sum()))
    return sd


def _modulate(canvas: _Canvas, activity: np.ndarray, tissue: int,
              factor: Callable[[tuple[slice, slice, slice]], np.ndarray | float], floor: float = 0.0) -> None:
    """Scale the uptake of ``tissue`` above ``floor`` by ``factor(box)``, over the box holding the tissue."""
    box = canvas.region(tissue)
    if box is None:
        return
    where = canvas.labels[box] == tissue
    sub = activity[box]
    scale = np.broadcast_to(factor(box), where.shape)[where]
    sub[where] = np.float32(floor) + (sub[where] - np.float32(floor)) * scale


def _depots(body: _Body, kind: str) -> dict[str, list[tuple[tuple, tuple]]]:
    """Where brown fat sits, or the muscle groups exercise lights up: per name, ellipsoids (centre, semi-axes)."""
    h, s, x0 = body.height, body.s, body.offset[0]
    _, cy81, a81, b81, _, _ = (float(v) for v in body.trunk(0.81 * h))
    _, cyn, an, bn, _, _ = (float(v) for v in body.trunk(0.855 * h))
    _, cy77, a77, b77, _, _ = (float(v) for v in body.trunk(0.77 * h))
    both = (-1, 1)
    if kind == "brown fat":
        return {
            "supraclavicular": [((x0 + k * 0.5 * a81, cy81 + 0.1 * b81, 0.822 * h), (38 * s, 30 * s, 28 * s))
                                for k in both],
            "cervical": [((x0 + k * 0.55 * an, cyn + 0.15 * bn, 0.85 * h), (16 * s, 20 * s, 40 * s)) for k in both],
            "axillary": [((x0 + k * (a77 - 22 * s), cy77 + 0.1 * b77, 0.775 * h), (26 * s, 38 * s, 38 * s))
                         for k in both],
            "paravertebral": [((x0 + k * 30 * s, float(body.spine(0.72 * h)[0]) + 5 * s, 0.72 * h),
                               (13 * s, 16 * s, 85 * s)) for k in both],
        }
    legs = []
    for k in both:
        x, y, r, _ = (float(v) for v in body.leg(0.4 * h))
        legs.append(((x0 + k * abs(x - x0), y - 0.2 * r, 0.4 * h), (0.9 * r, 0.9 * r, 0.09 * h)))
    groups = {
        "thighs": legs,
        "shoulders": [((x0 + k * 0.72 * a81, cy81 + 0.2 * b81, 0.81 * h), (55 * s, 45 * s, 45 * s)) for k in both],
        "neck": [((x0 + k * 0.5 * an, cyn, 0.85 * h), (25 * s, 35 * s, 50 * s)) for k in both],
        "back": [((x0 + k * 28 * s, float(body.spine(0.64 * h)[0]) + 45 * s, 0.64 * h), (22 * s, 28 * s, 0.11 * h))
                 for k in both],
    }
    if body.arms == "down":
        groups["forearms"] = [(tuple(float(v) for v in body.arm_down(0.55 * h, k)[:2]) + (0.55 * h,),
                               (40 * s, 45 * s, 0.06 * h)) for k in both]
    return groups


def _paint_brown_fat(body: _Body, canvas: _Canvas, rng: np.random.Generator) -> list[str]:
    """Activated brown fat: symmetric patches in some of its depots."""
    depots = _depots(body, "brown fat")
    names = list(depots)
    likely = {"supraclavicular": 0.85, "cervical": 0.6, "axillary": 0.3, "paravertebral": 0.4}
    chosen = [n for n in names if rng.random() < likely[n]] or ["supraclavicular"]
    pattern = _Waves(rng, 22 * body.s, 8)
    x0 = np.float32(body.offset[0])
    for name in chosen:
        for centre, semi in depots[name]:
            found = _Blob(centre, semi).field(canvas)
            if found is None:
                continue
            box, q = found
            x, y, u = canvas.coords(box)
            patches = (q <= 1) & (pattern(np.abs(x - x0), y, u) > 0.5)
            canvas.paint(box, patches, BROWN_FAT, over=(FAT, MUSCLE, SOFT))
    return chosen


def _exercise(body: _Body, canvas: _Canvas, activity: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Muscle uptake after exercise in one or two muscle groups, fading towards each group's edge."""
    groups = _depots(body, "muscle")
    names = list(groups)
    chosen = [str(n) for n in rng.choice(names, size=int(rng.integers(1, 3)), replace=False)]
    fibres = _Waves(rng, 35 * body.s, 5)
    for name in chosen:
        gain = np.float32(rng.uniform(1.5, 5.0) - 1)
        for centre, semi in groups[name]:
            found = _Blob(centre, semi).field(canvas)
            if found is None:
                continue
            box, q = found
            weight = np.clip(1.6 * (1 - q * q), 0, 1) * (canvas.labels[box] == MUSCLE)
            weight *= np.clip(0.75 + 0.4 * fibres(*canvas.coords(box)), 0.3, 1.3)
            activity[box] *= 1 + gain * weight
    return chosen


def _physiology(body: _Body, canvas: _Canvas, rng: np.random.Generator, features: dict) -> np.ndarray:
    """The true uptake map (SUV) of the study's tissues, with their textures and patterns."""
    s = body.s
    suv = _draw_uptake(rng)
    texture_rng = np.random.default_rng(rng.integers(1 << 62))  # grid-sized draws: kept off the anatomy's stream
    if rng.random() < 0.12 * (1.6 if body.age < 45 else 0.7):
        features["brown_fat"] = _paint_brown_fat(body, canvas, rng)
    else:
        features["brown_fat"] = []
    activity = suv[canvas.labels]
    spacing = canvas.spacing
    liver_sd, liver_grain = rng.uniform(0.05, 0.12), rng.uniform(4, 8)
    _modulate(canvas, activity, LIVER, lambda box: np.clip(
        1 + liver_sd * _smooth_noise(texture_rng, canvas.labels[box].shape, liver_grain, spacing), 0.6, 1.4))
    myo_waves, myo_sd = _Waves(rng, 70 * s, 4), rng.uniform(0.1, 0.3)
    partial = _Waves(rng, 140 * s, 2) if rng.random() < 0.3 else None

    def myocardium(box):
        x, y, u = canvas.coords(box)
        factor = np.clip(1 + myo_sd * myo_waves(x, y, u), 0.4, 1.6)
        if partial is not None:  # only part of the wall takes up glucose (incomplete suppression)
            factor *= np.clip(0.45 + 0.8 * partial(x, y, u), 0.15, 1.2)
        return factor

    # The pattern shapes the uptake above the blood pool: an unsuppressed wall never drops below background.
    _modulate(canvas, activity, MYOCARDIUM, myocardium, floor=0.9 * min(suv[BLOOD], suv[MYOCARDIUM]))
    # Bowel: mild patches in most; intense in some (metformin, colitis), the colon's classic look.
    bowel_waves = _Waves(rng, 60 * s, 6)
    bowel_gain = _log_uniform(rng, 0.03, 0.3) if rng.random() > 0.15 else rng.uniform(1.0, 2.5)
    _modulate(canvas, activity, BOWEL,
              lambda box: 1 + bowel_gain * np.clip(bowel_waves(*canvas.coords(box)), 0, 2.2) ** 2)
    urine_waves = _Waves(rng, 50 * s, 4)  # peristalsis: ureters hold urine in segments
    _modulate(canvas, activity, URINE,
              lambda box: np.clip(0.55 + 0.6 * urine_waves(*canvas.coords(box)), 0.03, 1.2))
    stomach_waves = _Waves(rng, 50 * s, 4)
    _modulate(canvas, activity, STOMACH, lambda box: np.clip(1 + 0.25 * stomach_waves(*canvas.coords(box)), 0.5, 2))
    grey_waves = _Waves(rng, 45 * s, 4)
    _modulate(canvas, activity, GREY_MATTER, lambda box: 1 + 0.08 * grey_waves(*canvas.coords(box)))
    features["exercise"] = _exercise(body, canvas, activity, rng) if rng.random() < 0.15 else []
    features["uptake"] = {TISSUES[t]: round(float(suv[t]), 2) for t in (LIVER, MYOCARDIUM, BLADDER, GREY_MATTER,
                                                                         MARROW, MUSCLE, BROWN_FAT)}
    return activity


def _shift_at_diaphragm(body: _Body, canvas: _Canvas, activity: np.ndarray, shift_mm: float) -> None:
    """Breathing: the PET's diaphragm, liver dome and lung bases sit ``shift_mm`` higher than the CT's."""
    centre = 0.5 * (body.dome_right + body.dome_left) - 20 * body.s
    width = 70 * body.s
    u = canvas.u
    weight = np.clip(1 - np.abs(u - centre) / width, 0, 1)
    rows = np.flatnonzero(weight > 0)
    if rows.size == 0:
        return
    dz = canvas.spacing[2]
    source = np.arange(activity.shape[0]) - shift_mm * weight / dz  # take each slice from below
    lo, hi = max(int(np.floor(source[rows].min())), 0), min(int(np.ceil(source[rows].max())) + 1, activity.shape[0])
    band = activity[lo:hi].copy()
    for row in rows:
        z = float(np.clip(source[row], lo, hi - 1))
        k = min(int(np.floor(z)), hi - 2) if hi - lo > 1 else lo
        f = np.float32(z - k)
        a, b = band[k - lo], band[min(k + 1, hi - 1) - lo]
        activity[row] = a + f * (b - a)


# ---------------------------------------------------------------------------------------------------------
# Lesions.

# kind: (diameter range mm, SUV range of the viable tumour (liver: a multiple of the liver's), P(necrotic core),
# P(heterogeneous), tissues it may occupy (None: anywhere in the body), CT HU (None: from its tissue))
LESION_KINDS = {
    "node": ((5, 30), (2.5, 18), 0.05, 0.25, None, 38),
    "lung": ((5, 30), (2.0, 12), 0.0, 0.2, None, 30),
    "lung_primary": ((20, 70), (4, 25), 0.35, 0.6, None, 35),
    "liver": ((6, 55), (1.6, 4.5), 0.15, 0.4, (LIVER,), None),
    "spleen": ((8, 40), (4, 15), 0.05, 0.3, (SPLEEN,), 40),
    "bone": ((6, 40), (3, 15), 0.05, 0.3, (CORTEX, MARROW), None),
    "subcutaneous": ((5, 25), (2.5, 15), 0.05, 0.2, None, 35),
    "mass": ((50, 150), (2, 8), 0.75, 0.7, None, 35),
    "bulky": ((40, 100), (5, 25), 0.25, 0.6, None, 40),
}
NOT_BODY = (AIR, TABLE, GAS)


@dataclass
class _LesionPlan:
    kind: str
    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray
    suv: float
    necrotic_core: float  # q below which the core is necrotic (0: none)
    core_suv: float
    texture: float  # SD of the multiplicative texture (0: homogeneous)
    wobble: _Waves
    amplitude: float
    hu: float


def _node_chain(body: _Body, station: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    h, s, x0 = body.height, body.s, body.offset[0]

    def trunk(t):
        return tuple(float(v) for v in body.trunk(t * h)[:4])

    def front_of_spine(t, dx, dy):
        ys, av = body.spine(t * h)
        return np.array([x0 + dx * s, float(ys - 0.85 * av) - dy * s, t * h])

    _, cyn, an, bn = trunk(0.865)
    _, cy83, a83, _ = trunk(0.83)
    _, cy77, a77, b77 = trunk(0.77)
    _, cy5, a5, b5 = trunk(0.49)
    chains = {
        "cervical": ((x0 + side * 0.6 * an, cyn - 0.15 * bn, 0.878 * h), (x0 + side * 0.75 * a83, cy83, 0.825 * h)),
        "axillary": ((x0 + side * (a77 + 10 * s), cy77, 0.79 * h), (x0 + side * (a77 - 15 * s), cy77, 0.735 * h)),
        "mediastinal": ((x0 + side * 14 * s, cy77 - 0.12 * b77, 0.8 * h), (x0 + side * 4 * s, cy77 + 0.1 * b77,
                                                                            0.758 * h)),
        "hilar": ((x0 + side * 42 * s, cy77 + 0.05 * b77, 0.765 * h), (x0 + side * 55 * s, cy77 + 0.12 * b77,
                                                                        0.735 * h)),
        "retroperitoneal": (front_of_spine(0.64, side * 26, 8), front_of_spine(0.575, side * 22, 8)),
        "iliac": (front_of_spine(0.565, side * 30, 14), (x0 + side * 0.48 * a5, cy5 - 0.25 * b5, 0.505 * h)),
        "inguinal": ((x0 + side * 0.55 * a5, cy5 - 0.72 * b5, 0.49 * h), (x0 + side * 0.62 * a5, cy5 - 0.7 * b5,
                                                                           0.462 * h)),
    }
    start, end = chains[station]
    return np.asarray(start, dtype=float), np.asarray(end, dtype=float)


STATIONS_BY_DIAGNOSIS = {
    "MELANOMA": (3, 4, 1, 0.5, 1, 2, 3),
    "LUNG_CANCER": (2, 0.5, 5, 4, 1, 0.3, 0.2),
    "LYMPHOMA": (4, 3, 4, 2, 4, 3, 2),
}


def _label_at(canvas: _Canvas, point: Sequence[float]) -> int | None:
    iz = int(np.searchsorted(canvas.u, point[2] - canvas.spacing[2] / 2))
    iy = int(np.searchsorted(canvas.y, point[1] - canvas.spacing[1] / 2))
    ix = int(np.searchsorted(canvas.x, point[0] - canvas.spacing[0] / 2))
    shape = canvas.labels.shape
    if not (0 <= iz < shape[0] and 0 <= iy < shape[1] and 0 <= ix < shape[2]):
        return None
    return int(canvas.labels[iz, iy, ix])


class _Sites:
    """Random voxel centres of given tissues, the candidate lists built once per study."""

    def __init__(self, canvas: _Canvas, rng: np.random.Generator):
        self.canvas, self.rng, self.cache = canvas, rng, {}

    def sample(self, tissues: tuple[int, ...], u_range: tuple[float, float] | None = None) -> np.ndarray | None:
        key = (tissues, u_range)
        if key not in self.cache:
            canvas = self.canvas
            regions = [canvas.region(t) for t in tissues if canvas.region(t) is not None]
            if not regions:
                self.cache[key] = None
                return None
            z0 = min(r[0].start for r in regions)
            z1 = max(r[0].stop for r in regions)
            if u_range is not None:
                z0 = max(z0, int(np.searchsorted(canvas.u, u_range[0])))
                z1 = min(z1, int(np.searchsorted(canvas.u, u_range[1])))
            y0, y1 = min(r[1].start for r in regions), max(r[1].stop for r in regions)
            x0, x1 = min(r[2].start for r in regions), max(r[2].stop for r in regions)
            if z0 >= z1:
                self.cache[key] = None
                return None
            allowed = np.zeros(256, dtype=bool)
            allowed[list(tissues)] = True
            index = np.flatnonzero(allowed[canvas.labels[z0:z1, y0:y1, x0:x1]])
            self.cache[key] = (index, (z1 - z0, y1 - y0, x1 - x0), (z0, y0, x0)) if index.size else None
        found = self.cache[key]
        if found is None:
            return None
        index, shape, origin = found
        z, y, x = np.unravel_index(index[self.rng.integers(index.size)], shape)
        c = self.canvas
        return np.array([c.x[x + origin[2]], c.y[y + origin[1]], c.u[z + origin[0]]], dtype=float)


def _plan_lesion(rng: np.random.Generator, kind: str, centre: np.ndarray, suv_liver: float,
                 diameter: float | None = None, direction: np.ndarray | None = None) -> _LesionPlan:
    (d_lo, d_hi), (suv_lo, suv_hi), p_necrotic, p_texture, _, hu = LESION_KINDS[kind]
    if diameter is None:
        diameter = _log_uniform(rng, d_lo, d_hi)
    elongation = rng.uniform(1.0, 1.6 if kind in ("node", "mass", "bulky") else 1.3)
    semi = diameter / 2 * np.array([elongation, 1 / math.sqrt(elongation), 1 / math.sqrt(elongation)])
    semi *= rng.uniform(0.85, 1.15, 3)
    semi *= (diameter / 2) / np.prod(semi) ** (1 / 3)  # the drawn diameter is that of the equal-volume sphere
    rotation = _axis_rotation(direction if direction is not None else rng.normal(size=3))
    suv = suv_liver * rng.uniform(suv_lo, suv_hi) if kind == "liver" else _log_uniform(rng, suv_lo, suv_hi)
    necrotic = rng.random() < p_necrotic and diameter >= 20
    return _LesionPlan(kind=kind, centre=centre, semi=semi, rotation=rotation, suv=suv,
                       necrotic_core=rng.uniform(0.45, 0.8) if necrotic else 0.0,
                       core_suv=rng.uniform(0.3, 1.2), texture=rng.uniform(0.15, 0.45) if rng.random() < p_texture
                       else 0.0, wobble=_Waves(rng, diameter * rng.uniform(0.6, 1.2), 4),
                       amplitude=rng.uniform(0.03, 0.2), hu=float(hu) if hu is not None else np.nan)


def _draw_lesions(body: _Body, canvas: _Canvas, rng: np.random.Generator, diagnosis: str,
                  suv_liver: float) -> list[_LesionPlan]:
    """Where the study's lesions go and what they are like (not yet painted)."""
    h = body.height
    sites = _Sites(canvas, rng)
    weights = LESION_WEIGHTS[diagnosis]
    kinds = list(weights)
    p = np.array([weights[k] for k in kinds], dtype=float)
    burden = rng.choice(3, p=(0.45, 0.35, 0.2))
    draws = int(rng.integers(*((1, 3), (3, 7), (7, 16))[burden]))
    plans: list[_LesionPlan] = []
    for _ in range(draws):
        kind = str(rng.choice(kinds, p=p / p.sum()))
        if kind == "nodes":
            plans += _draw_node_chain(body, canvas, rng, diagnosis, burden, suv_liver)
            continue
        centre = None
        if kind in ("lung", "lung_primary"):
            centre = sites.sample((LUNG,))
        elif kind == "liver":
            centre = sites.sample((LIVER,))
        elif kind == "spleen":
            centre = sites.sample((SPLEEN,))
        elif kind == "bone":
            centre = sites.sample((MARROW,))
        elif kind == "subcutaneous":  # fat outside the body cavity (the abdomen's fat is labelled fat too)
            for _attempt in range(20):
                centre = sites.sample((FAT,))
                if centre is None or not _in_cavity(body, centre):
                    break
            else:
                centre = None
        elif kind == "mass":
            centre = sites.sample((MUSCLE,), (0.25 * h, 0.8 * h))
        elif kind == "bulky":
            station = str(rng.choice(["mediastinal", "retroperitoneal", "cervical", "iliac"]))
            start, end = _node_chain(body, station, int(rng.choice([-1, 1])))
            centre = start + rng.uniform(0, 1) * (end - start)
        if centre is None:
            continue
        plans.append(_plan_lesion(rng, kind, centre, suv_liver))
    return plans


def _in_cavity(body: _Body, point: np.ndarray) -> bool:
    cx, cy, ca, cb = (float(v) for v in body.cavity(point[2]))
    return ca > 0 and cb > 0 and ((point[0] - cx) / ca) ** 2 + ((point[1] - cy) / cb) ** 2 <= 1


def _draw_node_chain(body: _Body, canvas: _Canvas, rng: np.random.Generator, diagnosis: str, burden: int,
                     suv_liver: float) -> list[_LesionPlan]:
    weights = np.array(STATIONS_BY_DIAGNOSIS[diagnosis], dtype=float)
    station = NODE_STATIONS[rng.choice(len(NODE_STATIONS), p=weights / weights.sum())]
    sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.6 else [-1, 1]
    plans = []
    for side in sides:
        start, end = _node_chain(body, station, side)
        count = int(rng.integers(1, (4, 7, 11)[burden]))
        for _ in range(count):
            for _attempt in range(12):
                centre = start + rng.uniform(0, 1) * (end - start) + rng.normal(0, 8 * body.s, 3)
                if _label_at(canvas, centre) in (FAT, SOFT, MUSCLE, BOWEL, BROWN_FAT):
                    break
            else:
                continue
            plan = _plan_lesion(rng, "node", centre, suv_liver, direction=end - start)
            if diagnosis == "LYMPHOMA":
                plan.suv = _log_uniform(rng, 4, 30)
            plans.append(plan)
    return plans


def _paint_lesion(plan: _LesionPlan, canvas: _Canvas, activity: np.ndarray, ct: np.ndarray, mask: np.ndarray,
                  rng: np.random.Generator) -> Lesion | None:
    """Paint one lesion into the uptake map, the CT and the mask; None if no voxel centre falls inside it."""
    spacing = canvas.spacing
    voxel = float(np.prod(spacing)) ** (1 / 3)
    blob = _Blob(plan.centre, plan.semi, plan.rotation, plan.wobble, plan.amplitude)
    found = blob.field(canvas, pad=voxel)
    if found is None:
        return None
    box, q = found
    radius = float(np.prod(plan.semi)) ** (1 / 3)
    labels = canvas.labels[box]
    allowed = np.ones(256, dtype=bool)
    allowed[list(NOT_BODY)] = False
    clip_tissues = LESION_KINDS[plan.kind][4]
    if clip_tissues is not None:
        allowed[:] = False
        allowed[list(clip_tissues)] = True
    room = allowed[labels]
    whole = q <= 1
    inside = whole & room
    count = int(np.count_nonzero(inside))
    if count == 0:
        return None
    # Occupancy from an approximate signed distance: edge voxels take part of the tumour's uptake.
    occupancy = np.clip(0.5 - (q - 1) * np.float32(radius / voxel), 0, 1) * room
    uptake = np.full(q.shape, plan.suv, dtype=np.float32)
    if plan.texture > 0:
        sigma = max(radius / 3, 2.0)
        uptake *= np.clip(1 + plan.texture * _smooth_noise(rng, q.shape, sigma, spacing), 0.3, 2.0)
    if plan.necrotic_core > 0:  # hot rim, cold centre, a smooth step between them
        core = np.clip((q - plan.necrotic_core) / 0.12, 0, 1)
        uptake = plan.core_suv + core * (uptake - plan.core_suv)
    sub = activity[box]
    sub += occupancy * (uptake - sub)
    hu = plan.hu
    ct_sub = ct[box]
    if plan.kind == "liver":
        hu_target = ct_sub - rng.uniform(10, 35)
    elif plan.kind == "bone":
        hu_target = np.float32(rng.uniform(400, 900) if rng.random() < 0.4 else rng.uniform(30, 70))
    else:
        hu_target = np.float32(hu)
    if plan.necrotic_core > 0:
        hu_target = hu_target - (1 - np.clip((q - plan.necrotic_core) / 0.12, 0, 1)) * 20
    ct_sub += occupancy * (hu_target - ct_sub)
    mask[box] |= inside
    edge = any(b.start == 0 or b.stop == n for b, n in zip(box, mask.shape, strict=True))
    voxel = tuple(int(np.argmin(np.abs(axis - c))) for axis, c in ((canvas.u, plan.centre[2]),
                                                                   (canvas.y, plan.centre[1]),
                                                                   (canvas.x, plan.centre[0])))
    return Lesion(kind=plan.kind, centre=tuple(float(v) for v in plan.centre), diameter_mm=2 * radius, suv=plan.suv,
                  necrotic=plan.necrotic_core > 0, heterogeneous=plan.texture > 0,
                  nominal_ml=4 / 3 * math.pi * float(np.prod(plan.semi)) / 1000,
                  volume_ml=count * float(np.prod(spacing)) / 1000,
                  clipped=bool(count < np.count_nonzero(whole) or edge), voxel=voxel)


# ---------------------------------------------------------------------------------------------------------
# Imaging and the public API.

def _white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance noise from random bytes through 256 quantiles of the normal: a fraction of the cost of
    Gaussian draws, and indistinguishable from them once smoothed or at the noise levels used here."""
    levels = ndtri((np.arange(256) + 0.5) / 256)
    levels = (levels / levels.std()).astype(np.float32)
    return levels[np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.uint8).reshape(shape)]


def _occupied(canvas: _Canvas, exclude: Sequence[int], margin_mm: float) -> tuple[slice, slice, slice]:
    """The box of every tissue but ``exclude`` (as painted), grown by ``margin_mm``: outside it there is air."""
    boxes = [e for t, e in canvas.extent.items() if t not in exclude]
    shape = canvas.labels.shape
    if not boxes:
        return slice(0, 0), slice(0, 0), slice(0, 0)
    out = []
    for axis, spacing in zip(range(3), (canvas.spacing[2], canvas.spacing[1], canvas.spacing[0]), strict=True):
        grow = math.ceil(margin_mm / spacing)
        lo = max(min(b[2 * axis] for b in boxes) - grow, 0)
        hi = min(max(b[2 * axis + 1] for b in boxes) + grow, shape[axis])
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


def _ct_image(canvas: _Canvas, hu: np.ndarray, rng: np.random.Generator, features: dict) -> np.ndarray:
    """HU: the tissues' values (lesions already in ``hu``) plus their texture and the scanner's noise."""
    noise_sd = rng.uniform(5, 18)
    features["ct_noise_hu"] = round(noise_sd, 1)
    white = _white_noise(rng, hu.shape)
    sd = np.zeros(256, dtype=np.float32)
    for tissue, (_, texture) in HU.items():
        sd[tissue] = texture
    spacing = canvas.spacing
    sigma = [2.5 / spacing[2], 2.5 / spacing[1], 2.5 / spacing[0]]
    box = _occupied(canvas, (AIR,), 0.0)  # air has no texture
    texture = gaussian_filter(white[box], sigma, truncate=3.0)
    texture *= sd[canvas.labels[box]] / np.float32(_filtered_sd(sigma))
    hu[box] += texture
    del texture
    white *= np.float32(noise_sd)
    hu += white
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _pet_image(canvas: _Canvas, activity: np.ndarray, rng: np.random.Generator, features: dict,
               large_patient: float) -> np.ndarray:
    """Blur to the scanner's resolution, then noise whose variance is proportional to the local counts."""
    spacing = canvas.spacing
    fwhm = rng.uniform(5.0, 7.0)
    sigma_mm = fwhm / (2 * math.sqrt(2 * math.log(2)))
    sigma = [sigma_mm / spacing[2], sigma_mm / spacing[1], sigma_mm / spacing[0]]
    # Outside the body's box (grown by the blur's reach) there are no counts: nothing to blur, no noise.
    box = _occupied(canvas, (AIR, TABLE), 3 * sigma_mm + max(spacing))
    pet = np.zeros(activity.shape, dtype=np.float32)
    blurred = gaussian_filter(activity[box], sigma, truncate=3.0, mode="constant")
    # Coefficient of variation in the liver (SUV about 2) from 6 % to 20 %; larger patients are noisier.
    cov = float(np.clip(rng.uniform(0.06, 0.16) * large_patient, 0.05, 0.22))
    variance_per_suv = 2 * cov * cov
    grain = rng.uniform(0.35, 0.6) * sigma_mm  # noise grain, a fraction of the resolution
    grain_sigma = [grain / spacing[2], grain / spacing[1], grain / spacing[0]]
    noise = gaussian_filter(_white_noise(rng, blurred.shape), grain_sigma, truncate=3.0)
    noise *= np.sqrt(np.maximum(blurred, 0) * np.float32(variance_per_suv / _filtered_sd(grain_sigma) ** 2))
    blurred += noise
    del noise
    pet[box] = np.maximum(blurred, 0)
    features.update(fwhm_mm=round(fwhm, 2), noise_cov_liver=round(cov, 3))
    return pet


def make_phantom(seed: int, positive: bool = True, spec: PhantomSpec = PhantomSpec(),
                 diagnosis: str | None = None) -> Phantom:
    """One synthetic study. Positive studies get one or more lesions (unless the field of view holds no body,
    as a few slices above the vertex), negative ones none. ``diagnosis`` chooses a positive study's lesion
    pattern (drawn when None); a negative study carries it as its label.

    The body, organs and uptake come from the seed alone; lesion sites are found on the spec's grid.
    """
    if diagnosis is not None and diagnosis not in DIAGNOSES:
        raise ValueError(f"unknown diagnosis {diagnosis!r}; one of {DIAGNOSES}")
    anatomy_rng, lesion_rng, ct_rng, pet_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    body = _Body(anatomy_rng, spec.feet_fraction)
    dz = spec.slice_thickness
    slices = spec.slices
    if body.to_feet:  # on past the soles
        slices = max(slices, math.ceil((body.fov_top + 20) / dz))
    canvas = _Canvas(spec.size, spec.spacing, slices, dz, body.fov_top)
    bladder_ml = _paint_body(body, canvas, anatomy_rng)
    features = {"sex": "M" if body.male else "F", "age": body.age, "height_mm": round(body.height),
                "fat_mm": round(body.fat, 1), "frame": round(body.frame, 3), "arms": body.arms,
                "head_yaw_deg": round(math.degrees(body.head_yaw), 1),
                "fov": ("vertex" if body.from_vertex else "neck") + " to " + ("feet" if body.to_feet else "thigh"),
                "slices": slices, "bladder_ml": round(bladder_ml)}
    activity = _physiology(body, canvas, anatomy_rng, features)
    shift = anatomy_rng.uniform(6, 20) if anatomy_rng.random() < 0.25 else 0.0
    features["misregistration_mm"] = round(shift, 1)
    if shift:
        _shift_at_diaphragm(body, canvas, activity, shift)

    hu_mean = np.zeros(256, dtype=np.float32)
    for tissue, (mean, _) in HU.items():
        hu_mean[tissue] = mean + (anatomy_rng.normal(0, 5) if tissue not in (AIR, GAS) else 0)
    hu_mean[CORTEX] = anatomy_rng.uniform(500, 1100)
    hu_mean[MARROW] = anatomy_rng.uniform(150, 330) - 1.2 * (body.age - 50)
    hu_mean[LUNG] = anatomy_rng.uniform(-880, -780)
    hu_mean[TABLE] = anatomy_rng.uniform(-600, -150)
    hu = hu_mean[canvas.labels]

    mask = np.zeros(canvas.labels.shape, dtype=np.uint8)
    lesions: list[Lesion] = []
    if positive:
        if diagnosis is None:
            diagnosis = str(lesion_rng.choice(DIAGNOSES))
        liver_suv = float(features["uptake"]["liver"])
        for plan in _draw_lesions(body, canvas, lesion_rng, diagnosis, liver_suv):
            lesion = _paint_lesion(plan, canvas, activity, hu, mask, lesion_rng)
            if lesion is not None:
                lesions.append(lesion)
        centre = _Sites(canvas, lesion_rng).sample((MUSCLE, FAT, SOFT)) if not lesions else None
        if centre is not None:  # none of the drawn ones fell on a voxel: a node centred on one, big enough
            diameter = max(12.0, 1.5 * max(canvas.spacing))
            plan = _plan_lesion(lesion_rng, "node", centre, liver_suv, diameter=diameter)
            lesions.append(_paint_lesion(plan, canvas, activity, hu, mask, lesion_rng))
    else:
        diagnosis = "NEGATIVE" if diagnosis is None else diagnosis
    features["lesions"] = len(lesions)

    ct = _ct_image(canvas, hu, ct_rng, features)
    del hu
    pet = _pet_image(canvas, activity, pet_rng, features, 0.85 + body.fat / 60)
    return Phantom(pet=pet, ct=ct, mask=mask, spacing=canvas.spacing, diagnosis=diagnosis, labels=canvas.labels,
                   activity=activity, lesions=lesions, features=features)


def _study_uid(rng_seed: int, index: int) -> str:
    return str(uuid.UUID(int=(rng_seed * 1_000_003 + index) % (1 << 128) | (1 << 127)))


def write_dataset(out: Path, cases: int, seed: int, layout: str = "tcia", spec: PhantomSpec = PhantomSpec(),
                  negative_fraction: float = 0.5, progress: bool | None = None,
                  preview: Path | None = None) -> list[dict]:
    """Write ``cases`` phantoms in the TCIA NIfTI layout or the grand-challenge .mha layout.

    ``preview``: also write a PNG of coronal PET MIPs of the first eight studies, lesions outlined.
    """
    from tqdm.auto import tqdm

    if not 0 <= negative_fraction <= 1:
        raise ValueError(f"negative_fraction {negative_fraction} is not a fraction")
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    mips = []
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
                     "age": phantom.features["age"], "sex": phantom.features["sex"], "File Location": location})
        if preview is not None and len(mips) < 8:
            mips.append(_coronal_mip(phantom, _caption(phantom)))
        del phantom, pet, ct, mask
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "Metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if preview is not None:
        from model.figures import mip_grid

        mip_grid(Path(preview), mips, columns=4)
    return rows


def _caption(phantom: Phantom) -> str:
    """Short lines on what a study drew, for the preview grid."""
    f = phantom.features
    count = len(phantom.lesions)
    first = phantom.diagnosis.lower().replace("_", " ")
    first += f", {count} lesion{'s' * (count != 1)}" if count else ""
    extras = ["head turned"] * (f["head_yaw_deg"] != 0) + ["brown fat"] * bool(f["brown_fat"])
    extras += ["exercise"] * bool(f["exercise"]) + ["PET/CT shift"] * (f["misregistration_mm"] > 0)
    return "\n".join([first, f"arms {f['arms']}, {f['fov']}", ", ".join(extras)])


def _coronal_mip(phantom: Phantom, label: str) -> tuple[sitk.Image, sitk.Image, str]:
    """The study's PET and mask projected along y, kept as one-row images (what a coronal MIP panel draws)."""
    pet = phantom.pet.max(axis=1, keepdims=True)
    mask = phantom.mask.max(axis=1, keepdims=True)
    images = []
    for array in (pet, mask):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(phantom.spacing)
        images.append(image)
    return images[0], images[1], label
