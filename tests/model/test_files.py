"""The atomic write: a file reaches its final name whole or not at all, even past `ulimit -f` or a full disk."""

import contextlib
import errno
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model.errors import WriteError
from model.files import atomic_target, atomic_write_bytes
from tests.conftest import ROOT


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run_with_file_size_limit(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run Python ``code`` with RLIMIT_FSIZE (`ulimit -f`): Python ignores SIGXFSZ, so writes past the limit
    fail with EFBIG instead of killing the process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (root with CAP_SYS_ADMIN only), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): the full-disk case is "
                    "covered by the ulimit -f tests")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Fill a file system until it refuses another byte."""
    with open(folder / "filler", "wb", buffering=0) as handle, pytest.raises(OSError) as full:
        while True:
            handle.write(b"\x00" * 4096)
    assert full.value.errno == errno.ENOSPC


def test_bytes_are_synced_and_renamed(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert (tmp_path / "a.json").read_bytes() == b"{}" and synced
    assert leftovers(tmp_path) == ["a.json"]


def test_a_failed_check_leaves_nothing_and_keeps_the_old_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")

    def refuse(tmp: Path) -> None:
        raise WriteError(f"{tmp}: not what was meant")

    with pytest.raises(WriteError, match="not what was meant"), atomic_target(tmp_path / "a.bin", verify=refuse) as tmp:
        tmp.write_bytes(b"new")
    assert leftovers(tmp_path) == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"old"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failure_in_the_block_removes_the_temporary_file(tmp_path, error):
    with pytest.raises(WriteError if isinstance(error, OSError) else KeyboardInterrupt), \
            atomic_target(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert leftovers(tmp_path) == []


def test_file_size_limit(tmp_path):
    result = run_with_file_size_limit(f"""
        from model.errors import WriteError
        from model.files import atomic_write_bytes
        try:
            atomic_write_bytes({str(tmp_path / 'big.bin')!r}, b"x" * 4096)
        except WriteError as error:
            print(error)
    """, limit=1024)
    assert result.returncode == 0, result.stderr
    assert "big.bin: not written (File too large)" in result.stdout
    assert leftovers(tmp_path) == []


def test_full_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        with pytest.raises(WriteError, match="not written"):
            atomic_write_bytes(disk / "results.json", b"[]" * 4096)
        assert leftovers(disk) == ["filler"]


def test_an_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(WriteError, match=r"file/a\.json: cannot be written \(File exists\)"):
        atomic_write_bytes(tmp_path / "file" / "a.json", b"{}")
