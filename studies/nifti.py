"""NIfTI-1 and NIfTI-2 headers read by hand (SimpleITK reads the voxels): the bytes a single-file header
announces, its qform and sform, and the check that the two agree and that the sform is a rotation of the
voxel sizes. studies.readers.check_nifti applies them to a file."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import InputError, shown
from model.geometry import DIRECTION_TOLERANCE, orthonormality_error

# The magic of a single-file NIfTI: "ni1"/"ni2" (and Analyze headers) keep their voxels in another file.
_NIFTI1_MAGIC, _NIFTI2_MAGIC = b"n+1\0", b"n+2\0\r\n\x1a\n"


def nifti_payload_bytes(header: bytes, path: Path, role: str) -> int:
    """Header plus voxel bytes that a single-file NIfTI-1 or NIfTI-2 header announces; anything else (no NIfTI
    header, a pair header whose voxels are in a .img file, an impossible offset or size) is refused."""
    for endian in "<>":
        size = struct.unpack(f"{endian}i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348 and header[344:348] == _NIFTI1_MAGIC:
            dims = struct.unpack(f"{endian}8h", header[40:56])
            bitpix = struct.unpack(f"{endian}h", header[72:74])[0]
            offset = struct.unpack(f"{endian}f", header[108:112])[0]
        elif size == 540 and len(header) >= 540 and header[4:12] == _NIFTI2_MAGIC:
            bitpix = struct.unpack(f"{endian}h", header[14:16])[0]
            dims = struct.unpack(f"{endian}8q", header[16:80])
            offset = struct.unpack(f"{endian}q", header[168:176])[0]
        else:
            continue
        if not (math.isfinite(offset) and offset >= 0 and 1 <= dims[0] <= 7 and bitpix > 0
                and all(d >= 0 for d in dims[1 : dims[0] + 1])):
            raise InputError(f"{shown(path)}: invalid NIfTI header (vox_offset {offset}, dim {list(dims)}, "
                             f"bitpix {bitpix})")
        voxels = math.prod(max(d, 1) for d in dims[1 : dims[0] + 1])
        return max(int(offset), size) + voxels * bitpix // 8
    raise InputError(f"{shown(path)}: unreadable or truncated {role} image (not a single-file NIfTI-1 or NIfTI-2 "
                     "header)")


# A NIfTI header may give its grid twice: the qform (a rotation, pixdim and an offset) and the sform (a 3x4 matrix);
# ITK takes the sform, other readers the qform. Both set (code > 0), they must place every corner of the grid
# within this distance (mm) of each other: a quarter of the finest plausible voxel (studies.checks), and far above
# float32 rounding of either (1e-4 mm at 1 m).
NIFTI_TRANSFORMS_AGREE_MM = 0.1


@dataclass(frozen=True)
class NiftiTransforms:
    """The grid a NIfTI-1 or NIfTI-2 header gives, both ways (voxel index to RAS mm, 3x4 matrices)."""

    dims: tuple[int, int, int]
    pixdim: tuple[float, float, float]
    qform_code: int
    sform_code: int
    qform: np.ndarray
    sform: np.ndarray


def _quaternion_matrix(b: float, c: float, d: float, qfac: float, pixdim: tuple[float, ...]) -> np.ndarray:
    """The qform's 3x3 part as nifti1_io's nifti_quatern_to_mat44 computes it."""
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:  # b, c, d normalised, a 180-degree rotation
        norm = math.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b / norm, c / norm, d / norm
    else:
        a = math.sqrt(a)
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    scale = np.array([v if v > 0 else 1.0 for v in pixdim])
    scale[2] *= -1.0 if qfac < 0 else 1.0
    return rotation * scale


def nifti_transforms(header: bytes) -> NiftiTransforms | None:
    """The qform and sform of a single-file NIfTI-1 or NIfTI-2 header (None for anything else)."""
    for endian in "<>":
        size = struct.unpack(f"{endian}i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348 and header[344:348] == _NIFTI1_MAGIC:
            dims = struct.unpack(f"{endian}8h", header[40:56])
            pixdim = struct.unpack(f"{endian}8f", header[76:108])
            codes = struct.unpack(f"{endian}2h", header[252:256])
            quatern = struct.unpack(f"{endian}6f", header[256:280])
            srows = struct.unpack(f"{endian}12f", header[280:328])
        elif size == 540 and len(header) >= 540 and header[4:12] == _NIFTI2_MAGIC:
            dims = struct.unpack(f"{endian}8q", header[16:80])
            pixdim = struct.unpack(f"{endian}8d", header[104:168])
            codes = struct.unpack(f"{endian}2i", header[344:352])
            quatern = struct.unpack(f"{endian}6d", header[352:400])
            srows = struct.unpack(f"{endian}12d", header[400:496])
        else:
            continue
        with np.errstate(all="ignore"):
            qform = np.column_stack([_quaternion_matrix(*quatern[:3], pixdim[0], pixdim[1:4]), quatern[3:]])
        return NiftiTransforms(dims=tuple(max(int(d), 1) for d in dims[1:4]), pixdim=tuple(pixdim[1:4]),
                               qform_code=codes[0], sform_code=codes[1], qform=qform,
                               sform=np.array(srows, dtype=float).reshape(3, 4))
    return None


def check_nifti_transforms(transforms: NiftiTransforms, path: Path, role: str) -> None:
    """Refuse a header whose sform is no rotation of its voxel sizes (a shear or a scale, which ITK reads
    otherwise or not at all) and one whose qform and sform, both set, place the grid differently: ITK takes
    the sform, other readers the qform, and a mask written with one of them lies elsewhere for the other."""
    sizes = np.array(transforms.pixdim, dtype=float)
    if transforms.sform_code > 0 and np.all(np.isfinite(sizes) & (sizes > 0)):
        error = orthonormality_error(transforms.sform[:, :3] / sizes)
        if not error <= DIRECTION_TOLERANCE:
            raise InputError(f"{shown(path)}: {role} NIfTI sform (code {transforms.sform_code}) "
                             f"{np.round(transforms.sform, 4).tolist()} is not a rotation of its voxel sizes "
                             f"{sizes.tolist()} mm (off by {error:.3g}, more than {DIRECTION_TOLERANCE:g}): a shear "
                             "or a scale is no patient orientation")
    if transforms.qform_code <= 0 or transforms.sform_code <= 0:
        return  # one transform, or none (Analyze's orientation): nothing to disagree
    corners = np.array([[i, j, k, 1.0] for i in (0, transforms.dims[0] - 1) for j in (0, transforms.dims[1] - 1)
                        for k in (0, transforms.dims[2] - 1)])
    with np.errstate(all="ignore"):
        apart = float(np.max(np.linalg.norm(corners @ transforms.qform.T - corners @ transforms.sform.T, axis=1)))
    if not apart <= NIFTI_TRANSFORMS_AGREE_MM:
        raise InputError(f"{shown(path)}: {role} NIfTI qform (code {transforms.qform_code}, origin "
                         f"{np.round(transforms.qform[:, 3], 2).tolist()}) and sform (code {transforms.sform_code}, "
                         f"origin {np.round(transforms.sform[:, 3], 2).tolist()}) place the image up to {apart:.3g} "
                         f"mm apart (more than {NIFTI_TRANSFORMS_AGREE_MM:g}): readers that take one or the other "
                         "disagree; set both alike or one code to 0")
