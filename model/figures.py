"""PET maximum-intensity projections as nuclear medicine reads them: inverted grey, SUV 0 to 10, patient upright
(head at the top), coronal seen from the front (patient's right on the left) and sagittal facing left, with
lesion outlines. The one renderer of the project: the report picture, train evaluate's figures, the phantom
grid. matplotlib's object API on the Agg canvas: no display, no global backend switch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from model.files import atomic_target
from model.geometry import resample_onto, same_grid

SUV_WINDOW = (0.0, 10.0)  # the usual display window of FDG MIPs
VIEWS = ("coronal", "sagittal")
PANEL_HEIGHT_IN = 6.0
DPI = 100


@dataclass(frozen=True)
class Outline:
    """A mask drawn as the outline of its projection."""

    mask: sitk.Image
    colour: str
    label: str = ""


class Upright:
    """An image reoriented once so that x runs to the patient's left, y posterior and z superior."""

    def __init__(self, image: sitk.Image):
        oriented = sitk.DICOMOrient(image, "LPS")
        self.array = sitk.GetArrayFromImage(oriented)  # a copy: a view would die with ``oriented``
        self.spacing = oriented.GetSpacing()

    def projection(self, view: str) -> tuple[np.ndarray, float]:
        """The maximum-intensity projection of ``view`` (rows: head to feet) and its display aspect (row
        height over column width)."""
        sx, sy, sz = self.spacing
        if view == "coronal":  # along y, seen from the front: columns from the patient's right to left
            return self.array.max(axis=1)[::-1], sz / sx
        if view == "sagittal":  # along x: columns from anterior to posterior, the patient facing left
            return self.array.max(axis=2)[::-1], sz / sy
        raise ValueError(f"view {view!r}: expected one of {VIEWS}")

    def size_mm(self, view: str) -> tuple[float, float]:
        """(width, height) in mm of a view's projection."""
        depth, rows, columns = self.array.shape
        sx, sy, sz = self.spacing
        return (columns * sx if view == "coronal" else rows * sy), depth * sz


def _panel(ax, suv: Upright, view: str, outlines: Sequence[tuple[Upright, str]], vmax: float) -> None:
    mip, aspect = suv.projection(view)
    ax.imshow(mip, cmap="gray_r", vmin=SUV_WINDOW[0], vmax=vmax, aspect=aspect, interpolation="bilinear")
    for mask, colour in outlines:
        drawn, _ = mask.projection(view)
        if drawn.any():
            ax.contour((drawn > 0).astype(np.uint8), levels=[0.5], colors=colour, linewidths=0.8)
    ax.set_axis_off()


def _on_grid(mask: sitk.Image, suv: sitk.Image) -> sitk.Image:
    """The mask on the PET's grid (nearest neighbour), so that both project onto the same pixels."""
    if same_grid(mask, suv):
        return mask
    return resample_onto(mask, suv, 0, sitk.sitkNearestNeighbor, sitk.sitkUInt8)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_target(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def mip_figure(path: Path, suv: sitk.Image, outlines: Sequence[Outline] = (), title: str = "",
               views: Sequence[str] = VIEWS, vmax: float = SUV_WINDOW[1]) -> None:
    """A PNG of the PET's MIPs side by side (each as wide as the body is in that view), with the outlines
    of ``outlines`` in their colours, a legend naming them when they have labels, and ``title``."""
    upright = Upright(suv)
    drawn = [(Upright(_on_grid(o.mask, suv)), o.colour) for o in outlines]
    widths = [upright.size_mm(view)[0] for view in views]
    height_mm = upright.size_mm(views[0])[1]
    width_in = PANEL_HEIGHT_IN * sum(widths) / height_mm
    title_lines = title.count("\n") + 1 if title else 0
    fig = Figure(figsize=(max(width_in, 3.0), PANEL_HEIGHT_IN + 0.25 * title_lines + 0.2))
    axes = fig.subplots(1, len(views), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    for ax, view in zip(axes, views, strict=True):
        _panel(ax, upright, view, drawn, vmax)
    labelled = [o for o in outlines if o.label]
    if labelled:
        fig.legend([Line2D([], [], color=o.colour) for o in labelled], [o.label for o in labelled],
                   loc="lower center", ncol=len(labelled), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def case_figure(path: Path, suv: sitk.Image, mask: sitk.Image, case: str, tmtv_ml: float, lesion_count: int,
                colour: str = "red") -> None:
    """The report's picture: coronal and sagittal MIPs, the lesions outlined, TMTV and lesion count on top."""
    title = f"{case}\nTMTV {tmtv_ml:.1f} ml, {lesion_count} lesion{'s' if lesion_count != 1 else ''}"
    mip_figure(path, suv, [Outline(mask, colour)], title)


def mip_grid(path: Path, panels: Sequence[tuple[sitk.Image, sitk.Image | None, str]], columns: int = 5,
             colour: str = "red", vmax: float = SUV_WINDOW[1]) -> None:
    """A PNG grid of coronal MIPs: one panel per (SUV image, mask or None, label)."""
    if not panels:
        raise ValueError("no panels to draw")
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    shown = [(Upright(suv), Upright(_on_grid(mask, suv)) if mask is not None else None, label)
             for suv, mask, label in panels]
    aspect = max(h / w for w, h in (suv.size_mm("coronal") for suv, _, _ in shown))
    panel_width = 2.2
    fig = Figure(figsize=(panel_width * columns, (panel_width * aspect + 0.3) * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (suv, mask, label) in zip(axes, shown, strict=False):
        _panel(ax, suv, "coronal", [(mask, colour)] if mask is not None else [], vmax)
        ax.set_title(label, fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    _save(fig, path)
