"""The exception types for problems a user can fix, and the one way a message becomes one printable line."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator


def one_line(text: object) -> str:
    """``text`` as one printable line whose characters are all seen: control characters (a newline in a file
    name) are escaped as Python writes them (``\\n``, ``\\x1b``), every other character that prints nothing
    (Unicode's format class Cf: the bidi overrides such as U+202E, which made ``patient_99<U+202E>21_tneitap``
    read as "patient_99patient_12"; zero-width characters; line and paragraph separators; spaces other than
    the ASCII one; private-use and unassigned code points) as ``<U+XXXX>``, and bytes that are not UTF-8 (a
    file name from another system, held by Python as surrogates) as \\xNN. The one function every message,
    console line, review page and picture title shows a name through (``shown`` for paths)."""
    try:
        raw = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        raw = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in raw)


def _escaped(ch: str) -> str:
    # str.isprintable() is False for Unicode's "Other" (Cc, Cf, Cs, Co, Cn) and "Separator" (Zl, Zp, Zs but
    # the ASCII space) categories: C0, DEL and C1 controls keep Python's familiar escapes, the rest a code point.
    if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
        return ch.encode("unicode_escape").decode("ascii")
    return f"<U+{ord(ch):04X}>"


def reason_of(error: BaseException) -> str:
    """The telling part of an exception's message, one line: ITK's are several lines whose last says why
    ("sitk::ERROR: Failed to allocate memory for image"); Python's are one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    for prefix in ("sitk::ERROR: ", "ITK ERROR: "):
        text = text.split(prefix, 1)[-1]
    return one_line(text)


def describe(error: BaseException) -> str:
    """An unexpected exception as one line: its type and reason (MemoryError has no message)."""
    reason = reason_of(error)
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def shown(path: os.PathLike | str) -> str:
    """A file name for a message: one line, whatever bytes the name holds."""
    return one_line(os.fspath(path))


class InputError(Exception):
    """Bad input (image, weights, configuration, folders); the message names the file and the problem, and is
    kept to one line whatever the names in it hold."""

    def __init__(self, message: object) -> None:
        super().__init__(one_line(message))


class WriteError(OSError):
    """A file could not be written completely (full disk, file size limit, I/O error); nothing was left under
    its final name. An OSError, so that callers which handle failed writes handle this one too."""

    def __init__(self, message: object) -> None:
        super().__init__(one_line(message))

    def __str__(self) -> str:
        return str(self.args[0])


_SUBJECT = threading.local()  # what this thread works on now (warnings_about), per thread: a read runs beside


@contextlib.contextmanager
def warnings_about(subject: str) -> Iterator[None]:
    """Warnings raised in this thread inside are shown naming ``subject`` (a case, a file, a series): a
    library's warning names its own source line, never the input it is about. Per thread, so that the read of
    one case beside the network of another names each its own."""
    outer = getattr(_SUBJECT, "name", None)
    _SUBJECT.name = subject
    try:
        yield
    finally:
        _SUBJECT.name = outer


def show_warnings_as_lines() -> None:
    """Python warnings as one ``warning: <subject>: <text>`` line each on stderr, the subject being what the
    warning's thread was working on (``warnings_about``): pydicom remarks on a loosely written header value in
    two lines that name its own source file, which tells a user nothing and splits the one-line-per-problem
    output. Each line is shown once per run (Python's own once-per-place registry is reset by every
    ``catch_warnings``). Only the format changes, not the display hook, so that pytest and other recorders
    still see every warning."""
    seen: set[str] = set()

    def formatted(message, category, filename, lineno, line=None) -> str:
        subject = getattr(_SUBJECT, "name", None)
        text = f"warning: {one_line(subject) + ': ' if subject else ''}{one_line(message)}\n"
        if text in seen:
            return ""  # written as nothing
        seen.add(text)
        return text

    warnings.formatwarning = formatted
