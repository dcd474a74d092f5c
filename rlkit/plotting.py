"""Learning-curve plots from a run's TensorBoard events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlkit.errors import RLKitError


def _finish(fig: Any, ax: Any, out: str | Path, ylabel: str, title: str) -> Path:
    """Label the axes, save the figure as ``out`` and close it; returns the path written (a name without a
    suffix gets matplotlib's default format, ``.png``)."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("environment steps (agent steps; Atari frames = 4 x steps)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(out)
    if not out.suffix:  # savefig would add the suffix itself: name the file it writes
        out = out.with_name(f"{out.name}.{plt.rcParams['savefig.format']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def read_scalars(run_dir: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of scalar ``tag`` across every events file of a run directory: every point, several at one
    step included (episodes of vector envs that end together); where a resumed run's file starts at or before
    the steps an earlier file reached, the later file's points replace the earlier ones from there on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    if not files:
        raise RLKitError(f"{run_dir} has no TensorBoard events; pass a run directory made by `rlkit train`.")
    points: list[tuple[int, float]] = []
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            events = [(event.step, event.value) for event in acc.Scalars(tag)]
            if events:
                first = min(step for step, _ in events)
                points = [point for point in points if point[0] < first] + events
    points.sort(key=lambda point: point[0])  # stable: points of one step keep their logged order
    return (np.array([step for step, _ in points], dtype=np.int64),
            np.array([value for _, value in points], dtype=np.float64))


def plot_run(run_dir: str | Path, out: str | Path, title: str | None = None, smooth: int = 20) -> Path:
    """Training episode returns (raw and moving average) and evaluation means against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, returns = read_scalars(run_dir, "charts/episodic_return")
    eval_steps, eval_means = read_scalars(run_dir, "eval/mean_return")
    if len(steps) == 0 and len(eval_steps) == 0:
        raise RLKitError(f"{run_dir} has no episode returns logged yet; train longer before plotting.")
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(steps):
        ax.plot(steps, returns, color="tab:blue", alpha=0.25, lw=0.8, label="training episodes")
        if len(returns) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(steps[smooth - 1 :], np.convolve(returns, kernel, "valid"), color="tab:blue",
                    label=f"training, mean of {smooth}")
    if len(eval_steps):
        ax.plot(eval_steps, eval_means, "o-", color="tab:red", label="evaluation mean (full games)")
    return _finish(fig, ax, out, "episode return", title or Path(run_dir).name)


def plot_groups(targets: list[str], out: str | Path, title: str | None = None, metric: str = "mean") -> Path:
    """Evaluation curves of runs or groups: mean across seeds with a 95% bootstrap CI band, x = env steps.

    ``metric``: the evaluation record's key plotted (``mean`` return by default, or e.g. ``success``, ``spl``).
    A group whose runs are of several envs is refused for a return metric (raw returns on different scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlkit.results import check_one_scale, curve_band, load_group

    groups = [(target, load_group(target, metric)) for target in targets]
    for target, results in groups:
        check_one_scale(target, results, metric, normalized=False, command="plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    for target, results in groups:
        steps, mean, low, high = curve_band(results)
        line = ax.plot(steps, mean, label=f"{Path(target).name} ({len(results)} runs)")[0]
        if len(results) > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    name = "return" if metric == "mean" else metric
    return _finish(fig, ax, out, f"evaluation {'mean return' if metric == 'mean' else metric}",
                   title or f"evaluation {name} (mean, 95% CI over seeds)")
