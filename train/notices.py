"""Warnings for things a user should know while data are prepared or a run trains; the work goes on."""

from __future__ import annotations

import warnings


class TrainingWarning(UserWarning):
    """The data or the run are not quite as expected (unknown diagnoses, merged strata, skipped steps)."""


def warn(message: str) -> None:
    warnings.warn(message, TrainingWarning, stacklevel=2)


def one_line_warnings() -> None:
    """Print TrainingWarnings as ``warning: <message>`` (the command line), other warnings as Python does."""
    default = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, TrainingWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatted
    warnings.simplefilter("always", TrainingWarning)
