"""Painting the anatomy: trunk, legs, arms, head, bones, thorax and abdomen, as tissue labels."""

from __future__ import annotations

import math

import numpy as np

from phantoms.body import SPINE_PITCH, T_KNOTS, Body
from phantoms.geometry import Blob, Canvas, Waves, axis_rotation, lerp, paint_tube, rotation_matrix
from phantoms.tissues import (
    AIR,
    BLADDER,
    BLOOD,
    BOWEL,
    CORTEX,
    FAT,
    GAS,
    GREY_MATTER,
    KIDNEY,
    LIVER,
    LUNG,
    MARROW,
    MUSCLE,
    MYOCARDIUM,
    SALIVARY,
    SOFT,
    SPLEEN,
    STOMACH,
    TABLE,
    TONSIL,
    URINE,
    VOCAL_CORDS,
    WHITE_MATTER,
)


def paint_body(body: Body, canvas: Canvas, rng: np.random.Generator) -> float:
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
            Blob((x, y - 55 * s, 40 * s), (38 * s, 110 * s, 38 * s)).paint(canvas, SOFT, over=(AIR, FAT))
            Blob((x, y - 10 * s, 35 * s), (22 * s, 40 * s, 25 * s)).paint(canvas, MARROW, over=(SOFT,))
    return bladder_ml


def _trunk_box(body: Body, canvas: Canvas, u_lo: float, u_hi: float, grow: float = 0.0):
    u = np.linspace(u_lo, u_hi, 64)
    cx, cy, a, b, fat, belly = body.trunk(u)
    lo = (float(np.min(cx - a - fat)) - grow, float(np.min(cy - b - fat - belly)) - grow, u_lo)
    hi = (float(np.max(cx + a + fat)) + grow, float(np.max(cy + b + fat)) + grow, u_hi)
    return canvas.box(lo, hi)


def _paint_trunk(body: Body, canvas: Canvas, rng: np.random.Generator) -> None:
    h, s = body.height, body.s
    box = _trunk_box(body, canvas, 0.455 * h, 0.9 * h, grow=12)
    if box is None:
        return
    x, y, u = canvas.coords(box)
    uu = u[:, 0, 0]
    cx, cy, a, b, fat, belly = (v[:, None, None].astype(np.float32) for v in body.trunk(uu))
    wobble = Waves(rng, 260 * s, 4)
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


def _paint_legs(body: Body, canvas: Canvas) -> None:
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
        paint_tube(canvas, femur, ((np.array([14, 15, 14]) * s, CORTEX, None), (np.array([8, 9, 9]) * s,
                                                                                      MARROW, None)))
        Blob((knee_x, knee[1], 0.285 * h), (36 * s, 30 * s, 24 * s)).paint(canvas, CORTEX)
        Blob((knee_x, knee[1], 0.285 * h), (30 * s, 24 * s, 19 * s)).paint(canvas, MARROW)
        tibia = np.array([(knee_x, knee[1] - 5 * s, 0.28 * h), (ankle_x, ankle[1] - 5 * s, 0.05 * h)])
        paint_tube(canvas, tibia, ((np.array([15, 11]) * s, CORTEX, None), (np.array([9, 6]) * s, MARROW, None)))
        fibula = tibia + np.array([side * 24 * s, 12 * s, -8 * s])
        paint_tube(canvas, fibula, ((7 * s, CORTEX, None), (3 * s, MARROW, None)))
        Blob((hip_x, cy_hip, 0.505 * h), (24 * s, 24 * s, 24 * s)).paint(canvas, CORTEX)
        Blob((hip_x, cy_hip, 0.505 * h), (18 * s, 18 * s, 18 * s)).paint(canvas, MARROW)


