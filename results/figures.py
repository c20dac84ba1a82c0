"""PET maximum-intensity projections as nuclear medicine reads them: inverted grey, SUV 0 to 10, patient upright
(head at the top), coronal seen from the front (patient's right on the left) and sagittal facing left, with
lesion outlines. The one renderer of the project: the report picture, train evaluate's figures, the phantom
grid. matplotlib's object API on the Agg canvas: no display, no global backend switch.

What a reader needs on every picture: the panels named, orientation letters (R/L, H/F, A/P) placed from the
image's direction matrix (the projections are taken along the patient's axes of the stored array, so a
flipped or permuted storage still shows the patient's left on the side marked L), the SUV window as a small
grey scale, lesions a reader can find (outlines, and a ring around any lesion drawn smaller than
``MIN_DRAWN_PX``), and the lesion numbers of lesions.csv beside the largest lesions.

Size, time and memory are bounded whatever the study: the projections are computed on the image's own
buffer (no reoriented copy of the volume), then max-pooled down to at most the panel's pixels (a one-voxel
lesion keeps its pixel), and the panels are laid out in pixels with a bounded width; an extreme shape
(3000 x 3000 x 2 voxels) is stretched to a readable panel and says so ("not to scale").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from model.errors import one_line
from model.files import atomic_target
from model.geometry import resample_onto, same_grid

SUV_WINDOW = (0.0, 10.0)  # the usual display window of FDG MIPs
VIEWS = ("coronal", "sagittal")
DPI = 100
PANEL_HEIGHT_PX = 560  # a whole body at a readable size on a laptop screen
MAX_PANELS_WIDTH_PX = 1200  # the panels together; the picture is at most about 1400 x 700 pixels
ASPECT_RANGE = (0.12, 3.0)  # displayed width / height of a panel: beyond it the panel is stretched
MIN_DRAWN_PX = 12  # a lesion drawn smaller than this (either way) also gets a ring
RING_PX = 18  # the ring's diameter
NUMBERED = 10  # lesion numbers (lesions.csv's ids) for the largest lesions
# Letters at the (left, right) edges of each view; the rows of both run head (H) to feet (F).
EDGE_LETTERS = {"coronal": ("R", "L"), "sagittal": ("A", "P")}
# Pixel margins around the panels: title, panel names and letters above, letters and legend below.
TOP_PX, BOTTOM_PX, SIDE_PX, GAP_PX, SCALE_PX = 78, 46, 28, 44, 96


@dataclass(frozen=True)
class Outline:
    """A mask drawn as the outline of its projection."""

    mask: sitk.Image
    colour: str
    label: str = ""


@dataclass(frozen=True)
class LesionMark:
    """A lesion number to write beside a lesion: lesions.csv's id and its centroid (patient coordinates, LPS)."""

    id: int
    centroid_mm: tuple[float, float, float]


@dataclass
class Rendered:
    """Where things landed in the PNG, in pixels from its top-left corner (for tests and callers)."""

    size_px: tuple[int, int]  # (width, height)
    panels: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # view: x0, y0, x1, y1
    letters: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # view: letter: (x, y)
    stretched: dict[str, bool] = field(default_factory=dict)
    title: str = ""  # the text on top, line by line as drawn


