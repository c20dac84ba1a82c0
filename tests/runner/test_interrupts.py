"""runner.interrupts: Ctrl-C held while a case is written, never lost in an ignored callback (issue 24 item 4);
the process-level checks at every stage are in tests/test_process.py.

Each check sends a real SIGINT to its own process, so each runs in a fresh interpreter: a signal sent to the
test session's process is delivered wherever that long-lived process stands (after other tests have loaded
OpenVINO's runtime it ended the session with a segmentation fault, which no single test reproduces)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner import interrupts

ROOT = Path(__file__).resolve().parents[2]


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(1000))  # the handler runs here


def _in_a_fresh_process(check: str) -> subprocess.CompletedProcess:
    code = f"import tests.runner.test_interrupts as checks; checks.{check}(); print('checked')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.strip().endswith("checked"), done.stderr
    return done


def check_an_interrupt_during_a_deferred_block_is_raised_when_it_ends() -> None:
    finished = []
    with interrupts.handling(), pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            _sigint()
            finished.append("the write")
    assert finished == ["the write"] and not interrupts.requested()  # answered: nothing later sees it


def check_an_interrupt_lost_in_a_callback_stops_the_run_at_the_next_safe_point() -> None:
    class Collected:
        def __del__(self) -> None:
            _sigint()

    hook = sys.unraisablehook
    with interrupts.handling():
        Collected()  # its __del__ runs now; Python ignores the KeyboardInterrupt raised in it
        assert interrupts.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_requested()
    assert sys.unraisablehook is hook


def check_a_second_interrupt_while_the_first_is_handled_does_not_raise_again() -> None:
    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt):
            _sigint()
        _sigint()  # the run is on its way out (cleaning up): no second KeyboardInterrupt in its handler
        assert interrupts.requested()


def test_an_interrupt_during_a_deferred_block_is_raised_when_it_ends():
    _in_a_fresh_process("check_an_interrupt_during_a_deferred_block_is_raised_when_it_ends")


def test_an_interrupt_lost_in_a_callback_is_quiet_and_stops_the_run_at_the_next_safe_point():
    done = _in_a_fresh_process("check_an_interrupt_lost_in_a_callback_stops_the_run_at_the_next_safe_point")
    assert "Exception ignored" not in done.stderr


def test_a_second_interrupt_while_the_first_is_handled_does_not_raise_again():
    _in_a_fresh_process("check_a_second_interrupt_while_the_first_is_handled_does_not_raise_again")
