"""runner.interrupts: Ctrl-C held while a case is written, never lost in an ignored callback (issue 24 item 4);
the process-level checks at every stage are in tests/test_process.py."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from runner import interrupts


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(1000))  # the handler runs here


def test_an_interrupt_during_a_deferred_block_is_raised_when_it_ends():
    finished = []
    with interrupts.handling(), pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            _sigint()
            finished.append("the write")
    assert finished == ["the write"] and not interrupts.requested()  # answered: nothing later sees it


def test_an_interrupt_lost_in_a_callback_is_quiet_and_stops_the_run_at_the_next_safe_point(capsys):
    class Collected:
        def __del__(self) -> None:
            _sigint()

    hook = sys.unraisablehook
    with interrupts.handling():
        Collected()  # its __del__ runs now; Python ignores the KeyboardInterrupt raised in it
        assert interrupts.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_requested()
    assert "Exception ignored" not in capsys.readouterr().err and sys.unraisablehook is hook


def test_a_second_interrupt_while_the_first_is_handled_does_not_raise_again():
    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt):
            _sigint()
        _sigint()  # the run is on its way out (cleaning up): no second KeyboardInterrupt in its handler
        assert interrupts.requested()
