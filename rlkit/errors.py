"""The one error type for user mistakes; the CLI prints it as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RLKitError(Exception):
    """A user mistake (bad input, missing file, unknown name): message names the problem and the fix."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of ``name`` in ``choices`` (or '')."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(lowered[c] for c in close)}?" if close else ""
