"""Warnings for things a user should know while data are prepared or a run trains; the work goes on."""

from __future__ import annotations

import warnings

from model.errors import show_warnings_as_lines


class TrainingWarning(UserWarning):
    """The data or the run are not quite as expected (unknown diagnoses, merged strata, skipped steps)."""


def warn(message: str) -> None:
    warnings.warn(message, TrainingWarning, stacklevel=2)


def one_line_warnings() -> None:
    """Every warning as one ``warning: <message>`` line (model.errors' rule, as process.py prints them), and
    every TrainingWarning shown, not only its first occurrence."""
    show_warnings_as_lines()
    warnings.simplefilter("always", TrainingWarning)
