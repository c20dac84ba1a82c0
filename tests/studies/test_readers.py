"""Reading images: whatever ITK reports, whatever a header points to, whatever bytes a name holds, one line that
names the file; and writing masks that read back whole or not at all."""

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import studies.readers
from model.errors import InputError, WriteError
from studies.nifti import check_nifti_transforms, nifti_transforms
from studies.readers import image_stem, is_image_name, read_image, read_images, write_image_atomic
from tests.model.test_files import leftovers, run_with_file_size_limit, small_tmpfs


def volume(seed: int = 0, shape=(6, 20, 24)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).uniform(0, 10, shape).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 3.0))
    return image


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and "\r" not in text
    return text


def header_with_data_file(tmp_path: Path, data_file: str, name: str = "x.mha") -> Path:
    """A MetaImage header (no voxels of its own) that names ``data_file``."""
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    sitk.WriteImage(volume(), str(folder / "ref.mhd"))  # ref.mhd + ref.raw
    lines = (folder / "ref.mhd").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("ElementDataFile"))
    (folder / name).write_text(f"{text}\nElementDataFile = {data_file}\n")
    return folder / name


def test_stems_and_names():
    assert [image_stem(Path(name)) for name in ("a/b.nii.gz", "c.nii", "d.mha")] == ["b", "c", "d"]
    assert is_image_name("case.mha") and is_image_name("case.nii") and is_image_name("case.nii.gz")
    assert not is_image_name("._case.mha")  # macOS AppleDouble companion
    assert not is_image_name(".case.mha.abc123.mha") and not is_image_name("notes.txt")


def test_a_header_may_name_a_file_beside_it(tmp_path):
    path = header_with_data_file(tmp_path, "ref.raw")
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path, "PET")), sitk.GetArrayFromImage(volume()))


@pytest.mark.parametrize(("data_file", "reason"), [
    ("/etc/hostname", "relative path inside the header's folder"),
    ("/dev/urandom", "relative path inside the header's folder"),
    ("../outside.raw", "relative path inside the header's folder"),
    ("sub/../../outside.raw", "relative path inside the header's folder"),
    ("link.raw", "leads outside the header's folder"),
    ("fifo.raw", "not a regular file"),
    ("missing.raw", "No such file or directory"),
    ("LIST", "file lists and patterns are not read"),
    ("slice%03d.raw 1 6 1", "file lists and patterns are not read"),
])
def test_a_header_cannot_make_itk_read_elsewhere(tmp_path, data_file, reason):
    path = header_with_data_file(tmp_path, data_file)
    (tmp_path / "outside.raw").write_bytes(b"\x00" * 20000)
    os.symlink(tmp_path / "outside.raw", path.parent / "link.raw")
    os.mkfifo(path.parent / "fifo.raw")  # ITK would wait on it forever
    with pytest.raises(InputError, match="PET header names the data file") as error:
        read_image(path, "PET")
    assert reason in one_line(error) and "x.mha" in str(error.value)


def test_a_file_without_a_metaimage_header_is_refused(tmp_path):
    (tmp_path / "g.mha").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"g\.mha: unreadable CT image .*no ElementDataFile") as error:
        read_image(tmp_path / "g.mha", "CT")
    one_line(error)


def _corrupt_compressed(path: Path) -> None:
    data = path.read_bytes()
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    path.write_bytes(data[:start] + bytes(len(data) - start))  # the zlib stream zeroed


def test_what_itk_reports_while_reading_is_an_error(tmp_path, monkeypatch):
    sitk.WriteImage(volume(), str(tmp_path / "pet.mha"), useCompression=True)
    sitk.WriteImage(volume(1), str(tmp_path / "ct.mha"), useCompression=True)
    _corrupt_compressed(tmp_path / "pet.mha")
    with pytest.raises(InputError, match=r"pet\.mha: corrupt or truncated PET image \(its compressed voxels"):
        read_image(tmp_path / "pet.mha", "PET")  # caught before ITK reads a voxel
    # The second line of defence: whatever ITK prints while reading (here with the payload check off).
    unchecked = [dataclasses.replace(entry, check=None) for entry in studies.readers.IMAGE_FORMATS]
    monkeypatch.setattr(studies.readers, "IMAGE_FORMATS", tuple(unchecked))
    with pytest.raises(InputError, match=r"pet\.mha: corrupt PET image \(ITK: Uncompress failed\)") as error:
        read_image(tmp_path / "pet.mha", "PET")
    one_line(error)
    # Read together with a good CT, the complaint (which names no file) is still pinned on the PET.
    with pytest.raises(InputError, match=r"pet\.mha: corrupt PET image"):
        read_images([(tmp_path / "ct.mha", "CT", sitk.sitkUnknown), (tmp_path / "pet.mha", "PET", sitk.sitkUnknown)])


