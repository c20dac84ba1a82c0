"""Writing files so that no reader ever sees half of one: write beside the target, prove it whole, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from model.errors import WriteError, shown


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def fsync_file(path: Path) -> None:
    """Force a file's data to the disk: a full disk with delayed allocation only says so here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: Path, suffix: str = ".part",
                  verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds and
    removed when anything fails (an exception, Ctrl-C). ``suffix`` lets writers that choose a format by
    extension (SimpleITK) see it.

    Before the rename the file is synced to disk and, with ``verify``, checked (``verify`` raises when the
    file is not what was meant to be written): writers that swallow their errors (ITK past ``ulimit -f`` or
    on a full disk) cannot leave a short file under the final name. Any OSError, here or in the block,
    becomes a one-line WriteError that names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
    except OSError as error:
        raise WriteError(f"{shown(path)}: cannot be written ({_reason(error)})") from None
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        if verify is not None:
            verify(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the container's non-root user must read it
        os.replace(tmp, path)
    except WriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"{shown(path)}: not written ({_reason(error)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (WriteError)."""

    def verify(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise WriteError(f"{shown(path)}: not written ({tmp.stat().st_size} of {len(data)} bytes reached the disk)")

    with atomic_target(path, verify=verify) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
