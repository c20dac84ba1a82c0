"""Reading and writing images (SimpleITK) so that a bad file is one line that names it, never garbage."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import stat
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from model.errors import InputError, WriteError, one_line, reason_of, shown
from model.files import atomic_target
from studies.nifti import check_nifti_transforms, nifti_payload_bytes, nifti_transforms


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


def check_nifti(path: Path, role: str) -> None:
    """SimpleITK zero-fills a short NIfTI and reads a .nii.gz whose data fails its CRC as garbage, both without
    a word: the whole gzip stream is decompressed here (every member, CRC and size trailers checked by zlib,
    nothing but members after it) and its length, or the .nii's, must cover what the header announces. Its
    qform and sform are checked (``check_nifti_transforms``)."""
    gz = path.name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            head = handle.read(540)
        expected = nifti_payload_bytes(head, path, role)
        if gz:
            with open(path, "rb") as handle:
                total, _ = _inflate(handle, 16 + zlib.MAX_WBITS, members=True)
        else:
            total = path.stat().st_size
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{shown(path)}: unreadable or truncated gzip file ({one_line(error)})") from None
    if total < expected:
        raise InputError(f"{shown(path)}: truncated file ({total} of the {expected} bytes its header announces"
                         f"{' uncompressed' if gz else ''})")
    transforms = nifti_transforms(head)
    if transforms is not None:
        check_nifti_transforms(transforms, path, role)


# A MetaImage header is short text ending with ElementDataFile; everything after it is voxel data.
METAIMAGE_HEADER_BYTES = 1 << 16
# MetaIO (ITK's MET_Read) reads a header line with getline(s, 500): a longer line fails its stream.
METAIO_LINE_LIMIT = 499
_C_SPACE = b" \t\n\v\f\r"  # C's isspace: what MET_Read skips before a key
_METAIO_LOCAL = ("LOCAL", "Local", "local")  # the spellings MetaIO takes for "the voxels follow the header"
# Bytes per voxel of the MetaIO element types (metaTypes.h MET_ValueTypeSize).
_METAIO_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                      "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
                      "MET_DOUBLE": 8}


@dataclass(frozen=True)
class MetaImageHeader:
    fields: dict[str, str]  # each key before ElementDataFile, its value as MetaIO sees it (repeated: the last)
    data_file: str  # the ElementDataFile value MetaIO uses
    data_offset: int  # where the voxels start when data_file is LOCAL


def _c_strip_end(value: bytes) -> bytes:
    """MET_StringStripEnd: trailing bytes that are not printable ASCII, or are spaces, are dropped."""
    end = len(value)
    while end and not 0x21 <= value[end - 1] <= 0x7E:
        end -= 1
    return value[:end]


def parse_metaimage_header(head: bytes, path: Path, role: str) -> MetaImageHeader:
    """The header as MetaIO's MET_Read reads it: keys are matched exactly (case included) after leading
    whitespace, up to the first '=' or ':' less trailing blanks; the value follows any run of '=', ':',
    spaces and tabs, up to the end of the line; the first exact ``ElementDataFile`` ends the header. What
    MetaIO would read differently from a plain line-by-line reading (a line without a separator, whose value
    MetaIO takes from the next line; an empty value; a NUL, which ends a C string; a line longer than MetaIO
    reads; a near-miss of ElementDataFile such as ``elementdatafile``) is refused, so that the value checked
    here is the one ITK uses."""
    bad = f"{shown(path)}: unreadable {role} image"
    fields: dict[str, str] = {}
    pos, size = 0, len(head)
    while True:
        while pos < size and head[pos] in _C_SPACE:
            pos += 1
        end = pos
        while end < size and head[end] not in b"=:\r\n":
            end += 1
        line_end = head.find(b"\n", end)
        if line_end < 0:
            raise InputError(f"{bad} (not a MetaImage: no ElementDataFile in its first "
                             f"{METAIMAGE_HEADER_BYTES // 1024} KiB)")
        line = head[pos:line_end]
        if b"\0" in line or line_end - pos > METAIO_LINE_LIMIT:
            raise InputError(f"{bad} (header line {line[:40]!r} holds a NUL byte or is longer than MetaIO reads)")
        key = head[pos:end].rstrip(b" \t").decode("latin-1")
        if head[end] in b"\r\n":
            raise InputError(f"{bad} (header line {key[:40]!r} has no '=': MetaIO would take its value from the "
                             "next line)")
        start = end
        while start < line_end and head[start] in b"=: \t":
            start += 1
        value = _c_strip_end(head[start:line_end]).decode("latin-1")
        if not value:
            raise InputError(f"{bad} (header field {key[:40]!r} has no value)")
        if key != "ElementDataFile" and key.strip(" \t\v\f\r").lower() == "elementdatafile":
            raise InputError(f"{bad} (header key {key!r} is not ElementDataFile for MetaIO, which matches keys "
                             "exactly: an ambiguous header)")
        pos = line_end + 1
        if key == "ElementDataFile":
            return MetaImageHeader(fields=fields, data_file=value, data_offset=pos)
        fields[key] = value


def _metaimage_data_path(path: Path, data_file: str, role: str) -> Path | None:
    """The file a MetaImage header's voxels are in: None for the header itself (LOCAL), else a regular file
    inside the header's folder. Anything else (an absolute path, ``../``, a link out of the folder, a device,
    a FIFO, a file list or pattern) is refused: a header must not make ITK read any file of the host or hang."""
    if data_file in _METAIO_LOCAL:
        return None
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
    return Path(target)


def _metaimage_payload_bytes(header: MetaImageHeader, path: Path, role: str) -> int:
    """Voxel bytes the header announces (NDims, DimSize, ElementNumberOfChannels, ElementType)."""
    try:
        ndims = float(header.fields["NDims"])
        dims = [float(v) for v in header.fields["DimSize"].split()]
        channels = float(header.fields.get("ElementNumberOfChannels", "1"))
        element = _METAIO_TYPE_BYTES[header.fields["ElementType"]]
    except (KeyError, ValueError):
        raise InputError(f"{shown(path)}: unreadable {role} image (its header lacks NDims, DimSize or a known "
                         "ElementType)") from None
    numbers = [ndims, channels, *dims]
    if not (all(math.isfinite(v) and v == int(v) and v >= 1 for v in numbers) and len(dims) >= ndims):
        raise InputError(f"{shown(path)}: unreadable {role} image (header NDims {header.fields['NDims']!r}, "
                         f"DimSize {header.fields['DimSize']!r})")
    return math.prod(int(d) for d in dims[: int(ndims)]) * int(channels) * element


# Bytes read and inflated per step: a block that stays in the CPU's cache (16 MiB of output a step made the
# check of a 128 MB PET a third slower, its fresh buffers page-faulted each time).
INFLATE_BLOCK = 1 << 18


def _inflate(handle: BinaryIO, wbits: int, members: bool) -> tuple[int, int]:
    """Decompress a zlib/gzip stream from ``handle``'s position to its end, checksums and length trailers
    included (zlib raises on a mismatch, EOFError on a stream that stops early), without ever holding more than
    a block of output. ``members``: gzip members may follow each other (gzread reads them all); anything else
    after the last is refused. Returns (bytes out, compressed bytes consumed)."""
    total = consumed = 0
    decompressor = zlib.decompressobj(wbits)
    data = handle.read(INFLATE_BLOCK)
    while True:
        while data and not decompressor.eof:
            total += len(decompressor.decompress(data, INFLATE_BLOCK))
            rest = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
            consumed += len(data) - len(rest)
            data = rest
        if decompressor.eof:
            if not members:
                return total, consumed
            data = data or handle.read(INFLATE_BLOCK)
            if not data:
                return total, consumed
            decompressor = zlib.decompressobj(wbits)  # another gzip member (or garbage: zlib.error)
            continue
        data = handle.read(INFLATE_BLOCK)
        if not data:
            raise EOFError("the compressed stream ends early")


def check_metaimage(path: Path, role: str) -> None:
    """A MetaImage header read as ITK will read it (``parse_metaimage_header``), its data file inside its
    folder, and its voxel data whole: uncompressed, exactly the bytes the header announces; compressed, a
    stream that decompresses completely, checksum included, to exactly those bytes from exactly the
    CompressedDataSize it declares. ITK zero-fills or reads garbage past a short or lying payload without
    failing, and a HeaderSize moves where it reads from: refused."""
    with open(path, "rb") as handle:
        header = parse_metaimage_header(handle.read(METAIMAGE_HEADER_BYTES), path, role)
    data_path = _metaimage_data_path(path, header.data_file, role)
    expected = _metaimage_payload_bytes(header, path, role)
    if header.fields.get("HeaderSize", "0").strip() not in ("0", "0.0"):
        raise InputError(f"{shown(path)}: unreadable {role} image (a HeaderSize of {header.fields['HeaderSize']!r} "
                         "moves where ITK reads the voxels from; not read)")
    compressed = header.fields.get("CompressedData", "False")[:1] in ("T", "t", "1")  # MetaIO's own test
    corrupt = f"{shown(path)}: corrupt or truncated {role} image"
    with open(data_path or path, "rb") as handle:
        offset = 0 if data_path is not None else header.data_offset
        handle.seek(offset)
        if not compressed:
            available = os.fstat(handle.fileno()).st_size - offset
            if available != expected:  # short: ITK zero-fills; longer: the header and its voxels disagree
                raise InputError(f"{corrupt} ({available} voxel bytes where its header announces {expected})")
            return
        declared = header.fields.get("CompressedDataSize")
        try:
            total, consumed = _inflate(handle, 32 + zlib.MAX_WBITS, members=False)  # zlib or gzip, as MetaIO
        except (zlib.error, EOFError) as error:
            raise InputError(f"{corrupt} (its compressed voxels: {error})") from None
    if total != expected:
        raise InputError(f"{corrupt} (its compressed voxels hold {total} bytes, its header announces {expected})")
    if declared is None or declared.strip() != str(consumed):
        raise InputError(f"{corrupt} (CompressedDataSize {declared!r}, the compressed stream is {consumed} bytes)")


# --- the image formats: one entry each ---------------------------------------------------------------------

@dataclass(frozen=True)
class ImageFormat:
    """An image format this project reads: everything that depends on it, in one entry (nnU-Net keeps such a
    registry of readers by file ending; here each entry also says how its payload is verified whole)."""

    suffix: str
    result_type: str  # what results.json calls such a file (evalutils' "type")
    mask_suffix: str  # the mask written for a PET of this format (a NIfTI user gets NIfTI back, compressed)
    # Verifies the file before a voxel is used (InputError naming it): SimpleITK zero-fills or reads garbage
    # from a short or corrupt payload without a word. Runs before the reader's header check (_check_header).
    check: Callable[[Path, str], None] | None
    # Reads the whole image with a pixel type (SimpleITK's signature); it releases the GIL (read_images).
    read: Callable[[str, int], sitk.Image] = sitk.ReadImage
    # Listed in input folders and accepted by name (is_image_name); False: read when given by path only.
    listed: bool = True


# Longer suffixes first: ".nii.gz" before ".nii".
IMAGE_FORMATS = (ImageFormat(".mha", "metaio_image", ".mha", check_metaimage),
                 ImageFormat(".nii.gz", "nifti_image", ".nii.gz", check_nifti),
                 ImageFormat(".nii", "nifti_image", ".nii.gz", check_nifti),
                 # A header whose voxels are in a .raw beside it (ElementDataFile checked): never listed.
                 ImageFormat(".mhd", "metaio_image", ".mha", check_metaimage, listed=False))
IMAGE_SUFFIXES = tuple(entry.suffix for entry in IMAGE_FORMATS if entry.listed)


def image_format(name: str, *, listed: bool = True) -> ImageFormat | None:
    """The format of a file name by its suffix; None when it is not an image this project reads (``listed``:
    only the formats an input folder may hold)."""
    return next((entry for entry in IMAGE_FORMATS
                 if name.endswith(entry.suffix) and (entry.listed or not listed)), None)


def _reader_of(path: Path) -> Callable[[str, int], sitk.Image]:
    found = image_format(path.name, listed=False)
    return found.read if found is not None else sitk.ReadImage


def _check_header(path: Path, role: str, *, capture: bool = True) -> sitk.ImageFileReader:
    """What the file's header says, before any voxel is read: 3D, one component of a real type. A read with a
    cast to float32 would otherwise combine a vector's components (or a complex value's) without a word.
    ``capture``: False where the caller captures ITK's stderr around it (and reads it as a failure)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _captured_native_stderr() if capture else contextlib.nullcontext([]) as native:
        try:
            reader.ReadImageInformation()
            error = None
        except RuntimeError as raised:
            error = raised
    if error is not None or native:
        raise InputError(f"{shown(path)}: unreadable or truncated {role} image (ITK: {_reason(native, error)})")
    if reader.GetDimension() != 3:
        raise InputError(f"{shown(path)}: {role} image is {reader.GetDimension()}D, expected 3D")
    components = reader.GetNumberOfComponents()
    if components != 1 or reader.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{shown(path)}: {role} image has {components} components per voxel "
                         f"({sitk.GetPixelIDValueAsString(reader.GetPixelID())}), expected a scalar image")
    return reader


