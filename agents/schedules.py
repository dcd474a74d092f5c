"""Schedules of a value over training progress (epsilon, learning rate, PER beta)."""

from __future__ import annotations


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """``start`` at step 0, moving linearly to ``end`` at ``duration``, then constant."""
    if duration <= 0:
        return end
    fraction = min(max(step / duration, 0.0), 1.0)
    return start + fraction * (end - start)
