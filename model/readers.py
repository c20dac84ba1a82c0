"""Reading and writing images (SimpleITK) so that a bad file is one line that names it, never garbage."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import stat
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.errors import InputError, WriteError, one_line, reason_of, shown
from model.files import atomic_target

IMAGE_SUFFIXES = (".mha", ".nii.gz", ".nii")


def image_stem(path: Path) -> str:
    """File name without its image suffix: the case name (grand-challenge: the uuid)."""
    name = Path(path).name
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.endswith(s)), name)


def is_image_name(name: str) -> bool:
    """An image file this project reads: an image suffix, and not hidden (a dot first: macOS AppleDouble
    ``._case.mha`` companions, editors' and our own temporary files)."""
    return name.endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def require_utf8_path(path: Path, what: str) -> None:
    """SimpleITK aborts the whole process (SIGABRT) on a path that is not UTF-8; refuse such a name first."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{shown(path)}: {what} name is not valid UTF-8 (rename it)") from None


def _nifti_payload_bytes(header: bytes, path: Path) -> int | None:
    """Header plus voxel bytes that a NIfTI-1 or NIfTI-2 header announces; None if not NIfTI."""
    if len(header) < 348:
        return None
    for endian in "<>":
        size = struct.unpack(f"{endian}i", header[:4])[0]
        if size == 348:
            dims = struct.unpack(f"{endian}8h", header[40:56])
            bitpix = struct.unpack(f"{endian}h", header[72:74])[0]
            offset = struct.unpack(f"{endian}f", header[108:112])[0]
        elif size == 540 and len(header) >= 540:
            bitpix = struct.unpack(f"{endian}h", header[14:16])[0]
            dims = struct.unpack(f"{endian}8q", header[16:80])
            offset = struct.unpack(f"{endian}q", header[168:176])[0]
        else:
            continue
        if not (math.isfinite(offset) and offset >= 0 and 1 <= dims[0] <= 7 and bitpix > 0
                and all(d >= 0 for d in dims[1 : dims[0] + 1])):
            raise InputError(f"{shown(path)}: invalid NIfTI header (vox_offset {offset}, dim {list(dims)}, "
                             f"bitpix {bitpix})")
        voxels = int(np.prod([max(d, 1) for d in dims[1 : dims[0] + 1]], dtype=np.int64))
        return max(int(offset), size) + voxels * bitpix // 8
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
        expected = _nifti_payload_bytes(header, path)
        if expected is not None and expected % (1 << 32) == trailer_size:
            return
        complete = _gzip_stream_complete(path)
    except (OSError, EOFError, struct.error, zlib.error):
        raise InputError(f"{shown(path)}: unreadable or truncated gzip file") from None
    if not complete:
        raise InputError(f"{shown(path)}: truncated file (the gzip stream ends early)")


# A MetaImage header is short text ending with ElementDataFile; everything after it is voxel data.
METAIMAGE_HEADER_BYTES = 1 << 16


def check_metaimage_data_file(path: Path, role: str) -> None:
    """The data file a MetaImage header names must be the header itself (LOCAL) or a regular file inside the
    header's folder: otherwise a crafted header makes ITK read any file or device of the host (an absolute
    path, ``../``, /dev/urandom) or hang on a FIFO. File lists and patterns are refused too."""
    with open(path, "rb") as handle:
        head = handle.read(METAIMAGE_HEADER_BYTES)
    data_file = None
    for line in head.splitlines():
        key, sep, value = line.decode("latin-1").partition("=")
        if sep and key.strip().lower() == "elementdatafile":
            data_file = value.strip()
            break
    if data_file is None:
        raise InputError(f"{shown(path)}: unreadable {role} image (not a MetaImage: no ElementDataFile "
                         f"in its first {METAIMAGE_HEADER_BYTES // 1024} KiB)")
    if data_file.upper() == "LOCAL":
        return
    refuse = f"{shown(path)}: {role} header names the data file {data_file!r}"
    if data_file.upper().startswith("LIST") or "%" in data_file:
        raise InputError(f"{refuse}: file lists and patterns are not read (use LOCAL or one file)")
    parts = data_file.replace("\\", "/").split("/")
    if data_file.startswith(("/", "\\")) or (len(data_file) > 1 and data_file[1] == ":") or ".." in parts:
        raise InputError(f"{refuse}: it must be a relative path inside the header's folder")
    folder = os.path.realpath(path.parent)
    target = os.path.realpath(os.path.join(folder, data_file))
    if os.path.commonpath([folder, target]) != folder:
        raise InputError(f"{refuse}: it leads outside the header's folder")
    try:
        mode = os.stat(target).st_mode
    except OSError as error:
        raise InputError(f"{refuse}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{refuse}: not a regular file")


def _check_file(path: Path, role: str) -> None:
    """Refuse missing files, non-UTF-8 names, MetaImage headers that point elsewhere, and truncated NIfTI
    that SimpleITK would read without a word."""
    require_utf8_path(path, f"{role} file")
    if not path.exists():
        raise InputError(f"{shown(path)}: {role} file missing")
    if not path.is_file():
        raise InputError(f"{shown(path)}: {role} file is not a regular file")
    if path.name.endswith(".mha") or path.name.endswith(".mhd"):
        check_metaimage_data_file(path, role)
    elif path.name.endswith(".nii.gz"):
        check_gzip_nifti_complete(path)
    elif path.name.endswith(".nii"):
        with open(path, "rb") as handle:
            expected = _nifti_payload_bytes(handle.read(540), path)
        if expected is not None and path.stat().st_size < expected:
            raise InputError(f"{shown(path)}: truncated file ({path.stat().st_size} of {expected} bytes)")


# File descriptor 2 is one per process: two captures at once (a read in a worker thread while a mask is
# written) would restore each other's sink and lose stderr for good. One at a time.
_STDERR_CAPTURE = threading.RLock()


@contextlib.contextmanager
def _captured_native_stderr() -> Iterator[list[str]]:
    """ITK reports problems on the C-level stderr, some without failing (a corrupt zlib stream in a
    compressed .mha: "Uncompress failed", then garbage voxels). Capture them: the caller decides, and the
    terminal keeps one line per error. Whatever else writes to stderr meanwhile (another thread's progress
    bar) is captured too and taken for ITK's: keep stderr quiet while images are read."""
    lines: list[str] = []
    with _STDERR_CAPTURE:
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
                lines.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines()
                             if line.strip())


