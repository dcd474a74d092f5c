"""Schedules of a value over training progress (epsilon, learning rate, PER beta)."""

from __future__ import annotations

import math
from typing import Literal, get_args

from rlkit.errors import RLKitError

LRSchedule = Literal["constant", "linear", "cosine", "step"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """``start`` at step 0, moving linearly to ``end`` at ``duration``, then constant."""
    if duration <= 0:
        return end
    fraction = min(max(step / duration, 0.0), 1.0)
    return start + fraction * (end - start)


def lr_factor(schedule: str, step: int, total_steps: int, step_every: int = 1, step_gamma: float = 0.5) -> float:
    """Learning-rate factor at env step ``step`` of ``total_steps``: constant 1; linear 1 - p and cosine
    (1 + cos(pi p)) / 2 with p = step / total_steps clipped to [0, 1]; step: ``step_gamma ** (step // step_every)``."""
    progress = min(max(step / total_steps, 0.0), 1.0) if total_steps > 0 else 1.0
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return step_gamma ** (max(step, 0) // max(step_every, 1))
    raise RLKitError(f"unknown lr_schedule {schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}.")