def _nifti_with_offset(path: Path, offset: float) -> None:
    sitk.WriteImage(volume(), str(path))
    data = bytearray(path.read_bytes())
    data[108:112] = struct.pack("<f", offset)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "make", "needle"), [
    ("zero.nii", lambda p: p.write_bytes(b""), "unreadable or truncated PET image"),
    ("zero.nii.gz", lambda p: p.write_bytes(b""), "unreadable or truncated PET image"),
    ("empty.nii.gz", lambda p: p.write_bytes(gzip.compress(b"")), "unreadable or truncated"),
    ("nan.nii", lambda p: _nifti_with_offset(p, float("nan")), "invalid NIfTI header (vox_offset nan"),
    ("short.nii", lambda p: p.write_bytes(b"\x5c\x01\x00\x00" + b"\x00" * 100), "unreadable or truncated PET image"),
    ("zero.mha", lambda p: p.write_bytes(b""), "no ElementDataFile"),
])
def test_empty_and_malformed_files_are_one_line(tmp_path, name, make, needle):
    make(tmp_path / name)
    with pytest.raises(InputError) as error:
        read_image(tmp_path / name, "PET")
    assert needle in one_line(error) and name in str(error.value)


def test_a_name_that_is_not_utf8_is_refused_not_a_crash(tmp_path):
    raw = os.fsencode(tmp_path) + b"/x\xff.mha"
    sitk.WriteImage(volume(), str(tmp_path / "ok.mha"))
    os.rename(tmp_path / "ok.mha", raw)
    with pytest.raises(InputError, match=r"x\\xff\.mha: PET file name is not valid UTF-8") as error:
        read_image(Path(os.fsdecode(raw)), "PET")
    one_line(error)


def test_control_characters_in_names_stay_on_one_line(tmp_path):
    with pytest.raises(InputError, match=r"a\\nb\\r\.mha: PET file missing") as error:
        read_image(tmp_path / "a\nb\r.mha", "PET")
    one_line(error)


def test_a_mask_is_written_and_reads_back(tmp_path):
    mask = sitk.Cast(volume() > 5, sitk.sitkUInt8)
    for name in ("m.mha", "m.nii.gz"):
        write_image_atomic(mask, tmp_path / name)
        back = sitk.ReadImage(str(tmp_path / name))
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(mask))
    assert leftovers(tmp_path) == ["m.mha", "m.nii.gz"]


def test_a_write_that_itk_gets_wrong_never_reaches_the_final_name(tmp_path, monkeypatch):
    mask = sitk.Cast(volume() > 5, sitk.sitkUInt8)
    real_write = sitk.WriteImage
    monkeypatch.setattr(studies.readers.sitk, "WriteImage",
                        lambda image, name, **kw: real_write(sitk.Cast(volume(1) > 5, sitk.sitkUInt8), name, **kw))
    with pytest.raises(WriteError, match=r"m\.mha: written incompletely \(it reads back as another image\)"):
        write_image_atomic(mask, tmp_path / "m.mha")
    assert leftovers(tmp_path) == []


