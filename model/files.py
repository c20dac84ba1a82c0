"""Writing files so that no reader ever sees half of one: write beside the target, prove it whole, then rename."""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from model.errors import InputError, WriteError, shown


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


def open_regular(path: Path, what: str, mode: str = "rb", **kwargs) -> IO:
    """Open a file for reading only if it is a regular file: a FIFO would block the run forever and a device
    would be read without end. Opened without blocking and checked on the open descriptor (no window between
    a check and the open); InputError names the file, FileNotFoundError passes through for callers that say
    "missing" their own way."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{shown(path)}: {what} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def _not_a_json_number(token: str) -> float:
    raise ValueError(f"{token} is not a JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"{token} is not a finite number")
    return value


def loads_strict(text: str | bytes) -> Any:
    """JSON as the standard has it: Python's json accepts NaN, Infinity and 1e400 (inf); refused here."""
    return json.loads(text, parse_constant=_not_a_json_number, parse_float=_finite_float)


def undefined_as_null(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics for JSON: an undefined mean (NaN: Dice over no positive case) becomes null, "not defined"."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in metrics.items()}


def dumps_strict(document: Any, indent: int | None = 2) -> bytes:
    """JSON that any strict parser reads: a NaN or infinity raises ValueError instead of writing ``NaN``."""
    return json.dumps(document, indent=indent, allow_nan=False).encode()


def atomic_write_json(path: Path, document: Any, indent: int | None = 2) -> None:
    """Every JSON file the project writes: strict (no NaN/Infinity), whole or not at all."""
    atomic_write_bytes(path, dumps_strict(document, indent))