def _paint_arms(body: Body, canvas: Canvas, rng: np.random.Generator) -> None:
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
        paint_tube(canvas, at[0:2], ((12 * s, CORTEX, None), (7 * s, MARROW, None)))
        paint_tube(canvas, at[2:4], ((10 * s, CORTEX, None), (5 * s, MARROW, None)))
        Blob(at[4], (22 * s, 22 * s, 22 * s)).paint(canvas, CORTEX, over=(MUSCLE, FAT))
        Blob(at[4], (17 * s, 17 * s, 17 * s)).paint(canvas, MARROW, over=(CORTEX,))


def _paint_raised_arm(body: Body, canvas: Canvas, side: int, rng: np.random.Generator) -> None:
    h, s = body.height, body.s
    cx, cy, a, _, _, _ = (float(v) for v in body.trunk(0.8 * h))
    shoulder = (cx + side * (a - 30 * s), cy + 5 * s, 0.8 * h)
    elbow = (cx + side * rng.uniform(115, 170) * s, cy + rng.uniform(-20, 30) * s, h + rng.uniform(-50, 50) * s)
    wrist = (cx + side * rng.uniform(15, 90) * s, cy + rng.uniform(-70, 10) * s, elbow[2] + rng.uniform(150, 230) * s)
    hand = (wrist[0] - side * 40 * s, wrist[1] - 20 * s, wrist[2] + 70 * s)
    points = np.array([shoulder, elbow, wrist, hand])
    muscle = np.array([46, 34, 24, 18]) * s * (0.85 + 0.15 * body.frame)
    fat = muscle + 0.6 * body.fat * np.array([1, 1, 0.5, 0.3])
    paint_tube(canvas, points, ((fat, FAT, (AIR,)), (muscle, MUSCLE, (AIR, FAT))))
    paint_tube(canvas, points[:2], ((12 * s, CORTEX, (MUSCLE, FAT)), (7 * s, MARROW, (CORTEX,))))
    paint_tube(canvas, points[1:3], ((10 * s, CORTEX, (MUSCLE, FAT)), (5 * s, MARROW, (CORTEX,))))
    Blob(shoulder, (22 * s, 22 * s, 22 * s)).paint(canvas, CORTEX, over=(MUSCLE, FAT))
    Blob(shoulder, (17 * s, 17 * s, 17 * s)).paint(canvas, MARROW, over=(CORTEX,))


