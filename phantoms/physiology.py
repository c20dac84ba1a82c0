"""Physiology: uptake per tissue and its patterns (texture, brown fat, exercise, breathing)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from phantoms.body import Body
from phantoms.geometry import Blob, Canvas, Waves, log_uniform, smooth_noise
from phantoms.tissues import (
    BLADDER,
    BLOOD,
    BOWEL,
    BROWN_FAT,
    FAT,
    GREY_MATTER,
    LIVER,
    MARROW,
    MUSCLE,
    MYOCARDIUM,
    MYOCARDIUM_SUV,
    SOFT,
    STOMACH,
    SUV_RANGE,
    TISSUES,
    URINE,
    WHITE_MATTER,
)


def _draw_uptake(rng: np.random.Generator) -> np.ndarray:
    """Mean SUV per tissue for one study."""
    suv = np.zeros(256, dtype=np.float32)
    for tissue, (lo, hi) in SUV_RANGE.items():
        suv[tissue] = rng.uniform(lo, hi)
    suv[BLADDER] = log_uniform(rng, *SUV_RANGE[BLADDER])
    suv[URINE] = suv[BLADDER] * rng.uniform(0.3, 1.0)
    suv[WHITE_MATTER] = suv[GREY_MATTER] * rng.uniform(0.3, 0.45)
    probability = [p for p, _ in MYOCARDIUM_SUV]
    lo, hi = MYOCARDIUM_SUV[rng.choice(len(MYOCARDIUM_SUV), p=probability)][1]
    suv[MYOCARDIUM] = rng.uniform(lo, hi)
    if rng.random() < 0.1:  # marrow stimulated (chemotherapy, G-CSF): diffusely hot
        suv[MARROW] = rng.uniform(2.0, 3.5)
    return suv


def _modulate(canvas: Canvas, activity: np.ndarray, tissue: int,
              factor: Callable[[tuple[slice, slice, slice]], np.ndarray | float], floor: float = 0.0) -> None:
    """Scale the uptake of ``tissue`` above ``floor`` by ``factor(box)``, over the box holding the tissue."""
    box = canvas.region(tissue)
    if box is None:
        return
    where = canvas.labels[box] == tissue
    sub = activity[box]
    scale = np.broadcast_to(factor(box), where.shape)[where]
    sub[where] = np.float32(floor) + (sub[where] - np.float32(floor)) * scale


def _depots(body: Body, kind: str) -> dict[str, list[tuple[tuple, tuple]]]:
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


def _paint_brown_fat(body: Body, canvas: Canvas, rng: np.random.Generator) -> list[str]:
    """Activated brown fat: symmetric patches in some of its depots."""
    depots = _depots(body, "brown fat")
    names = list(depots)
    likely = {"supraclavicular": 0.85, "cervical": 0.6, "axillary": 0.3, "paravertebral": 0.4}
    chosen = [n for n in names if rng.random() < likely[n]] or ["supraclavicular"]
    pattern = Waves(rng, 22 * body.s, 8)
    x0 = np.float32(body.offset[0])
    for name in chosen:
        for centre, semi in depots[name]:
            found = Blob(centre, semi).field(canvas)
            if found is None:
                continue
            box, q = found
            x, y, u = canvas.coords(box)
            patches = (q <= 1) & (pattern(np.abs(x - x0), y, u) > 0.5)
            canvas.paint(box, patches, BROWN_FAT, over=(FAT, MUSCLE, SOFT))
    return chosen


def _exercise(body: Body, canvas: Canvas, activity: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Muscle uptake after exercise in one or two muscle groups, fading towards each group's edge."""
    groups = _depots(body, "muscle")
    names = list(groups)
    chosen = [str(n) for n in rng.choice(names, size=int(rng.integers(1, 3)), replace=False)]
    fibres = Waves(rng, 35 * body.s, 5)
    for name in chosen:
        gain = np.float32(rng.uniform(1.5, 5.0) - 1)
        for centre, semi in groups[name]:
            found = Blob(centre, semi).field(canvas)
            if found is None:
                continue
            box, q = found
            weight = np.clip(1.6 * (1 - q * q), 0, 1) * (canvas.labels[box] == MUSCLE)
            weight *= np.clip(0.75 + 0.4 * fibres(*canvas.coords(box)), 0.3, 1.3)
            activity[box] *= 1 + gain * weight
    return chosen


def uptake_map(body: Body, canvas: Canvas, rng: np.random.Generator, features: dict) -> np.ndarray:
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
        1 + liver_sd * smooth_noise(texture_rng, canvas.labels[box].shape, liver_grain, spacing), 0.6, 1.4))
    myo_waves, myo_sd = Waves(rng, 70 * s, 4), rng.uniform(0.1, 0.3)
    partial = Waves(rng, 140 * s, 2) if rng.random() < 0.3 else None

    def myocardium(box):
        x, y, u = canvas.coords(box)
        factor = np.clip(1 + myo_sd * myo_waves(x, y, u), 0.4, 1.6)
        if partial is not None:  # only part of the wall takes up glucose (incomplete suppression)
            factor *= np.clip(0.45 + 0.8 * partial(x, y, u), 0.15, 1.2)
        return factor

    # The pattern shapes the uptake above the blood pool: an unsuppressed wall never drops below background.
    _modulate(canvas, activity, MYOCARDIUM, myocardium, floor=0.9 * min(suv[BLOOD], suv[MYOCARDIUM]))
    # Bowel: mild patches in most; intense in some (metformin, colitis), the colon's classic look.
    bowel_waves = Waves(rng, 60 * s, 6)
    bowel_gain = log_uniform(rng, 0.03, 0.3) if rng.random() > 0.15 else rng.uniform(1.0, 2.5)
    _modulate(canvas, activity, BOWEL,
              lambda box: 1 + bowel_gain * np.clip(bowel_waves(*canvas.coords(box)), 0, 2.2) ** 2)
    urine_waves = Waves(rng, 50 * s, 4)  # peristalsis: ureters hold urine in segments
    _modulate(canvas, activity, URINE,
              lambda box: np.clip(0.55 + 0.6 * urine_waves(*canvas.coords(box)), 0.03, 1.2))
    stomach_waves = Waves(rng, 50 * s, 4)
    _modulate(canvas, activity, STOMACH, lambda box: np.clip(1 + 0.25 * stomach_waves(*canvas.coords(box)), 0.5, 2))
    grey_waves = Waves(rng, 45 * s, 4)
    _modulate(canvas, activity, GREY_MATTER, lambda box: 1 + 0.08 * grey_waves(*canvas.coords(box)))
    features["exercise"] = _exercise(body, canvas, activity, rng) if rng.random() < 0.15 else []
    features["uptake"] = {TISSUES[t]: round(float(suv[t]), 2) for t in (LIVER, MYOCARDIUM, BLADDER, GREY_MATTER,
                                                                         MARROW, MUSCLE, BROWN_FAT)}
    return activity


def shift_at_diaphragm(body: Body, canvas: Canvas, activity: np.ndarray, shift_mm: float) -> None:
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
