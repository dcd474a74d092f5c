"""Score statistics: IQM, human-normalised Atari scores, stratified bootstrap confidence intervals.

The aggregate metrics and the stratified bootstrap follow Agarwal et al. 2021 ("Deep RL at the Edge of the
Statistical Precipice", the rliable protocol): resample runs with replacement *within each task*, recompute
the aggregate, and report percentile intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile CI of ``statistic`` over a (runs, tasks) score matrix.

    Each bootstrap replicate resamples the runs independently within every task (column).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    estimates = np.empty(reps)
    columns = np.arange(tasks)
    for k in range(reps):
        rows = rng.integers(0, runs, size=(runs, tasks))
        estimates[k] = statistic(scores[rows, columns])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha])
    return float(statistic(scores)), float(low), float(high)
