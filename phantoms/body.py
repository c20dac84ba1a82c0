"""The body: per-study proportions, posture and field of view drawn once, then painted on any grid."""

from __future__ import annotations

import math

import numpy as np

from phantoms.geometry import lerp

ARMS = ("down", "up", "one up")
ARMS_P = (0.35, 0.5, 0.15)

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


class Body:
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
        a = lerp(t, T_KNOTS, A_TRUNK) * s * self.frame * hips * shoulders
        b = lerp(t, T_KNOTS, B_TRUNK) * s * self.depth
        fat = lerp(t, T_KNOTS, FAT_TRUNK) * self.fat
        belly = self.belly * np.exp(-(((t - 0.585) / 0.045) ** 2))
        cy = self.table_y - lerp(t, T_KNOTS, GAP_TRUNK) * s - (b + fat + 0.5 * belly) - 1.0
        cx = np.full_like(a, self.offset[0])
        return cx, cy, a, b, fat, belly

    def cavity(self, u: np.ndarray | float) -> tuple[np.ndarray, ...]:
        cx, cy, a, b, _, _ = self.trunk(u)
        taper = lerp(self.t(u), *CAVITY_TAPER)
        return cx, cy - 0.12 * b, a * 0.84 * taper, b * 0.72 * taper

    def spine(self, u: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """y of the vertebral bodies' centre and their half-width."""
        _, cy, _, b, _, _ = self.trunk(u)
        t = self.t(u)
        return cy + lerp(t, T_KNOTS, SPINE_K) * b, lerp(t, T_KNOTS, SPINE_A) * self.s

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
        r = lerp(t, LEG_KNOTS, LEG_R) * s * (0.85 + 0.15 * self.frame) * (1 + 0.004 * (self.fat - 16))
        fat = lerp(t, LEG_KNOTS, LEG_FAT) * self.fat
        hip_a = float(self.trunk(0.49 * self.height)[2])
        x = -lerp(t, (0.0, 0.045, 0.285, 0.5), (95 * s, 85 * s, 72 * s, 0.52 * hip_a))
        y = self.table_y - 3 - (r + fat) * 1.05
        return x + self.offset[0], y, r, fat

    def arm_down(self, u: np.ndarray | float, side: int) -> tuple[np.ndarray, ...]:
        """Centre x, y, half-width, half-depth of the muscle and the fat, of an arm hanging at ``side``."""
        t = self.t(u)
        s = self.s
        a = lerp(t, ARM_KNOTS, ARM_A) * s * (0.85 + 0.15 * self.frame)
        b = lerp(t, ARM_KNOTS, ARM_B) * s * (0.85 + 0.15 * self.frame)
        fat = 0.6 * self.fat * (t > 0.49) + 0.15 * self.fat * (t <= 0.49)
        _, cy, ta, tb, tfat, _ = self.trunk(np.maximum(u, 0.47 * self.height))
        lx, _, lr, lfat = self.leg(u)
        beside_trunk = ta + tfat
        beside_leg = np.abs(lx - self.offset[0]) + lr + lfat
        reach = np.where(t >= 0.47, beside_trunk, np.maximum(beside_trunk * (t > 0.45), beside_leg))
        x = self.offset[0] + side * (reach + self.gap_arm + a + fat)
        y = cy + 0.1 * tb
        return x, y, a, b, fat

