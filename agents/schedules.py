"""Schedules of a value over training progress (epsilon, learning rate, PER beta)."""

from __future__ import annotations

import math


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """``start`` at step 0, moving linearly to ``end`` at ``duration``, then constant."""
    if duration <= 0:
        return end
    fraction = min(max(step / duration, 0.0), 1.0)
    return start + fraction * (end - start)


def lr_multiplier(schedule: str, progress: float, step_every: float = 0.25, step_gamma: float = 0.5) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of training: constant, linear (to 0), cosine (to 0),
    or step (x ``step_gamma`` after every ``step_every`` of training)."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return step_gamma ** math.floor(progress / step_every)
    raise ValueError(f"unknown lr schedule {schedule!r}")