def _paint_head(body: Body, canvas: Canvas, rng: np.random.Generator) -> None:
    """Head and face, turned by the study's yaw about the neck's axis; neck airway and vocal cords."""
    h, s = body.height, body.s
    hs = s * body.head_scale
    _, cy_neck, _, b_neck, _, _ = (float(v) for v in body.trunk(0.87 * h))
    pivot = np.array([body.offset[0], cy_neck])
    u_head = h - 95 * hs
    turn = rotation_matrix(yaw=body.head_yaw)

    def at(dx: float, dy: float, du: float) -> tuple[float, float, float]:
        """A point given relative to the head (mm, before the turn) in world coordinates."""
        x, y = turn[:2, :2] @ np.array([dx, dy - 14 * hs]) + pivot
        return float(x), float(y), u_head + du

    def blob(dx, dy, du, semi, amplitude=0.06, wavelength=120.0):
        return Blob(at(dx * hs, dy * hs, du * hs), np.asarray(semi) * hs, turn, Waves(rng, wavelength * hs),
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
        gyri = Waves(rng, 40 * hs, 6)(x, y, u)
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
        paint_tube(canvas, mandible, ((8 * hs, CORTEX, soft_tissue), (4 * hs, MARROW, (CORTEX,))))
    blob(0, -84, -45, (13, 22, 22), 0.1, 40).paint(canvas, GAS, over=(SOFT,))
    pharynx = [at(0, -40 * hs, -55 * hs), at(0, -38 * hs, -110 * hs)]
    # The airway runs on into the neck (not turned): larynx, vocal cords, trachea.
    larynx_y = cy_neck - 0.58 * b_neck
    airway = [pharynx[0], pharynx[1], (body.offset[0], larynx_y, 0.875 * h), (body.offset[0], larynx_y, 0.83 * h)]
    paint_tube(canvas, airway, ((7 * s, GAS, soft_tissue),))
    u_cords = 0.848 * h
    for side in (-1, 1):
        Blob((body.offset[0] + side * 6 * s, larynx_y, u_cords), (4 * s, 9 * s, 4 * s)).paint(
            canvas, VOCAL_CORDS, over=(*soft_tissue, GAS))


def _spine_phase(body: Body, u: np.ndarray) -> np.ndarray:
    """Vertebra count from the sacrum up at height u: its fractional part says body or disc."""
    grid = np.arange(0.44 * body.height, 0.92 * body.height, 1.0)
    pitch = lerp(grid / body.height, T_KNOTS, SPINE_PITCH) * body.s
    return np.interp(u, grid, np.cumsum(1.0 / pitch))


def _paint_spine_and_bones(body: Body, canvas: Canvas) -> None:
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
        Blob(centre, semi, rotation).paint(canvas, CORTEX, over=over)
        Blob(centre, np.asarray(semi) * inner, rotation).paint(canvas, MARROW, over=(CORTEX,))

    cx, cy, a, b = trunk_at(0.53)
    bone((cx, cy + 0.6 * b, 0.53 * h), (42 * s, 16 * s, 50 * s), rotation_matrix(pitch=math.radians(25)), 0.65)
    cx, cy, a, b = trunk_at(0.565)
    for side in (-1, 1):
        bone((cx + side * 0.6 * a, cy + 0.12 * b, 0.565 * h), (9 * s, 62 * s, 48 * s),
             rotation_matrix(yaw=math.radians(-side * 40)), 0.55)
        cx5, cy5, a5, b5 = trunk_at(0.5)
        pubis = [(cx5 + side * 0.45 * a5, cy5 - 0.1 * b5, 0.5 * h), (cx5 + side * 10 * s, cy5 - 0.72 * b5, 0.488 * h)]
        paint_tube(canvas, pubis, ((10 * s, CORTEX, (MUSCLE, FAT, SOFT)), (6 * s, MARROW, (CORTEX,))))
        ischium = [(cx5 + side * 0.42 * a5, cy5 + 0.15 * b5, 0.5 * h), (cx5 + side * 0.3 * a5, cy5 + 0.45 * b5,
                                                                         0.478 * h)]
        paint_tube(canvas, ischium, ((12 * s, CORTEX, (MUSCLE, FAT, SOFT)), (7 * s, MARROW, (CORTEX,))))
    cx, cy, a, b = trunk_at(0.77)
    paint_tube(canvas, [(cx, cy - b + 14 * s, 0.805 * h), (cx, cy - b + 12 * s, 0.715 * h)],
                ((11 * s, CORTEX, (MUSCLE, FAT, SOFT)), (6 * s, MARROW, (CORTEX,))))
    for side in (-1, 1):
        cx8, cy8, a8, b8 = trunk_at(0.81)
        clavicle = [(cx8 + side * 20 * s, cy8 - b8 + 22 * s, 0.812 * h), (cx8 + side * 0.86 * a8, cy8 + 0.05 * b8,
                                                                           0.824 * h)]
        paint_tube(canvas, clavicle, ((8 * s, CORTEX, (MUSCLE, FAT, SOFT)), (4 * s, MARROW, (CORTEX,))))
        # Scapula: a thin blade on the back of the chest, running forwards as it goes out.
        bone((cx + side * 0.55 * a, cy + 0.78 * b, 0.765 * h), (55 * s, 5 * s, 70 * s),
             rotation_matrix(yaw=math.radians(-side * 28)), 0.5, over=(MUSCLE, FAT))


def _paint_thorax(body: Body, canvas: Canvas, rng: np.random.Generator) -> None:
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
        q *= 1 + np.float32(0.08) * Waves(rng, 150 * s, 3)(x, y, u)
        canvas.paint(box, q <= 1, LUNG, over=(SOFT,))
    # Heart: chambers of blood, the left ventricle's wall a shell of myocardium.
    u_heart = body.dome_left + 48 * s
    ccx, ccy, ca, cb = (float(v) for v in body.cavity(u_heart))
    size = rng.uniform(0.9, 1.15) * s
    centre = np.array([ccx + 0.2 * ca, ccy - 0.2 * cb, u_heart])
    axis = np.array([0.62, -0.42, -0.66]) + rng.normal(0, 0.08, 3)
    rot = axis_rotation(axis)
    axis = rot[:, 0]
    wobble = Waves(rng, 90 * s, 3)
    Blob(centre, np.array([62, 47, 44]) * size, rot, wobble, 0.05).paint(canvas, BLOOD, over=(SOFT, LUNG, FAT))
    lv = centre + 14 * size * axis + rot @ np.array([0, 6, 0]) * size
    wall = rng.uniform(9, 13)
    Blob(lv, np.array([50, 30, 29]) * size, rot, wobble, 0.04).paint(canvas, MYOCARDIUM, over=(BLOOD, SOFT, LUNG))
    Blob(lv - 4 * axis, np.array([50 - wall, 30 - wall, 29 - wall]) * size, rot, wobble, 0.04).paint(
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
    paint_tube(canvas, aorta, ((radius, BLOOD, (SOFT, LUNG, FAT, MUSCLE)),))
    for side in (-1, 1):
        cx5, cy5, a5, b5, _, _ = (float(v) for v in body.trunk(0.5 * h))
        iliac = [spine_front(0.575, 5, 14), spine_front(0.54, side * 40, 20), (cx5 + side * 0.5 * a5, cy5 - 0.3 * b5,
                                                                               0.49 * h)]
        paint_tube(canvas, iliac, ((np.array([8, 7, 6]) * s, BLOOD, (SOFT, FAT, MUSCLE, BOWEL)),))
    # Trachea and main bronchi.
    _, cy_neck, _, b_neck, _, _ = (float(v) for v in body.trunk(0.87 * h))
    carina = (x0, cy7 + 0.05 * b7, 0.77 * h)
    paint_tube(canvas, [(x0, cy_neck - 0.58 * b_neck, 0.83 * h), carina], ((9 * s, GAS, (SOFT, LUNG, MUSCLE, FAT)),))
    for side in (-1, 1):
        paint_tube(canvas, [carina, (x0 + side * 45 * s, cy7 + 0.1 * b7, 0.745 * h)],
                    ((6 * s, GAS, (SOFT, LUNG, BLOOD)),))
    if not body.male:
        cx, cy, a, b, fat, _ = (float(v) for v in body.trunk(0.745 * h))
        size = rng.uniform(0.7, 1.3) * (1 + fat / 40)
        for side in (-1, 1):
            centre = (cx + side * 0.45 * a, cy - b - fat - 8 * size * s, 0.745 * h)
            Blob(centre, np.array([55, 38, 55]) * s * size).paint(canvas, FAT, over=(AIR,))
            Blob(centre, np.array([32, 22, 30]) * s * size).paint(canvas, SOFT, over=(FAT,))


def _paint_abdomen(body: Body, canvas: Canvas, rng: np.random.Generator) -> float:
    """Bowel, liver, spleen, stomach, kidneys, ureters and bladder; returns the bladder's volume (ml).
    The parts are painted in this order, which is also the order of their random draws."""
    _paint_bowel(body, canvas, rng)
    _paint_upper_abdomen(body, canvas, rng)
    return _paint_urinary_tract(body, canvas, rng)


def _cavity_at(body: Body, t: float) -> tuple[float, ...]:
    """cx, cy, half-width and half-depth of the body cavity at height fraction ``t``."""
    return tuple(float(v) for v in body.cavity(t * body.height))


def _jitter(body: Body, rng: np.random.Generator, point, amount: float = 12.0) -> tuple:
    """A point moved at random, less along the body's axis (organs vary in place between patients)."""
    return tuple(np.asarray(point) + rng.normal(0, amount * body.s, 3) * np.array([1, 1, 0.6]))


# The abdomen's free space: what its organs may be painted over.
ABDOMINAL_CAVITY = (FAT, BOWEL)
RETROPERITONEUM = (FAT, BOWEL, MUSCLE, SOFT)


def _paint_bowel(body: Body, canvas: Canvas, rng: np.random.Generator) -> None:
    """Small bowel (a folded sheet of gut filling the mid-abdomen's free space), the colon's frame, gas."""
    h, s = body.height, body.s
    x0 = body.offset[0]
    _, ccy, ca, cb = _cavity_at(body, 0.56)
    box = canvas.box((x0 - 0.8 * ca, ccy - cb, 0.495 * h), (x0 + 0.8 * ca, ccy + 0.6 * cb, 0.625 * h))
    if box is not None:
        sheet = Waves(rng, 55 * s, 6)(*canvas.coords(box))
        canvas.paint(box, np.abs(sheet) < 0.38, BOWEL, over=(FAT,))
    c54, c60, c62, c51 = (_cavity_at(body, t) for t in (0.54, 0.6, 0.62, 0.51))
    colon = [(x0 - 0.6 * c54[2], c54[1] - 0.1 * c54[3], 0.535 * h),
             (x0 - 0.66 * c60[2], c60[1], 0.6 * h),
             (x0 - 0.55 * c62[2], c62[1] - 0.3 * c62[3], body.dome_right - 105 * s),
             (x0, c60[1] - 0.62 * c60[3], 0.59 * h),
             (x0 + 0.6 * c62[2], c62[1], body.dome_left - 80 * s),
             (x0 + 0.7 * c54[2], c54[1] + 0.1 * c54[3], 0.555 * h),
             (x0 + 0.35 * c51[2], c51[1] - 0.2 * c51[3], 0.515 * h),
             (x0, c51[1] + 0.45 * c51[3], 0.5 * h),
             (x0, float(body.spine(0.56 * h)[0]) + 10 * s, 0.475 * h)]
    colon = [_jitter(body, rng, p) for p in colon]
    radius = np.array([28, 24, 22, 22, 22, 20, 18, 18, 16]) * s * rng.uniform(0.85, 1.15)
    paint_tube(canvas, colon, ((radius, BOWEL, ABDOMINAL_CAVITY),))
    region = canvas.region(BOWEL)
    if region is not None:
        gas = Waves(rng, 45 * s, 5)(*canvas.coords(region)) > 1.05
        canvas.paint(region, gas, GAS, over=(BOWEL,))


def _paint_upper_abdomen(body: Body, canvas: Canvas, rng: np.random.Generator) -> None:
    """Liver under the right dome, with a left lobe; spleen and stomach under the left dome."""
    h, s = body.height, body.s
    u_liver = body.dome_right - 62 * s
    ccx, ccy, ca, cb = _cavity_at(body, u_liver / h)
    size = rng.uniform(0.88, 1.15)
    liver = Blob((ccx - 0.3 * ca, ccy + 0.02 * cb, u_liver), np.array([0.78 * ca, 0.9 * cb, 90 * s]) * size,
                  rotation_matrix(yaw=math.radians(rng.uniform(-10, 10))), Waves(rng, 160 * s, 4), 0.1)
    liver.paint(canvas, LIVER, over=ABDOMINAL_CAVITY)
    Blob((ccx + 0.05 * ca, ccy - 0.5 * cb, u_liver + 20 * s), np.array([0.38 * ca, 0.32 * cb, 42 * s]) * size,
          None, Waves(rng, 120 * s, 3), 0.12).paint(canvas, LIVER, over=ABDOMINAL_CAVITY)
    u_spleen = body.dome_left - 58 * s
    ccx, ccy, ca, cb = _cavity_at(body, u_spleen / h)
    size = rng.uniform(0.8, 1.25)
    Blob((ccx + 0.66 * ca, ccy + 0.42 * cb, u_spleen), np.array([30, 55, 55]) * s * size,
         rotation_matrix(yaw=math.radians(35)), Waves(rng, 90 * s, 3), 0.08).paint(canvas, SPLEEN,
                                                                                    over=ABDOMINAL_CAVITY)
    stomach = (ccx + 0.3 * ca, ccy - 0.3 * cb, body.dome_left - 50 * s)
    Blob(stomach, np.array([45, 38, 55]) * s * rng.uniform(0.8, 1.2), rotation_matrix(yaw=math.radians(-20)),
          Waves(rng, 90 * s, 3), 0.1).paint(canvas, STOMACH, over=ABDOMINAL_CAVITY)
    Blob(np.add(stomach, (0, -10 * s, 28 * s)), np.array([24, 18, 14]) * s).paint(canvas, GAS, over=(STOMACH,))


def _paint_urinary_tract(body: Body, canvas: Canvas, rng: np.random.Generator) -> float:
    """Kidneys with their urine-filled pelvis, ureters down to the bladder; returns the bladder's volume (ml)."""
    h, s = body.height, body.s
    x0 = body.offset[0]
    bladder_ml = float(np.exp(rng.uniform(np.log(30), np.log(650))))
    r = (3 * bladder_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    bladder_semi = np.array([1.15, 0.9, 0.95]) * r * rng.uniform(0.9, 1.1, 3)
    bladder_semi /= np.prod(bladder_semi / r) ** (1 / 3)  # keep the drawn volume
    _, cy5, _, b5, _, _ = (float(v) for v in body.trunk(0.5 * h))
    bladder = (x0, cy5 - 0.35 * b5 + 0.3 * (r - 40), 0.488 * h + 0.85 * bladder_semi[2])
    for side, t in ((1, 0.628), (-1, 0.613)):
        ys, _ = body.spine(t * h)
        kidney = np.array([x0 + side * 64 * s, float(ys) - 4 * s, t * h])
        rot = rotation_matrix(yaw=math.radians(side * rng.uniform(20, 40)),
                              roll=math.radians(side * rng.uniform(-18, -8)))
        size = rng.uniform(0.9, 1.1) * s
        Blob(kidney, np.array([26, 22, 55]) * size, rot, Waves(rng, 80 * s, 3), 0.06).paint(canvas, KIDNEY,
                                                                                            RETROPERITONEUM)
        pelvis = kidney + rot @ np.array([-side * 13, -6, -4]) * size
        Blob(pelvis, np.array([10, 8, 18]) * size, rot, Waves(rng, 30 * s, 3), 0.2).paint(canvas, URINE, (KIDNEY,))
        ys58, _ = body.spine(0.58 * h)
        ureter = [pelvis + np.array([-side * 12 * s, -4 * s, -10 * s]), (x0 + side * 42 * s, float(ys58) - 14 * s,
                                                                           0.58 * h),
                  (x0 + side * 52 * s, float(body.spine(0.54 * h)[0]) - 22 * s, 0.54 * h),
                  (x0 + side * 42 * s, cy5 + 0.15 * b5, 0.51 * h),
                  (x0 + side * 0.35 * bladder_semi[0], bladder[1] + 0.7 * bladder_semi[1], bladder[2] -
                   0.3 * bladder_semi[2])]
        ureter = [_jitter(body, rng, p, 5.0) for p in ureter]
        radius = rng.uniform(2.5, 4.0) * s  # drawn after the points' jitter: the order of the random draws
        paint_tube(canvas, ureter, ((radius, URINE, RETROPERITONEUM),))
    Blob(bladder, bladder_semi, None, Waves(rng, 3 * r, 3), 0.05).paint(canvas, BLADDER, over=RETROPERITONEUM)
    return bladder_ml