def _reason(native: list[str], error: BaseException | None) -> str:
    """ITK's own words, briefly: its stderr lines, else the last line of its exception."""
    if native:
        text = one_line(" ".join(native))
    elif error is not None:
        text = reason_of(error)
    else:
        text = "not a readable image"
    return text if len(text) <= 160 else text[:157] + "..."


def _read_one(path: Path, pixel_type: int) -> tuple[sitk.Image | None, BaseException | None, list[str]]:
    with _captured_native_stderr() as native:
        try:
            return sitk.ReadImage(str(path), pixel_type), None, native
        except RuntimeError as error:
            return None, error, native


def _check_volume(image: sitk.Image, path: Path, role: str) -> sitk.Image:
    if image.GetDimension() != 3:
        raise InputError(f"{shown(path)}: {role} image is {image.GetDimension()}D, expected 3D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{shown(path)}: {role} image has {image.GetNumberOfComponentsPerPixel()} components "
                         "per voxel, expected a scalar image")
    if min(image.GetSize()) < 1 or np.prod(image.GetSize()) == 0:
        raise InputError(f"{shown(path)}: {role} image is empty (size {image.GetSize()})")
    return image


def read_images(requests: list[tuple[Path, str, int]]) -> list[sitk.Image]:
    """Read several (path, role, pixel type) at once, one thread each (SimpleITK releases the GIL while it
    decodes, so a PET and a CT read together take about the time of the PET alone). Each must be a 3D
    scalar image that ITK read without a complaint, else InputError names the first bad file and the
    problem."""
    paths = [Path(path) for path, _, _ in requests]
    for path, (_, role, _) in zip(paths, requests, strict=True):
        _check_file(path, role)
    # One capture around all reads: redirecting file descriptor 2 is process-wide, not per thread.
    with _captured_native_stderr() as native, ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(sitk.ReadImage, str(path), pixel_type)
                   for path, (_, _, pixel_type) in zip(paths, requests, strict=True)]
        failures = [future.exception() for future in futures]
    unexpected = [error for error in failures if error is not None and not isinstance(error, RuntimeError)]
    if unexpected:
        raise unexpected[0]
    if not any(failures) and not native:
        images = [future.result() for future in futures]
    else:
        # ITK's messages do not always name the file ("Uncompress failed"): then read one at a time.
        if len(paths) == 1:
            reads = [(None, failures[0], native)]
        else:
            reads = [_read_one(path, pixel_type) for path, (_, _, pixel_type) in zip(paths, requests, strict=True)]
        for path, (_, role, _), (_, error, own) in zip(paths, requests, reads, strict=True):
            if error is not None or own:
                kind = "unreadable or truncated" if error is not None else "corrupt"
                raise InputError(f"{shown(path)}: {kind} {role} image (ITK: {_reason(own, error)})")
        images = [image for image, _, _ in reads]  # the complaint did not come back: the single reads stand
    return [_check_volume(image, path, role) for image, path, (_, role, _) in zip(images, paths, requests, strict=True)]


def read_image(path: Path, role: str, pixel_type: int = sitk.sitkUnknown) -> sitk.Image:
    """Read a 3D scalar image or raise InputError naming the file and the problem."""
    return read_images([(Path(path), role, pixel_type)])[0]


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write a mask beside the target, read it back, and rename: ITK does not report a failed write (a full
    disk, ``ulimit -f``), so only a file that reads back as the same image reaches its final name; otherwise
    WriteError. Meant for masks: the read-back holds a second copy in memory."""
    path = Path(path)
    try:
        require_utf8_path(path, "output")
    except InputError as error:
        raise WriteError(str(error)) from None

    def verify(tmp: Path) -> None:
        back, error, native = _read_one(tmp, image.GetPixelID())
        if back is None or native:
            raise WriteError(f"{shown(path)}: written incompletely (reading it back: {_reason(native, error)})")
        same = (back.GetSize() == image.GetSize() and back.GetPixelID() == image.GetPixelID()
                and np.allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-6)
                and np.allclose(back.GetOrigin(), image.GetOrigin(), rtol=1e-6, atol=1e-6)
                and np.allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
                and np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image)))
        if not same:
            raise WriteError(f"{shown(path)}: written incompletely (it reads back as another image)")

    with atomic_target(path, suffix="".join(path.suffixes) or ".mha", verify=verify) as tmp:
        with _captured_native_stderr() as native:
            try:
                sitk.WriteImage(image, str(tmp), useCompression=True)
                error = None
            except RuntimeError as raised:  # some failed writes ITK does notice
                error = raised
        if error is not None or native:
            raise WriteError(f"{shown(path)}: not written (ITK: {_reason(native, error)})")
