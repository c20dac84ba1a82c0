"""Lesions as autoPET has them: where they go by diagnosis, what they look like, and painting them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phantoms.body import T_KNOTS, Body
from phantoms.geometry import Blob, Canvas, Waves, axis_rotation, log_uniform, smooth_noise
from phantoms.tissues import BOWEL, BROWN_FAT, CORTEX, FAT, LIVER, LUNG, MARROW, MUSCLE, NOT_BODY, SOFT, SPLEEN

DIAGNOSES = ("MELANOMA", "LUNG_CANCER", "LYMPHOMA")
# Lesion kinds per diagnosis, with weights (chains of nodes count as one draw; see draw_lesions).
LESION_WEIGHTS = {
    "MELANOMA": {"nodes": 4, "lung": 2, "liver": 2, "bone": 1.5, "subcutaneous": 2, "mass": 1, "limb_mass": 0.8},
    "LUNG_CANCER": {"nodes": 4, "lung": 2, "lung_primary": 3, "liver": 1, "bone": 1.5, "mass": 0.3,
                    "limb_mass": 0.2},
    "LYMPHOMA": {"nodes": 8, "bulky": 1.5, "liver": 0.5, "spleen": 0.7, "bone": 1, "lung": 0.3, "mass": 0.3,
                 "limb_mass": 0.4},
}
NODE_STATIONS = ("cervical", "axillary", "mediastinal", "hilar", "retroperitoneal", "iliac", "inguinal")


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
    # soft-tissue masses of the thighs and arms (sarcoma-like metastases, extranodal lymphoma), clipped to the limb
    "limb_mass": ((40, 110), (2.5, 12), 0.6, 0.7, None, 35),
}




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
    wobble: Waves
    amplitude: float
    hu: float


def _node_chain(body: Body, station: str, side: int) -> tuple[np.ndarray, np.ndarray]:
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


def _label_at(canvas: Canvas, point: Sequence[float]) -> int | None:
    iz = int(np.searchsorted(canvas.u, point[2] - canvas.spacing[2] / 2))
    iy = int(np.searchsorted(canvas.y, point[1] - canvas.spacing[1] / 2))
    ix = int(np.searchsorted(canvas.x, point[0] - canvas.spacing[0] / 2))
    shape = canvas.labels.shape
    if not (0 <= iz < shape[0] and 0 <= iy < shape[1] and 0 <= ix < shape[2]):
        return None
    return int(canvas.labels[iz, iy, ix])


class Sites:
    """Random voxel centres of given tissues, the candidate lists built once per study."""

    def __init__(self, canvas: Canvas, rng: np.random.Generator):
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


def plan_lesion(rng: np.random.Generator, kind: str, centre: np.ndarray, suv_liver: float,
                 diameter: float | None = None, direction: np.ndarray | None = None) -> _LesionPlan:
    (d_lo, d_hi), (suv_lo, suv_hi), p_necrotic, p_texture, _, hu = LESION_KINDS[kind]
    if diameter is None:
        diameter = log_uniform(rng, d_lo, d_hi)
    elongation = rng.uniform(1.0, 1.6 if kind in ("node", "mass", "bulky", "limb_mass") else 1.3)
    semi = diameter / 2 * np.array([elongation, 1 / math.sqrt(elongation), 1 / math.sqrt(elongation)])
    semi *= rng.uniform(0.85, 1.15, 3)
    semi *= (diameter / 2) / np.prod(semi) ** (1 / 3)  # the drawn diameter is that of the equal-volume sphere
    rotation = axis_rotation(direction if direction is not None else rng.normal(size=3))
    suv = suv_liver * rng.uniform(suv_lo, suv_hi) if kind == "liver" else log_uniform(rng, suv_lo, suv_hi)
    necrotic = rng.random() < p_necrotic and diameter >= 20
    return _LesionPlan(kind=kind, centre=centre, semi=semi, rotation=rotation, suv=suv,
                       necrotic_core=rng.uniform(0.45, 0.8) if necrotic else 0.0,
                       core_suv=rng.uniform(0.3, 1.2), texture=rng.uniform(0.15, 0.45) if rng.random() < p_texture
                       else 0.0, wobble=Waves(rng, diameter * rng.uniform(0.6, 1.2), 4),
                       amplitude=rng.uniform(0.03, 0.2), hu=float(hu) if hu is not None else np.nan)


def draw_lesions(body: Body, canvas: Canvas, rng: np.random.Generator, diagnosis: str,
                  suv_liver: float) -> list[_LesionPlan]:
    """Where the study's lesions go and what they are like (not yet painted)."""
    h = body.height
    sites = Sites(canvas, rng)
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
        elif kind == "limb_mass":
            for _attempt in range(20):
                centre = sites.sample((MUSCLE,), (0.1 * h, 0.8 * h))
                if centre is None or _in_limb(body, centre):
                    break
            else:
                centre = None
        elif kind == "bulky":
            station = str(rng.choice(["mediastinal", "retroperitoneal", "cervical", "iliac"]))
            start, end = _node_chain(body, station, int(rng.choice([-1, 1])))
            centre = start + rng.uniform(0, 1) * (end - start)
        if centre is None:
            continue
        plans.append(plan_lesion(rng, kind, centre, suv_liver))
    return plans


