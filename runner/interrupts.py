"""Ctrl-C (SIGINT) for a whole run: one controlled way out, wherever the signal lands.

Python's default raises KeyboardInterrupt at whatever bytecode runs when the signal arrives. Landing in a
weakref callback or a ``__del__`` (the garbage collector runs them anywhere), the exception is "ignored" and
the run carries on to exit 0; landing between a case's mask and its reports, it leaves half a case. Here:

- ``handling()`` (process.py's main, main thread) installs a handler that records the request and raises
  KeyboardInterrupt once, at once, so that a long read or network step stops promptly;
- a KeyboardInterrupt that Python had to ignore (sys.unraisablehook) is not printed and re-arms the raise;
  the recorded request still stops the run at the next safe point (``raise_if_requested``: between cases,
  before results.json), so an interrupt always ends the run;
- ``deferred()`` holds the interrupt while a case's files are written and while the read-ahead worker is
  joined, and raises it after: a case is written whole or not at all, and no reader holds stderr when the
  run says ``interrupted``.

Without ``handling()`` (the Python API, tests) Python's default stays and these functions only read the
request, which is then never made.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType


class _Request:
    def __init__(self) -> None:
        self.made = False  # a SIGINT arrived during handling()
        self.raised = False  # its KeyboardInterrupt was raised (and not lost in an ignored callback)
        self.deferring = 0  # depth of deferred() in the main thread


_request = _Request()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _request.made = True
    if not _request.raised and _request.deferring == 0:
        _request.raised = True
        raise KeyboardInterrupt


def requested() -> bool:
    """Whether Ctrl-C was pressed during ``handling()``."""
    return _request.made


def raise_if_requested() -> None:
    """A safe point: KeyboardInterrupt when Ctrl-C was pressed, even if its first raise was lost."""
    if _request.made:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """In the main thread, Ctrl-C during the body is held and raised when it ends (elsewhere: the body as is;
    signals only ever interrupt the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _request.deferring += 1
    try:
        yield
    finally:
        _request.deferring -= 1
    raise_if_requested()


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """The run's SIGINT handling for the body; the previous handler and unraisable hook are restored after it.
    Outside the main thread (which alone receives signals, and alone may set their handlers) the body runs as
    it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_handler = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook

    def quiet_lost_interrupts(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt) and _request.made:
            _request.raised = False  # lost: the next SIGINT raises again; the request stops the run meanwhile
            return
        previous_hook(unraisable)

    _request.__init__()
    sys.unraisablehook = quiet_lost_interrupts
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook
        _request.__init__()  # answered: code run later in this process (the Python API) starts without it
