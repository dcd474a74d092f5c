"""Evaluation: full episodes in evaluation-mode envs (Atari: unclipped rewards, no life-loss episodes).

Besides returns and lengths, an env can name numeric keys of its final-step ``info`` to aggregate over episodes
(success, SPL, route completion, ...) in ``metadata["episode_metrics"]``; their per-episode values and means land
in ``EvalResult.metrics`` / ``summary()``, eval.json, the printed table and TensorBoard (``eval/<key>``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlkit.envs import episode_stats, make_vec_env
from rlkit.stats import summarize


def episode_metric_keys(envs: Any) -> tuple[str, ...]:
    """The final-step info keys an env asks evaluation to aggregate (``metadata["episode_metrics"]``)."""
    metadata = getattr(envs, "metadata", None) or {}
    return tuple(metadata.get("episode_metrics", ()))


def final_info_values(info: dict, index: int, keys: tuple[str, ...]) -> dict[str, float]:
    """Values of ``keys`` for sub-env ``index`` from a vector env's step ``info`` (skipping absent ones)."""
    out = {}
    for key in keys:
        if key in info and info.get(f"_{key}", np.ones(index + 1, bool))[index]:
            out[key] = float(info[key][index])
    return out


@dataclass
class EvalResult:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    """Per-episode values of the env's ``episode_metrics`` (final-step info), e.g. success, spl."""

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def summary(self) -> dict[str, float]:
        """episodes, mean, std, median, iqm, min, max, mean_length, then the mean of each episode metric."""
        out = summarize(self.returns, self.lengths)
        out.update({key: float(np.mean(values)) for key, values in self.metrics.items() if values})
        return out


def evaluate(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seed: int,
    env_kwargs: dict | None = None,
    num_envs: int = 8,
    max_steps: int = 10_000_000,
) -> EvalResult:
    """Play ``episodes`` full episodes with ``act`` (batched obs -> actions) on ``num_envs`` parallel envs.

    Episodes are split evenly across envs beforehand, so short episodes are not over-represented.
    """
    num_envs = max(1, min(num_envs, episodes))
    targets = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=np.int64)
    envs = make_vec_env(env_id, num_envs, seed=seed, mode="eval", env_kwargs=env_kwargs)
    keys = episode_metric_keys(envs)
    result = EvalResult(metrics={key: [] for key in keys})
    try:
        obs, _ = envs.reset(seed=seed)
        for _ in range(max_steps):
            obs, _, _, _, info = envs.step(act(obs))
            for i, ret, length in episode_stats(info):
                if counts[i] < targets[i]:
                    counts[i] += 1
                    result.returns.append(ret)
                    result.lengths.append(length)
                    for key, value in final_info_values(info, i, keys).items():
                        result.metrics[key].append(value)
            if (counts >= targets).all():
                break
    finally:
        envs.close()
    return result


def evaluate_during_training(agent: Any, run: Any) -> float:
    """Periodic evaluation of a training agent: TensorBoard ``eval/*``, a line in ``eval/evaluations.jsonl``,
    and ``checkpoints/best.safetensors`` when the mean improves. Uses its own RNG, so evaluating never
    changes the training run's exploration."""
    cfg = agent.config
    started = time.time()
    eval_rng = np.random.default_rng(cfg.seed + 1_000_003)
    epsilon = getattr(cfg, "eval_epsilon", 0.0)
    result = evaluate(
        lambda obs: agent.act(obs, epsilon=epsilon, rng=eval_rng),
        cfg.env_id,
        cfg.eval_episodes,
        seed=cfg.seed + 1_000_003,
        env_kwargs=cfg.env_kwargs,
        num_envs=min(cfg.eval_episodes, 10),
    )
    summary = result.summary()
    step = agent.global_step
    extra = {key: summary[key] for key in result.metrics if key in summary}
    run.log_scalars({"eval/mean_return": summary["mean"], "eval/std_return": summary["std"],
                     **{f"eval/{key}": value for key, value in extra.items()}}, step)
    record = {"step": step, **summary, "returns": result.returns, "lengths": result.lengths,
              "metrics": result.metrics}
    with open(run.eval_dir / "evaluations.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    improved = summary["mean"] > agent.best_eval
    if improved:
        agent.best_eval = summary["mean"]
        agent.save(run.checkpoint_dir / "best.safetensors")
    run.print(
        f"eval @ {step}: mean {summary['mean']:.2f} +/- {summary['std']:.2f} over "
        f"{summary['episodes']} episodes (min {summary['min']:.0f}, max {summary['max']:.0f})"
        f"{''.join(f', {key} {value:.2f}' for key, value in extra.items())}"
        f"{' new best' if improved else ''} [{time.time() - started:.0f}s]"
    )
    return summary["mean"]
