"""Fuzz the DICOM reader: damage the headers of a small vendor-like export (random byte flips, VR bytes,
truncations) and convert it with ``studies.dicom.convert``, case after case. No network runs here,
so no peak is measured; the machine's line is printed first.

A case fails when it raises (a traceback), hangs, or writes a study whose volumes differ from the undamaged
export's while nothing was said (no warning or error line). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.fuzz_dicom --seconds 180 --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.peak import machine_label
from model.arguments import number, random_seed
from studies.dicom import convert
from tests.studies.dicom_series import Grid, StudyIds, ct_datasets, ge_gaps, ge_multi_bed, pet_datasets, write_series

PIXEL_TAG = b"\xe0\x7f\x10\x00"


def make_export(root: Path) -> None:
    """Two studies: a GE static multi-bed PET with its CT, and a Siemens PET with its CT."""
    z = np.concatenate([[-900.0], -900.0 + np.cumsum(ge_gaps(11))])
    grid = Grid(z=[round(float(v), 2) for v in z])
    values = np.arange(12 * 30, dtype=float).reshape(12, 6, 5) * 10 + 100
    for vendor, patient in (("ge", "GE1"), ("siemens", "SI1")):
        ids = StudyIds(patient_id=patient)
        pet = ge_multi_bed(values, grid, ids) if vendor == "ge" else pet_datasets(values, grid, ids)
        write_series(pet, root / patient / "PT")
        write_series(ct_datasets(np.zeros((12, 6, 5)), grid, ids), root / patient / "CT")


def volumes(out: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(out.rglob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        found[str(path.relative_to(out))] = (image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                                            image.GetDirection(), sitk.GetArrayFromImage(image).tobytes())
    return found


def damage(path: Path, rng: random.Random) -> str:
    raw = bytearray(path.read_bytes())
    header_end = raw.find(PIXEL_TAG, 132)
    header_end = len(raw) if header_end < 0 else header_end
    kind = rng.choice(["flip", "flip", "vr", "truncate"])
    if kind == "truncate":
        at = rng.randrange(0, len(raw))
        path.write_bytes(bytes(raw[:at]))
        return f"truncate {path.name} at {at}"
    if kind == "vr":
        at = rng.randrange(132, max(133, header_end - 6))
        raw[at:at + 2] = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2))
        path.write_bytes(bytes(raw))
        return f"vr bytes of {path.name} at {at}"
    flips = []
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(0, header_end)
        raw[at] = rng.randrange(256)
        flips.append(at)
    path.write_bytes(bytes(raw))
    return f"flip {path.name} at {flips}"


class Hang(Exception):
    pass


def on_alarm(signum, frame) -> None:
    raise Hang


def run_case(export: Path, out: Path) -> tuple[str | None, str]:
    """(what escaped or None, stderr)."""
    err = io.StringIO()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(30)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                convert(export, out)
            except SystemExit as error:
                return f"SystemExit {error.code}", err.getvalue()
            except Hang:
                return "hang (over 30 s)", err.getvalue()
            except Exception as error:  # what the fuzz looks for: anything that escapes is a failure
                from model.errors import InputError
                if isinstance(error, InputError):
                    return None, err.getvalue() + f"error: {error}\n"
                return f"{type(error).__name__}: {error}", err.getvalue()
    finally:
        signal.alarm(0)
    return None, err.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=number(float, 0.0, 1e6), default=120)
    parser.add_argument("--cases", type=number(int, 0, 10**9), default=0,
                        help="stop after this many cases (0: by time)")
    parser.add_argument("--seed", type=random_seed, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {machine_label()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fuzz_dicom.") as tmp:
        clean, reference = Path(tmp) / "clean", Path(tmp) / "reference"
        make_export(clean)
        outcome, _ = run_case(clean, reference)
        assert outcome is None, outcome
        expected = volumes(reference)
        files = sorted(p for p in clean.rglob("*") if p.is_file())
        start, count, counts, failures = time.perf_counter(), 0, {"refused": 0, "converted": 0, "warned": 0}, []
        while (args.cases and count < args.cases) or (not args.cases and time.perf_counter() - start < args.seconds):
            count += 1
            export, out = Path(tmp) / f"case{count}", Path(tmp) / f"out{count}"
            shutil.copytree(clean, export)
            what = damage(export / rng.choice(files).relative_to(clean), rng)
            escaped, stderr = run_case(export, out)
            written = volumes(out) if out.exists() else {}
            # Compared by content: a damaged PatientID renames the folder (refused now), not the volumes.
            changed = [name for name, value in written.items() if value not in expected.values()]
            if escaped:
                failures.append(f"{what}: {escaped}")
            elif changed and not stderr.strip():
                failures.append(f"{what}: {', '.join(changed)} differ from the undamaged export's, nothing said")
            counts["refused" if "error:" in stderr else "warned" if stderr.strip() else "converted"] += 1
            shutil.rmtree(export)
            shutil.rmtree(out, ignore_errors=True)
    print(f"{count} cases in {time.perf_counter() - start:.0f} s (seed {args.seed}): {counts['refused']} with a "
          f"study refused, {counts['warned']} converted with a warning, {counts['converted']} converted silently "
          f"(identical to the undamaged export's); {len(failures)} failures")
    for line in failures[:50]:
        print(f"FAIL {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
