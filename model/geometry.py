"""Image reading and physical-space geometry (SimpleITK): grids, overlap, resampling."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.errors import InputError
from model.files import atomic_target

CT_FILL_HU = -1024.0
IMAGE_SUFFIXES = (".mha", ".nii.gz", ".nii")


def image_stem(path: Path) -> str:
    """File name without its image suffix: the case name (grand-challenge: the uuid)."""
    name = Path(path).name
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.endswith(s)), name)


def _nifti_payload_bytes(header: bytes) -> int | None:
    """Header plus voxel bytes that a NIfTI-1 or NIfTI-2 header announces; None if not NIfTI."""
    for endian in "<>":
        size = struct.unpack(f"{endian}i", header[:4])[0]
        if size == 348:
            dims = struct.unpack(f"{endian}8h", header[40:56])
            bitpix = struct.unpack(f"{endian}h", header[72:74])[0]
            offset = int(struct.unpack(f"{endian}f", header[108:112])[0])
        elif size == 540:
            bitpix = struct.unpack(f"{endian}h", header[14:16])[0]
            dims = struct.unpack(f"{endian}8q", header[16:80])
            offset = struct.unpack(f"{endian}q", header[168:176])[0]
        else:
            continue
        voxels = int(np.prod([max(d, 1) for d in dims[1 : dims[0] + 1]], dtype=np.int64))
        return max(offset, size) + voxels * bitpix // 8
    return None


def _gzip_stream_complete(path: Path) -> bool:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            decompressor.decompress(block, 0)
            if decompressor.eof:
                return True
    return decompressor.eof


def check_gzip_nifti_complete(path: Path) -> None:
    """SimpleITK zero-fills a truncated .nii.gz without a word; refuse such a file instead.

    The gzip trailer holds the uncompressed size: when it matches what the header announces the file is
    whole (a cheap check); otherwise the stream is decompressed to the end to decide.
    """
    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(540)
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            trailer_size = struct.unpack("<I", handle.read(4))[0]
    except (OSError, EOFError, struct.error):
        raise InputError(f"{path}: unreadable or truncated gzip file") from None
    expected = _nifti_payload_bytes(header)
    if expected is not None and expected % (1 << 32) == trailer_size:
        return
    if not _gzip_stream_complete(path):
        raise InputError(f"{path}: truncated file (the gzip stream ends early)")


@contextlib.contextmanager
def _captured_native_stderr() -> Iterator[list[str]]:
    """ITK's readers print to the C-level stderr; keep that off the terminal so errors stay one line."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no usable file descriptor 2 (embedded interpreters)
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def _check_complete(path: Path, role: str) -> None:
    """Refuse missing files, and truncated NIfTI that SimpleITK would read without a word."""
    if not path.is_file():
        raise InputError(f"{path}: {role} file missing")
    if path.name.endswith(".nii.gz"):
        check_gzip_nifti_complete(path)
    elif path.name.endswith(".nii"):
        with open(path, "rb") as handle:
            expected = _nifti_payload_bytes(handle.read(540))
        if expected is not None and path.stat().st_size < expected:
            raise InputError(f"{path}: truncated file ({path.stat().st_size} of {expected} bytes)")


def _check_volume(image: sitk.Image, path: Path, role: str) -> sitk.Image:
    if image.GetDimension() != 3:
        raise InputError(f"{path}: {role} image is {image.GetDimension()}D, expected 3D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: {role} image has {image.GetNumberOfComponentsPerPixel()} components "
                         "per voxel, expected a scalar image")
    if min(image.GetSize()) < 1 or np.prod(image.GetSize()) == 0:
        raise InputError(f"{path}: {role} image is empty (size {image.GetSize()})")
    return image


