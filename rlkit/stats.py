"""Score statistics: IQM, human-normalised Atari scores, aggregates over tasks, stratified bootstrap CIs.

The aggregates over tasks are rliable's (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice";
google-research/rliable, metrics.py): ``aggregate_mean`` and ``aggregate_median`` are the mean and median over
tasks of each task's mean over runs, ``aggregate_iqm`` is the IQM of all runs' scores of all tasks together.
The stratified bootstrap resamples runs with replacement *within each task*, recomputes the aggregate from the
resamples and reports percentile intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# (random, human) scores for ALE games (Mnih et al. 2015 / Badia et al. 2020 tables).
ATARI_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "Pong": (-20.7, 14.6),
    "Breakout": (1.7, 30.5),
    "SpaceInvaders": (148.0, 1668.7),
    "Seaquest": (68.4, 42054.7),
    "BeamRider": (363.9, 16926.5),
    "Qbert": (163.9, 13455.0),
    "Enduro": (0.0, 860.5),
    "MsPacman": (307.3, 6951.6),
    "Asterix": (210.0, 8503.3),
    "Freeway": (0.0, 29.6),
}


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: drop the lowest and highest ``floor(n / 4)`` values, average the rest.

    The same as ``scipy.stats.trim_mean(values, 0.25)``, the definition rliable uses.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if len(x) == 0:
        raise ValueError("iqm of no values")
    cut = len(x) // 4
    return float(x[cut : len(x) - cut].mean())


def human_normalized(env_id: str, score: float) -> float | None:
    """(score - random) / (human - random) for known Atari games; None otherwise."""
    game = env_id.removeprefix("ALE/").split("-")[0]
    if game not in ATARI_REFERENCE_SCORES:
        return None
    random_score, human_score = ATARI_REFERENCE_SCORES[game]
    return (score - random_score) / (human_score - random_score)


def summarize(returns: Sequence[float], lengths: Sequence[int] | None = None) -> dict[str, float]:
    """mean, std, median, IQM, min, max (and mean length) of per-episode returns."""
    r = np.asarray(returns, dtype=np.float64)
    out = {
        "episodes": int(len(r)),
        "mean": float(r.mean()),
        "std": float(r.std()),
        "median": float(np.median(r)),
        "iqm": iqm(r),
        "min": float(r.min()),
        "max": float(r.max()),
    }
    if lengths is not None and len(lengths):
        out["mean_length"] = float(np.mean(lengths))
    return out


def aggregate_mean(per_task: Sequence[np.ndarray]) -> float:
    """rliable's ``aggregate_mean``: the mean over tasks of each task's mean over runs."""
    return float(np.mean([np.mean(task) for task in per_task]))


def aggregate_median(per_task: Sequence[np.ndarray]) -> float:
    """rliable's ``aggregate_median``: the median over tasks of each task's mean over runs."""
    return float(np.median([np.mean(task) for task in per_task]))


def aggregate_iqm(per_task: Sequence[np.ndarray]) -> float:
    """rliable's ``aggregate_iqm``: the IQM of every run's score of every task together (a task with more runs
    weighs more)."""
    return iqm(np.concatenate([np.ravel(task) for task in per_task]))


def stratified_bootstrap_ci(
    scores: np.ndarray | Sequence[np.ndarray],
    statistic: Callable[[Any], float],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    by_task: bool = False,
) -> tuple[float, float, float]:
    """Point estimate and percentile CI of ``statistic`` under the stratified bootstrap.

    ``scores`` is a (runs, tasks) matrix or a list with one array of run scores per task. Each replicate
    resamples runs with replacement independently within every task and applies ``statistic`` to the resampled
    scores: to all of them concatenated, or with ``by_task`` to the list of per-task resamples (for aggregates
    over tasks such as ``aggregate_mean``). The point estimate is ``statistic`` of the scores themselves.
    """
    if isinstance(scores, np.ndarray):
        matrix = scores if scores.ndim == 2 else scores[:, None]
        per_task = [matrix[:, t] for t in range(matrix.shape[1])]
    else:
        per_task = [np.asarray(task, dtype=np.float64).ravel() for task in scores]
    if not per_task or any(len(task) == 0 for task in per_task):
        raise ValueError("every task needs at least one run score")

    def apply(tasks: list[np.ndarray]) -> float:
        return float(statistic(tasks if by_task else np.concatenate(tasks)))

    rng = np.random.default_rng(seed)
    estimates = np.empty(reps)
    for k in range(reps):
        estimates[k] = apply([task[rng.integers(0, len(task), len(task))] for task in per_task])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha])
    return apply(per_task), float(low), float(high)
