"""The study's grid in mm, smooth random fields and noise, and the shapes painted on it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d


class Waves:
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


def rotation_matrix(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Columns = the local axes in world coordinates: yaw about u, pitch about x, roll about y (radians)."""
    cz, sz, cx, sx, cy, sy = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def axis_rotation(direction: Sequence[float]) -> np.ndarray:
    """A rotation whose first local axis points along ``direction``."""
    a = np.asarray(direction, dtype=float)
    a /= np.linalg.norm(a)
    helper = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b = np.cross(helper, a)
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)], axis=1)


class Canvas:
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
class Blob:
    """A deformed ellipsoid: centre and semi-axes in mm, rotation (columns = local axes), a wobble field."""

    centre: Sequence[float]
    semi: Sequence[float]
    rotation: np.ndarray | None = None
    wobble: Waves | None = None
    amplitude: float = 0.0

    def field(self, canvas: Canvas, pad: float = 0.0) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
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

    def paint(self, canvas: Canvas, tissue: int, over: Sequence[int] | None = None, cut: float = 1.0,
              where: Callable | None = None) -> None:
        found = self.field(canvas)
        if found is not None:
            box, q = found
            inside = q <= cut
            if where is not None:
                inside &= where(*canvas.coords(box))
            canvas.paint(box, inside, tissue, over)


def _segments(canvas: Canvas, points: np.ndarray, pad: float):
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


def paint_tube(canvas: Canvas, points: Sequence, layers: Sequence[tuple]) -> None:
    """A layered tube along a polyline. ``layers``: (radius per point or one radius, tissue, over), outer first."""
    points = np.asarray(points, dtype=float)
    radii = [np.broadcast_to(np.asarray(r, dtype=float), (len(points),)) for r, _, _ in layers]
    for box, dist, t, i in _segments(canvas, points, float(max(r.max() for r in radii))):
        for radius, (_, tissue, over) in zip(radii, layers, strict=True):
            ra, rb = np.float32(radius[i]), np.float32(radius[i + 1])
            canvas.paint(box, dist <= ra + t * (rb - ra), tissue, over)



def lerp(t: np.ndarray | float, knots: Sequence[float], values: Sequence[float]) -> np.ndarray:
    return np.interp(t, knots, values)


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                  spacing: tuple[float, float, float]) -> np.ndarray:
    """Gaussian-filtered white noise of unit variance (voxel axes z, y, x)."""
    sigma = [sigma_mm / spacing[2], sigma_mm / spacing[1], sigma_mm / spacing[0]]
    noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=3.0)
    return noise / np.float32(filtered_sd(sigma))


def filtered_sd(sigma: Sequence[float]) -> float:
    """SD of unit white noise after scipy's Gaussian filter of these sigmas (voxels; truncate 3)."""
    sd = 1.0
    for s in sigma:
        delta = np.zeros(int(8 * max(s, 0.5)) * 2 + 3)
        delta[len(delta) // 2] = 1.0
        kernel = gaussian_filter1d(delta, s, truncate=3.0) if s > 0 else delta
        sd *= math.sqrt(float((kernel ** 2).sum()))
    return sd