def _check_file(path: Path, role: str, *, capture: bool = True) -> None:
    """Refuse missing files, non-UTF-8 names, MetaImage headers that point elsewhere or lie about their data,
    NIfTI that SimpleITK would zero-fill without a word, and images that are not 3D scalar by their header
    (``capture``: as ``_check_header``'s)."""
    require_utf8_path(path, f"{role} file")
    if not path.exists():
        raise InputError(f"{shown(path)}: {role} file missing")
    if not path.is_file():
        raise InputError(f"{shown(path)}: {role} file is not a regular file")
    found = image_format(path.name, listed=False)
    if found is not None and found.check is not None:
        found.check(path, role)
    _check_header(path, role, capture=capture)


# File descriptor 2 is one per process: two captures at once (a read in a worker thread while a mask is
# written) would restore each other's sink and lose stderr for good. One at a time; whoever writes to stderr
# while reads may run beside it (runner.cohort) holds it too, so that its lines are not taken for ITK's.
STDERR_LOCK = threading.RLock()


@contextlib.contextmanager
def _captured_native_stderr() -> Iterator[list[str]]:
    """ITK reports problems on the C-level stderr, some without failing (a corrupt zlib stream in a
    compressed .mha: "Uncompress failed", then garbage voxels). Capture them: the caller decides, and the
    terminal keeps one line per error. Whatever else writes to stderr meanwhile (another thread's progress
    bar) is captured too and taken for ITK's: keep stderr quiet while images are read."""
    lines: list[str] = []
    with STDERR_LOCK:
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
            return _reader_of(path)(str(path), pixel_type), None, native
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