def sparse_mask(blobs: int) -> sitk.Image:
    """A lesion mask of small boxes: it compresses to about 1 KB, as the test phantoms' masks do."""
    array = np.zeros((40, 72, 72), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(blobs):
        z, y, x = rng.integers(2, 38), rng.integers(5, 67), rng.integers(5, 67)
        array[z - 2 : z + 2, y - 4 : y + 4, x - 3 : x + 5] = 1
    return sitk.GetImageFromArray(array)


@pytest.mark.parametrize(("blobs", "needle"), [(15, "written incompletely (reading it back: MetaImage"),
                                               (40, "not written (ITK: MetaImage")])
def test_a_mask_cut_short_by_ulimit_is_refused(tmp_path, blobs, needle):
    """A mask of about 1.1 KB past `ulimit -f 1`: ITK says nothing and leaves a 1024-byte stump, which only the
    read-back catches; a larger one makes ITK itself complain."""
    sitk.WriteImage(sparse_mask(blobs), str(tmp_path / "mask.mha"))
    (tmp_path / "out").mkdir()
    result = run_with_file_size_limit(f"""
        import SimpleITK as sitk
        from model.errors import WriteError
        from studies.readers import write_image_atomic
        try:
            write_image_atomic(sitk.ReadImage({str(tmp_path / 'mask.mha')!r}), {str(tmp_path / 'out/m.mha')!r})
        except WriteError as error:
            print(error)
    """, limit=1024)
    assert result.returncode == 0, result.stderr
    assert f"m.mha: {needle}" in result.stdout
    assert leftovers(tmp_path / "out") == []


def test_a_mask_on_a_full_disk_is_refused(tmp_path):
    mask = sitk.GetImageFromArray((np.random.default_rng(0).random((20, 100, 100)) > 0.5).astype(np.uint8))
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        with open(disk / "filler", "wb") as handle:
            handle.write(b"\x00" * (64 * 1024 - 8192))  # leaves less room than the mask needs
        with pytest.raises(WriteError):
            write_image_atomic(mask, disk / "m.mha")
        assert leftovers(disk) == ["filler"]


def test_an_output_name_that_is_not_utf8_is_refused_not_a_crash(tmp_path):
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/m\xff.mha"))
    with pytest.raises(WriteError, match=r"m\\xff\.mha"):
        write_image_atomic(sitk.Image([4, 4, 4], sitk.sitkUInt8), path)


# --- Issue 17: the header as MetaIO reads it, payloads checked whole, components from the header ------------------

def _metaimage_parts(tmp_path: Path, compressed: bool = False) -> tuple[str, bytes]:
    """The header lines (without ElementDataFile) and the voxel bytes of a real MetaImage."""
    sitk.WriteImage(volume(), str(tmp_path / "ref.mha"), useCompression=compressed)
    data = (tmp_path / "ref.mha").read_bytes()
    marker = b"ElementDataFile = LOCAL\n"
    at = data.index(marker)
    return data[:at].decode(), data[at + len(marker):]


@pytest.mark.parametrize(("tail", "reason"), [
    # MetaIO matches keys case-sensitively: the lower-case key is skipped and the second one is used.
    ("elementdatafile = LOCAL\nElementDataFile = {outside}\n", "not ElementDataFile for MetaIO"),
    ("ElementDataFile = LOCAL \nelementdatafile = x\n", "voxel bytes"),  # LOCAL wins; the rest is voxels to ITK
    ("ElementDataFile : {outside}\n", "relative path inside the header's folder"),  # ':' separates too
    ("ElementDataFile = = : {outside}\n", "relative path inside the header's folder"),
    ("  \t ElementDataFile \t= {outside}\n", "relative path inside the header's folder"),
    ("ElementDataFile\n= {outside}\n", "has no '='"),  # MetaIO takes the value from the next line
    ("ObjectType\nElementDataFile = LOCAL\nElementDataFile = {outside}\n", "has no '='"),
    ("ElementDataFile\v = LOCAL\nElementDataFile = {outside}\n", "not ElementDataFile for MetaIO"),
    ("ElementDataFile\0x = {outside}\n", "NUL byte"),
    ("ElementDataFile = LOCAL\0{outside}\n", "NUL byte"),
    ("ElementDataFile = " + "a/" * 300 + "x.raw\n", "longer than MetaIO reads"),
    ("ElementDataFile = {fifo}\n", "relative path inside the header's folder"),  # the hang
    ("ElementDataFile = LoCaL\n", "leads outside the header's folder"),  # not LOCAL to MetaIO: a file name
    ("ElementDataFile = LIST\nref.raw\n", "file lists and patterns"),
    ("HeaderSize = 3\nElementDataFile = LOCAL\n", "HeaderSize"),
    ("ElementDataFile =\n", "has no value"),
])
def test_the_data_file_checked_is_the_one_metaio_uses(tmp_path, tail, reason):
    header, voxels = _metaimage_parts(tmp_path)
    outside = tmp_path / "outside.raw"
    outside.write_bytes(voxels)
    os.mkfifo(tmp_path / "fifo")
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(outside, folder / "LoCaL")
    path = folder / "x.mha"
    path.write_bytes(header.encode() + tail.format(outside=outside, fifo=tmp_path / "fifo").encode() + voxels)
    with pytest.raises(InputError) as error:
        read_image(path, "PET", sitk.sitkFloat32)
    assert reason in one_line(error) and "x.mha" in str(error.value)


def test_a_plain_header_still_reads(tmp_path):
    header, voxels = _metaimage_parts(tmp_path)
    for spelling in ("LOCAL", "Local", "local"):  # the three MetaIO takes for LOCAL
        path = tmp_path / f"{spelling}.mha"
        path.write_bytes(f"{header}ElementDataFile = {spelling}\r\n".encode() + voxels)
        assert np.array_equal(sitk.GetArrayFromImage(read_image(path, "PET")), sitk.GetArrayFromImage(volume()))


def _compressed_with(tmp_path: Path, payload: bytes, declared: int | None = None, name: str = "c.mha") -> Path:
    import zlib

    header, _ = _metaimage_parts(tmp_path, compressed=True)
    stream = zlib.compress(payload)
    header = "\n".join(line for line in header.splitlines() if not line.startswith("CompressedDataSize"))
    size = len(stream) if declared is None else declared
    (tmp_path / name).write_bytes(f"{header}\nCompressedDataSize = {size}\nElementDataFile = LOCAL\n".encode()
                                  + stream)
    return tmp_path / name


def test_metaimage_payloads_must_be_whole(tmp_path):
    full = sitk.GetArrayFromImage(volume()).tobytes()
    assert np.array_equal(sitk.GetArrayFromImage(read_image(_compressed_with(tmp_path, full), "PET")),
                          sitk.GetArrayFromImage(volume()))
    cases = {
        "short": (_compressed_with(tmp_path, full[: -3 * 20 * 24 * 4], name="short.mha"), "hold"),  # ITK zero-fills
        "long": (_compressed_with(tmp_path, full + b"\0" * 8, name="long.mha"), "hold"),
        "lie": (_compressed_with(tmp_path, full, declared=10, name="lie.mha"), "CompressedDataSize"),
    }
    header, voxels = _metaimage_parts(tmp_path)
    (tmp_path / "cut.mha").write_bytes(f"{header}ElementDataFile = LOCAL\n".encode() + voxels[:-100])
    cases["cut"] = (tmp_path / "cut.mha", "voxel bytes")
    summed = bytearray(_compressed_with(tmp_path, full, name="sum.mha").read_bytes())
    summed[-1] ^= 0xFF  # the adler32: complete data, failed checksum
    (tmp_path / "sum.mha").write_bytes(bytes(summed))
    cases["sum"] = (tmp_path / "sum.mha", "incorrect data check")
    for name, (path, reason) in cases.items():
        with pytest.raises(InputError, match="corrupt or truncated PET image") as error:
            read_image(path, "PET")
        assert reason in one_line(error), name


def _nifti_gz(tmp_path: Path, name: str, transform) -> Path:
    sitk.WriteImage(volume(), str(tmp_path / "ref.nii"))
    raw = (tmp_path / "ref.nii").read_bytes()
    (tmp_path / name).write_bytes(transform(raw))
    return tmp_path / name


def _flip_stored_bytes(raw: bytes) -> bytes:
    data = bytearray(gzip.compress(raw, mtime=0))
    data[len(data) // 2] ^= 0xFF  # inside the deflate data; the size trailer still matches
    return bytes(data)


@pytest.mark.parametrize(("name", "transform", "reason"), [
    ("cut.nii.gz", lambda raw: gzip.compress(raw[: -3 * 20 * 24 * 4]), "truncated file"),  # a complete stream
    ("crc.nii.gz", _flip_stored_bytes, "unreadable or truncated gzip file"),
    ("stop.nii.gz", lambda raw: gzip.compress(raw)[:-20], "unreadable or truncated gzip file"),
    ("junk.nii.gz", lambda raw: gzip.compress(raw) + b"junk after the stream", "unreadable or truncated gzip file"),
    ("cut.nii", lambda raw: raw[:-100], "truncated file"),
    ("pair.nii", lambda raw: raw[:344] + b"ni1\0" + raw[348:], "not a single-file NIfTI"),  # voxels in a .img
])
def test_nifti_payloads_must_be_whole(tmp_path, name, transform, reason):
    path = _nifti_gz(tmp_path, name, transform)
    with pytest.raises(InputError) as error:
        read_image(path, "PET", sitk.sitkFloat32)
    assert reason in one_line(error) and name in str(error.value)


def test_two_gzip_members_read_as_itk_reads_them(tmp_path):
    path = _nifti_gz(tmp_path, "two.nii.gz", lambda raw: gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path, "PET")), sitk.GetArrayFromImage(volume()))


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz", ".nii"])
def test_a_vector_or_complex_pet_is_refused_before_a_cast_combines_it(tmp_path, suffix):
    pet = volume()
    sitk.WriteImage(sitk.Compose([pet, pet]), str(tmp_path / f"v{suffix}"))
    with pytest.raises(InputError, match=r"2 components per voxel .*expected a scalar image") as error:
        read_image(tmp_path / f"v{suffix}", "PET", sitk.sitkFloat32)
    one_line(error)
    complex_pet = sitk.RealAndImaginaryToComplex(pet, pet)
    sitk.WriteImage(complex_pet, str(tmp_path / f"c{suffix}"))
    with pytest.raises(InputError, match="expected a scalar image"):
        read_image(tmp_path / f"c{suffix}", "PET", sitk.sitkFloat32)


