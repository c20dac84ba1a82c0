"""A preview of a phantom set: coronal PET MIPs with the lesions outlined (the README's grid of phantoms).
Drawn by results.figures, the project's one renderer."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from phantoms.study import Phantom

Panel = tuple[sitk.Image, sitk.Image, str]  # PET MIP, mask MIP, caption


def caption(phantom: Phantom) -> str:
    """Short lines on what a study drew, for the preview grid."""
    f = phantom.features
    count = len(phantom.lesions)
    first = phantom.diagnosis.lower().replace("_", " ")
    first += f", {count} lesion{'s' * (count != 1)}" if count else ""
    extras = ["head turned"] * (f["head_yaw_deg"] != 0) + ["brown fat"] * bool(f["brown_fat"])
    extras += ["exercise"] * bool(f["exercise"]) + ["PET/CT shift"] * (f["misregistration_mm"] > 0)
    return "\n".join([first, f"arms {f['arms']}, {f['fov']}", ", ".join(extras)])


def coronal_mip(phantom: Phantom) -> Panel:
    """The study's PET and mask projected along y, kept as one-row images (what a coronal MIP panel draws),
    with its caption."""
    pet = phantom.pet.max(axis=1, keepdims=True)
    mask = phantom.mask.max(axis=1, keepdims=True)
    images = []
    for array in (pet, mask):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(phantom.spacing)
        images.append(image)
    return images[0], images[1], caption(phantom)


def write_preview(path: Path, panels: list[Panel]) -> None:
    """The panels as a PNG grid, four to a row."""
    from results.figures import mip_grid  # matplotlib: only when a preview is asked for

    mip_grid(path, panels, columns=4)