def read_images(requests: list[tuple[Path, str, int]]) -> list[sitk.Image]:
    """Read several (path, role, pixel type) at once, one thread each (SimpleITK releases the GIL while it
    decodes, so a PET and a CT read together take about the time of the PET alone). Each must be a 3D
    scalar image, else InputError names the first bad file and the problem."""
    paths = [Path(path) for path, _, _ in requests]
    for path, (_, role, _) in zip(paths, requests, strict=True):
        _check_complete(path, role)
    # One capture around all reads: redirecting file descriptor 2 is process-wide, not per thread.
    with _captured_native_stderr() as native, ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(sitk.ReadImage, str(path), pixel_type)
                   for path, (_, _, pixel_type) in zip(paths, requests, strict=True)]
        outcomes = [future.exception() or future.result() for future in futures]
    images = []
    for path, (_, role, _), outcome in zip(paths, requests, outcomes, strict=True):
        if isinstance(outcome, RuntimeError):
            details = [line for line in native if str(path) in line or "ideal" in line]
            reason = details[-1].strip() if details else "not a readable image"
            raise InputError(f"{path}: unreadable or truncated {role} image ({reason[:160]})")
        if isinstance(outcome, BaseException):
            raise outcome
        images.append(_check_volume(outcome, path, role))
    return images


def read_image(path: Path, role: str, pixel_type: int = sitk.sitkUnknown) -> sitk.Image:
    """Read a 3D scalar image or raise InputError naming the file and the problem."""
    return read_images([(Path(path), role, pixel_type)])[0]


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write beside the target and rename, so no half-written mask is ever where a result is expected."""
    path = Path(path)
    with atomic_target(path, suffix="".join(path.suffixes) or ".mha") as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-3) -> bool:
    """True when both images share size, spacing, origin and direction (within ``tolerance`` mm)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (min corner, max corner) of the image's voxel extents."""
    size = np.array(image.GetSize(), dtype=float)
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([c - 0.5 for c in corner])
        for corner in itertools.product(*[(0.0, s) for s in size])
    ]
    points = np.array(corners)
    return points.min(axis=0), points.max(axis=0)


def overlap_fraction(reference: sitk.Image, other: sitk.Image) -> float:
    """Fraction of the reference's bounding box that the other image's bounding box covers."""
    ref_lo, ref_hi = physical_bounds(reference)
    oth_lo, oth_hi = physical_bounds(other)
    inter = np.clip(np.minimum(ref_hi, oth_hi) - np.maximum(ref_lo, oth_lo), 0, None)
    return float(np.prod(inter) / max(np.prod(ref_hi - ref_lo), 1e-12))


def resample_onto(image: sitk.Image, reference: sitk.Image, default: float,
                  interpolator: int = sitk.sitkLinear, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """Resample ``image`` onto the grid of ``reference``."""
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, pixel_type)


def inplane_grid(image: sitk.Image, spacing_xy: tuple[float, float]) -> sitk.Image:
    """An empty image covering the same physical extent with in-plane spacing ``spacing_xy`` (z kept)."""
    old_spacing = np.array(image.GetSpacing())
    new_spacing = np.array([spacing_xy[0], spacing_xy[1], old_spacing[2]])
    old_size = np.array(image.GetSize())
    new_size = np.maximum(np.round(old_size * old_spacing / new_spacing), 1).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Keep the outer edge of the first voxel where it was.
    shift = direction @ ((new_spacing - old_spacing) / 2.0)
    grid = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in new_spacing])
    grid.SetOrigin([float(o) for o in np.array(image.GetOrigin()) + shift])
    grid.SetDirection(image.GetDirection())
    return grid


def needs_inplane_resampling(image: sitk.Image, spacing_xy: tuple[float, float],
                             tolerance: float = 0.10) -> bool:
    """True when the in-plane spacing is more than ``tolerance`` (relative) away from ``spacing_xy``."""
    current = np.array(image.GetSpacing()[:2])
    target = np.array(spacing_xy)
    return bool(np.any(np.abs(current - target) > tolerance * target))