# --- NIfTI qform and sform ---------------------------------------------------------------------------------

def _rotation_z(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def _nifti_with_transforms(tmp_path: Path, name: str, *, qform_code: int, sform_code: int,
                           sform: np.ndarray | None = None, qfac: float | None = None,
                           quatern: tuple[float, ...] | None = None) -> Path:
    """``volume()`` as SimpleITK writes it (qform and sform both set, alike), its header's transforms edited:
    ``sform`` a 3x4 matrix (voxel index to RAS mm), ``quatern`` (b, c, d, x, y, z), ``qfac`` pixdim[0]."""
    sitk.WriteImage(volume(), str(tmp_path / "ref.nii"))
    raw = bytearray((tmp_path / "ref.nii").read_bytes())
    raw[252:256] = struct.pack("<2h", qform_code, sform_code)
    if quatern is not None:
        raw[256:280] = struct.pack("<6f", *quatern)
    if sform is not None:
        raw[280:328] = struct.pack("<12f", *np.asarray(sform, dtype=float).ravel())
    if qfac is not None:
        raw[76:80] = struct.pack("<f", qfac)
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return path


def _sform(rows: np.ndarray, offset=(10.0, 20.0, -30.0)) -> np.ndarray:
    return np.column_stack([rows, offset])


IDENTITY_SFORM = _sform(np.diag([2.0, 2.0, 3.0]))  # volume()'s spacing, RAS axes
IDENTITY_QFORM = (0.0, 0.0, 0.0, 10.0, 20.0, -30.0)  # the same grid as a quaternion and offsets

DISAGREEING = {
    "sform rotated 20 degrees and shifted 50 mm": dict(sform=_sform(_rotation_z(20) @ np.diag([2.0, 2.0, 3.0]),
                                                                     (60.0, 20.0, -30.0))),
    "sform shifted 1 mm": dict(sform=_sform(np.diag([2.0, 2.0, 3.0]), (10.0, 21.0, -30.0))),
    "qform with its slices flipped (qfac -1)": dict(sform=IDENTITY_SFORM, qfac=-1.0),
}


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("case", DISAGREEING)
def test_nifti_whose_qform_and_sform_disagree_is_refused(tmp_path, case, suffix):
    path = _nifti_with_transforms(tmp_path, f"pet{suffix}", qform_code=1, sform_code=2, quatern=IDENTITY_QFORM,
                                  **DISAGREEING[case])
    with pytest.raises(InputError) as error:
        read_image(path, "PET", sitk.sitkFloat32)
    assert one_line(error).startswith(f"{path}: PET NIfTI qform (code 1, origin [10.0, 20.0, -30.0]) and sform "
                                      "(code 2, origin ")
    assert "mm apart (more than 0.1)" in str(error.value)
    with pytest.raises(InputError, match=r"qform .* and sform"):
        studies.readers.read_grid(path, "PET")  # the grid of a kept mask's PET is read by the same rule


@pytest.mark.parametrize("case", ["as SimpleITK writes it", "within 0.05 mm", "sform unset (code 0), junk in it",
                                  "qform unset (code 0), a rotated sform", "neither set (Analyze's orientation)"])
def test_nifti_whose_qform_and_sform_agree_or_stand_alone_is_read(tmp_path, case):
    rotated = _sform(_rotation_z(20) @ np.diag([2.0, 2.0, 3.0]))
    edits = {"as SimpleITK writes it": dict(qform_code=1, sform_code=1),
             "within 0.05 mm": dict(qform_code=1, sform_code=1, quatern=IDENTITY_QFORM,
                                    sform=_sform(np.diag([2.0, 2.0, 3.0]), (10.03, 20.0, -29.96))),
             "sform unset (code 0), junk in it": dict(qform_code=1, sform_code=0, sform=np.full((3, 4), 7.0)),
             "qform unset (code 0), a rotated sform": dict(qform_code=0, sform_code=1, sform=rotated),
             "neither set (Analyze's orientation)": dict(qform_code=0, sform_code=0)}[case]
    image = read_image(_nifti_with_transforms(tmp_path, "pet.nii.gz", **edits), "PET", sitk.sitkFloat32)
    assert np.allclose(image.GetSpacing(), (2.0, 2.0, 3.0))
    if case.startswith("qform unset"):  # ITK reads the sform's rotation (RAS to LPS: x and y negated)
        assert np.allclose(np.array(image.GetDirection()).reshape(3, 3), np.diag([-1, -1, 1]) @ _rotation_z(20),
                           atol=1e-5)


NOT_ROTATIONS = {"shear 0.3": np.eye(3) + 0.3 * np.eye(3, k=1), "scaled 2x": 2 * np.eye(3),
                 "determinant 0.01": np.diag([1.0, 1.0, 0.01]), "one axis 1 % long": np.diag([1.0, 1.01, 1.0])}


@pytest.mark.parametrize("qform_code", [0, 1])
@pytest.mark.parametrize("case", NOT_ROTATIONS)
def test_a_nifti_sform_that_is_no_rotation_of_its_voxel_sizes_is_refused(tmp_path, case, qform_code):
    sform = _sform(NOT_ROTATIONS[case] @ np.diag([2.0, 2.0, 3.0]))
    path = _nifti_with_transforms(tmp_path, "ct.nii.gz", qform_code=qform_code, sform_code=1, sform=sform,
                                  quatern=IDENTITY_QFORM)
    with pytest.raises(InputError) as error:
        read_image(path, "CT")
    assert one_line(error).startswith(f"{path}: CT NIfTI sform (code 1) ")
    assert "is not a rotation of its voxel sizes [2.0, 2.0, 3.0] mm" in str(error.value)


def test_nifti_2_headers_are_held_to_the_same_rules():
    # NIfTI-2 keeps the same fields in other places and widths: the parser reads both.
    one = bytearray(348)
    one[:4] = struct.pack("<i", 348)
    one[344:348] = b"n+1\0"
    one[40:56] = struct.pack("<8h", 3, 4, 5, 6, 1, 1, 1, 1)
    one[76:108] = struct.pack("<8f", 1, 2, 2, 3, 0, 0, 0, 0)
    one[252:256] = struct.pack("<2h", 1, 1)
    one[256:280] = struct.pack("<6f", *IDENTITY_QFORM)
    one[280:328] = struct.pack("<12f", *IDENTITY_SFORM.ravel())
    two = bytearray(540)
    two[:4] = struct.pack("<i", 540)
    two[4:12] = b"n+2\0\r\n\x1a\n"
    two[16:80] = struct.pack("<8q", 3, 4, 5, 6, 1, 1, 1, 1)
    two[104:168] = struct.pack("<8d", 1, 2, 2, 3, 0, 0, 0, 0)
    two[344:352] = struct.pack("<2i", 1, 1)
    two[352:400] = struct.pack("<6d", *IDENTITY_QFORM)
    two[400:496] = struct.pack("<12d", *IDENTITY_SFORM.ravel())
    parsed = [nifti_transforms(bytes(header)) for header in (one, two)]
    for transforms in parsed:
        assert transforms.dims == (4, 5, 6) and transforms.qform_code == transforms.sform_code == 1
        assert np.allclose(transforms.qform, IDENTITY_SFORM) and np.allclose(transforms.sform, IDENTITY_SFORM)
        check_nifti_transforms(transforms, Path("x.nii"), "PET")
    two[400:408] = struct.pack("<d", 2.5)  # the sform's first axis no longer its voxel size
    with pytest.raises(InputError, match=r"x\.nii: PET NIfTI sform"):
        check_nifti_transforms(nifti_transforms(bytes(two)), Path("x.nii"), "PET")