def _patient_axes(direction: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For each index axis (i, j, k): the patient axis it runs along (0 x: right to left, 1 y: anterior to
    posterior, 2 z: feet to head, DICOM LPS) and its sign. The permutation whose axes agree best with the
    direction matrix, so that an oblique acquisition is read as the nearest upright one."""
    best = max(itertools.permutations(range(3)),
               key=lambda perm: sum(abs(direction[perm[a], a]) for a in range(3)))
    signs = tuple(1 if direction[best[a], a] >= 0 else -1 for a in range(3))
    return best, signs


class Projector:
    """Maximum-intensity projections of an image in the patient's orientation, read from the image's own
    buffer: only 2D results are allocated, whatever the volume's size."""

    def __init__(self, image: sitk.Image):
        self.image = image
        self.patient_axis, self.sign = _patient_axes(np.array(image.GetDirection()).reshape(3, 3))
        self.index_axis = {p: a for a, p in enumerate(self.patient_axis)}  # patient axis -> index axis
        self.spacing = image.GetSpacing()
        self.size = image.GetSize()

    def axes(self, view: str) -> tuple[int, int, int]:
        """Index axes (projected, rows, columns) of a view: rows along z, columns along x (coronal) or y."""
        if view not in VIEWS:
            raise ValueError(f"view {view!r}: expected one of {VIEWS}")
        depth, column = (1, 0) if view == "coronal" else (0, 1)
        return self.index_axis[depth], self.index_axis[2], self.index_axis[column]

    def shape(self, view: str) -> tuple[int, int]:
        _, rows, columns = self.axes(view)
        return self.size[rows], self.size[columns]

    def size_mm(self, view: str) -> tuple[float, float]:
        """(width, height) in mm of a view's projection."""
        _, rows, columns = self.axes(view)
        return self.size[columns] * self.spacing[columns], self.size[rows] * self.spacing[rows]

    def projection(self, view: str, pool: tuple[int, int] = (1, 1)) -> np.ndarray:
        """The MIP of ``view``: rows head to feet, columns from the patient's right to left (coronal, seen
        from the front) or anterior to posterior (sagittal, facing left); max-pooled by ``pool`` (rows,
        columns) so that no hot voxel is lost."""
        depth, rows, columns = self.axes(view)
        array = sitk.GetArrayViewFromImage(self.image)  # (k, j, i): numpy axis of index axis a is 2 - a
        mip = array.max(axis=2 - depth)
        remaining = [a for a in (2, 1, 0) if a != depth]  # index axes of mip's numpy axes, in order
        mip = np.transpose(mip, (remaining.index(rows), remaining.index(columns)))
        if self.sign[rows] > 0:  # z grows to the head: the head row first
            mip = mip[::-1]
        if self.sign[columns] < 0:  # x grows to the patient's left, y to posterior
            mip = mip[:, ::-1]
        return _max_pool(mip, pool)

    def view_point(self, view: str, point_mm: Sequence[float], pool: tuple[int, int] = (1, 1)) -> tuple[float, float]:
        """(column, row) of a patient point in ``projection(view, pool)``'s pixels."""
        index = self.image.TransformPhysicalPointToContinuousIndex([float(v) for v in point_mm])
        _, rows, columns = self.axes(view)
        row = index[rows] if self.sign[rows] < 0 else self.size[rows] - 1 - index[rows]
        column = index[columns] if self.sign[columns] > 0 else self.size[columns] - 1 - index[columns]
        return (column + 0.5) / pool[1] - 0.5, (row + 0.5) / pool[0] - 0.5


def _max_pool(image: np.ndarray, pool: tuple[int, int]) -> np.ndarray:
    if pool == (1, 1):
        return np.ascontiguousarray(image)
    rows, columns = image.shape
    padded_rows, padded_columns = -(-rows // pool[0]) * pool[0], -(-columns // pool[1]) * pool[1]
    fill = image.min() if image.size else 0
    padded = np.full((padded_rows, padded_columns), fill, dtype=image.dtype)
    padded[:rows, :columns] = image
    return padded.reshape(padded_rows // pool[0], pool[0], padded_columns // pool[1], pool[1]).max(axis=(1, 3))


def _pool_for(shape: tuple[int, int], box_px: tuple[float, float]) -> tuple[int, int]:
    """Pooling factors (rows, columns) that bring a projection down to at most the panel's pixels."""
    return (max(1, int(np.ceil(shape[0] / max(box_px[1], 1.0)))), max(1, int(np.ceil(shape[1] / max(box_px[0], 1.0)))))


def _on_grid(mask: sitk.Image, suv: sitk.Image) -> sitk.Image:
    """The mask on the PET's grid (nearest neighbour), so that both project onto the same pixels."""
    if same_grid(mask, suv):
        return mask
    return resample_onto(mask, suv, 0, sitk.sitkNearestNeighbor, sitk.sitkUInt8)


def _outline(ax: Axes, drawn: np.ndarray, colour: str, px_per_pixel: tuple[float, float]) -> None:
    """The outline of a projected mask, and a ring around every part of it drawn smaller than MIN_DRAWN_PX."""
    if not drawn.any():
        return
    ax.contour(drawn.astype(np.uint8), levels=[0.5], colors=colour, linewidths=1.0)
    labels, _ = ndimage.label(drawn, structure=np.ones((3, 3)))
    for found in ndimage.find_objects(labels):
        rows, columns = found
        height = (rows.stop - rows.start) * px_per_pixel[0]
        width = (columns.stop - columns.start) * px_per_pixel[1]
        if max(height, width) < MIN_DRAWN_PX:
            ax.plot([(columns.start + columns.stop - 1) / 2], [(rows.start + rows.stop - 1) / 2], marker="o",
                    markersize=RING_PX * 72 / DPI, markerfacecolor="none", markeredgecolor=colour,
                    markeredgewidth=1.3)


def _numbers(ax: Axes, projector: Projector, view: str, pool: tuple[int, int], marks: Sequence[LesionMark],
             colour: str) -> None:
    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for mark in marks[:NUMBERED]:
        column, row = projector.view_point(view, mark.centroid_mm, pool)
        ax.annotate(str(mark.id), (column, row), xytext=(7, 5), textcoords="offset pixels", fontsize=8,
                    color=colour, fontweight="bold", path_effects=halo, annotation_clip=True)


def _panel(ax: Axes, projector: Projector, view: str, box_px: tuple[float, float],
           outlines: Sequence[tuple[Projector, str]], vmax: float, marks: Sequence[LesionMark] = (),
           mark_colour: str = "red", keep_aspect: bool = False):
    """Draw one view into ``ax``, whose size on the canvas is ``box_px`` (width, height); returns the image
    artist (for the grey scale). ``keep_aspect``: the axes shrink to the body's proportions (a grid of equal
    boxes); else the box already has them (``_layout``)."""
    pool = _pool_for(projector.shape(view), box_px)
    mip = projector.projection(view, pool)
    _, rows, columns = projector.axes(view)
    aspect = (projector.spacing[rows] * pool[0]) / (projector.spacing[columns] * pool[1]) if keep_aspect else "auto"
    shown = ax.imshow(mip, cmap="gray_r", vmin=SUV_WINDOW[0], vmax=vmax, aspect=aspect, interpolation="bilinear")
    px_per_pixel = (box_px[1] / mip.shape[0], box_px[0] / mip.shape[1])
    for mask, colour in outlines:
        _outline(ax, mask.projection(view, pool) > 0, colour, px_per_pixel)
    _numbers(ax, projector, view, pool, marks, mark_colour)
    ax.set_xlim(-0.5, mip.shape[1] - 0.5)
    ax.set_ylim(mip.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.75")
    return shown


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_target(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


@dataclass(frozen=True)
class _Layout:
    width_px: int
    height_px: int
    boxes: dict[str, tuple[int, int, int, int]]  # view: (x0, y0 from the top, width, height) in pixels
    stretched: dict[str, bool]


def _layout(projector: Projector, views: Sequence[str], title_lines: int) -> _Layout:
    """Panels of one height (the rows of every view run head to feet), each as wide as the body is in that
    view, within MAX_PANELS_WIDTH_PX; an aspect beyond ASPECT_RANGE is clamped (the panel is stretched)."""
    aspects, stretched = {}, {}
    for view in views:
        width_mm, height_mm = projector.size_mm(view)
        raw = width_mm / height_mm
        aspects[view] = float(np.clip(raw, *ASPECT_RANGE))
        stretched[view] = not np.isclose(aspects[view], raw)
    height = int(min(PANEL_HEIGHT_PX, MAX_PANELS_WIDTH_PX / sum(aspects.values())))
    top = TOP_PX + 14 * max(title_lines - 1, 0)
    boxes, x = {}, SIDE_PX
    for view in views:
        width = max(round(height * aspects[view]), 24)
        boxes[view] = (x, top, width, height)
        x += width + GAP_PX
    width_px = max(x - GAP_PX + SCALE_PX, 520)  # room for the title
    return _Layout(width_px=width_px, height_px=top + height + BOTTOM_PX, boxes=boxes, stretched=stretched)


def _labels(fig: Figure, layout: _Layout, rendered: Rendered) -> None:
    """Panel names and orientation letters around each panel (outside it: they never hide the body)."""
    for view, (x0, y0, width, height) in layout.boxes.items():
        name = view + (" (not to scale)" if layout.stretched[view] else "")
        fig.text(x0 / layout.width_px, 1 - (y0 - 18) / layout.height_px, name, fontsize=9, ha="left",
                 va="bottom", color="0.15")
        left, right = EDGE_LETTERS[view]
        places = {left: (x0 - 9, y0 + height / 2), right: (x0 + width + 9, y0 + height / 2),
                  "H": (x0 + width / 2, y0 - 8), "F": (x0 + width / 2, y0 + height + 9)}
        for letter, (x, y) in places.items():
            fig.text(x / layout.width_px, 1 - y / layout.height_px, letter, fontsize=10, fontweight="bold",
                     ha="center", va="center", color="tab:blue")
        rendered.panels[view] = (x0, y0, x0 + width, y0 + height)
        rendered.letters[view] = places
        rendered.stretched[view] = layout.stretched[view]


def mip_figure(path: Path, suv: sitk.Image, outlines: Sequence[Outline] = (), title: str = "",
               views: Sequence[str] = VIEWS, vmax: float = SUV_WINDOW[1],
               marks: Sequence[LesionMark] = ()) -> Rendered:
    """A PNG of the PET's MIPs side by side (each as wide as the body is in that view), named and lettered,
    with the outlines of ``outlines`` in their colours (a legend names them when they have labels), lesion
    numbers ``marks`` (in the first outline's colour), the SUV window's grey scale and ``title``. Returns
    where panels and letters landed."""
    projector = Projector(suv)
    drawn = [(Projector(_on_grid(o.mask, suv)), o.colour) for o in outlines]
    layout = _layout(projector, views, title.count("\n") + 1 if title else 0)
    w, h = layout.width_px, layout.height_px
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    rendered = Rendered(size_px=(w, h), title=title)
    shown = None
    for view, (x0, y0, width, height) in layout.boxes.items():
        ax = fig.add_axes((x0 / w, 1 - (y0 + height) / h, width / w, height / h))
        shown = _panel(ax, projector, view, (width, height), drawn, vmax, marks,
                       outlines[0].colour if outlines else "red")
    _labels(fig, layout, rendered)
    x_end = max(x0 + width for x0, _, width, _ in layout.boxes.values())
    y0, height = next(iter(layout.boxes.values()))[1:4:2]
    scale = fig.add_axes(((x_end + 30) / w, 1 - (y0 + height * 0.55) / h, 12 / w, min(180, height * 0.5) / h))
    bar = fig.colorbar(shown, cax=scale, ticks=[SUV_WINDOW[0], vmax / 2, vmax])
    bar.ax.tick_params(labelsize=8)
    bar.set_label(f"SUV (window {SUV_WINDOW[0]:g}-{vmax:g})", fontsize=8)
    labelled = [o for o in outlines if o.label]
    if labelled:
        fig.legend([Line2D([], [], color=o.colour) for o in labelled], [o.label for o in labelled],
                   loc="lower center", ncol=len(labelled), fontsize=8, frameon=False)
    if title:
        fig.suptitle(_seen(title), fontsize=10, y=1 - 6 / h, va="top", parse_math=False)
    _save(fig, path)
    return rendered


def _seen(text: str) -> str:
    """A title or label as drawn: each of its lines through model.errors.one_line (a bidi override in a case
    name shown as <U+202E>, not obeyed); drawn with parse_math=False, so a '$' in a name is not TeX."""
    return "\n".join(one_line(line) for line in text.split("\n"))


def case_figure(path: Path, suv: sitk.Image, mask: sitk.Image, case: str, report, colour: str = "red",
                warning: str | None = None) -> Rendered:
    """The report's picture: coronal and sagittal MIPs, the lesions outlined and the largest numbered as in
    lesions.csv, TMTV, lesion count and SUVmax on top, and the weights' ``warning`` (a demo model's) as the
    title's last line. ``report`` is the case's ``results.report.StudyReport``."""
    marks = [LesionMark(lesion.id, lesion.centroid_mm) for lesion in report.lesions]
    title = f"{case}\n{report.picture_title()}"  # the numbers' words: results.report.QUANTITIES
    return mip_figure(path, suv, [Outline(mask, colour)], f"{title}\n{warning}" if warning else title,
                      marks=marks)


def mip_grid(path: Path, panels: Sequence[tuple[sitk.Image, sitk.Image | None, str]], columns: int = 5,
             colour: str = "red", vmax: float = SUV_WINDOW[1]) -> None:
    """A PNG grid of coronal MIPs: one panel per (SUV image, mask or None, label), R and L marked."""
    if not panels:
        raise ValueError("no panels to draw")
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    shown = [(Projector(suv), Projector(_on_grid(mask, suv)) if mask is not None else None, label)
             for suv, mask, label in panels]
    aspect = min(max(h / w for w, h in (p.size_mm("coronal") for p, _, _ in shown)), 1 / ASPECT_RANGE[0])
    panel_width = 2.2
    fig = Figure(figsize=(panel_width * columns, (panel_width * aspect + 0.6) * rows), dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    box = (panel_width * DPI * 0.85, panel_width * aspect * DPI * 0.85)
    for ax, (suv, mask, label) in zip(axes, shown, strict=False):
        _panel(ax, suv, "coronal", box, [(mask, colour)] if mask is not None else [], vmax, keep_aspect=True)
        ax.set_title(_seen(label), fontsize=7, parse_math=False)
        for x, letter in zip((0.0, 1.0), EDGE_LETTERS["coronal"], strict=True):
            ax.text(x, 0.5, letter, transform=ax.transAxes, ha="right" if x == 0 else "left", va="center",
                    fontsize=7, fontweight="bold", color="tab:blue")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    _save(fig, path)