def _in_limb(body: Body, point: np.ndarray) -> bool:
    """Below the trunk (a leg) or outside the trunk's outline with its fat (an arm)."""
    if body.t(point[2]) < T_KNOTS[0]:  # the trunk's profile begins at the crotch
        return True
    cx, cy, a, b, fat, belly = (float(v) for v in body.trunk(point[2]))
    return ((point[0] - cx) / (a + fat)) ** 2 + ((point[1] - cy) / (b + fat + belly)) ** 2 > 1


def _in_cavity(body: Body, point: np.ndarray) -> bool:
    cx, cy, ca, cb = (float(v) for v in body.cavity(point[2]))
    return ca > 0 and cb > 0 and ((point[0] - cx) / ca) ** 2 + ((point[1] - cy) / cb) ** 2 <= 1


def _draw_node_chain(body: Body, canvas: Canvas, rng: np.random.Generator, diagnosis: str, burden: int,
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
            plan = plan_lesion(rng, "node", centre, suv_liver, direction=end - start)
            if diagnosis == "LYMPHOMA":
                plan.suv = log_uniform(rng, 4, 30)
            plans.append(plan)
    return plans


def paint_lesion(plan: _LesionPlan, canvas: Canvas, activity: np.ndarray, ct: np.ndarray, mask: np.ndarray,
                  rng: np.random.Generator) -> Lesion | None:
    """Paint one lesion into the uptake map, the CT and the mask; None if no voxel centre falls inside it."""
    spacing = canvas.spacing
    voxel = float(np.prod(spacing)) ** (1 / 3)
    blob = Blob(plan.centre, plan.semi, plan.rotation, plan.wobble, plan.amplitude)
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
        uptake *= np.clip(1 + plan.texture * smooth_noise(rng, q.shape, sigma, spacing), 0.3, 2.0)
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



def add_lesions(body: Body, canvas: Canvas, rng: np.random.Generator, diagnosis: str, liver_suv: float,
                images: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[Lesion]:
    """Draw and paint a positive study's lesions into (uptake, HU, mask); at least one where the body allows."""
    activity, hu, mask = images
    lesions = []
    for plan in draw_lesions(body, canvas, rng, diagnosis, liver_suv):
        lesion = paint_lesion(plan, canvas, activity, hu, mask, rng)
        if lesion is not None:
            lesions.append(lesion)
    centre = Sites(canvas, rng).sample((MUSCLE, FAT, SOFT)) if not lesions else None
    if centre is not None:  # none of the drawn ones fell on a voxel: a node centred on one, big enough
        diameter = max(12.0, 1.5 * max(canvas.spacing))
        plan = plan_lesion(rng, "node", centre, liver_suv, diameter=diameter)
        lesions.append(paint_lesion(plan, canvas, activity, hu, mask, rng))
    return lesions