def _checked_read(path: Path, role: str, pixel_type: int) -> sitk.Image:
    """One file checked (``_check_file``) and read, in a worker thread under its caller's stderr capture."""
    _check_file(path, role, capture=False)
    return _reader_of(path)(str(path), pixel_type)


def _read_concurrently(paths: list[Path], requests: list[tuple[Path, str, int]]) -> list[sitk.Image] | None:
    """Every file checked and read in a thread of its own, the check of one beside the read of another (zlib
    and SimpleITK release the GIL while they decompress: a compressed PET and CT take about the time of the
    larger alone, where checking both first took the sum of their checks more). None when any check or read
    failed or ITK wrote anything: which file it was, and the first bad one in order, are then for the
    one-by-one path to tell."""
    with _captured_native_stderr() as native, ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(_checked_read, path, role, pixel_type)
                   for path, (_, role, pixel_type) in zip(paths, requests, strict=True)]
        failed = [future.exception() is not None for future in futures]
    return None if native or any(failed) else [future.result() for future in futures]


def read_images(requests: list[tuple[Path, str, int]]) -> list[sitk.Image]:
    """Read several (path, role, pixel type) at once, one thread each (SimpleITK releases the GIL while it
    decodes, so a PET and a CT read together take about the time of the PET alone). Each must be a 3D
    scalar image that ITK read without a complaint, else InputError names the first bad file and the
    problem."""
    paths = [Path(path) for path, _, _ in requests]
    images = _read_concurrently(paths, requests) if len(requests) > 1 else None
    if images is not None:
        return [_check_volume(image, path, role) for image, path, (_, role, _) in zip(images, paths, requests,
                                                                                        strict=True)]
    # A file failed (or there is one): each is checked, in order, before any is read, then read.
    for path, (_, role, _) in zip(paths, requests, strict=True):
        _check_file(path, role)
    # One capture around all reads: redirecting file descriptor 2 is process-wide, not per thread.
    with _captured_native_stderr() as native, ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(_reader_of(path), str(path), pixel_type)
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


def read_grid(path: Path, role: str) -> sitk.ImageFileReader:
    """The header of a 3D scalar image, checked as ``read_image`` checks the file, without its voxels: a
    reader whose GetSize, GetSpacing, GetOrigin and GetDirection give its grid."""
    path = Path(path)
    _check_file(path, role)
    return _check_header(path, role)


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
