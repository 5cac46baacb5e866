"""The error every check raises, and the "did you mean" its messages offer."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["InputError", "closest"]


class InputError(ValueError):
    """Bad input found before training: a config file, config key or value, or dataset.

    The message is the whole explanation (what, the value received, what is accepted), so
    a command line prints it as it is, without a traceback.
    """


def closest(value: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``value`` (ignoring case), or None when none is close.

    Case is ignored because the usual slip is "frn" for "FRN" or "model.fpn.norm" for
    "MODEL.FPN.NORM", which a case-sensitive difflib ratio scores as unrelated.
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    matches = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None
