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


class AgentActor:
    """Batched observations (+ episode-start flags) -> actions of one agent, with fixed ``act`` keyword
    arguments. For a recurrent agent (``agent.recurrent``) it carries the state of every env between calls,
    zeroing an env's state where ``episode_start`` is set; the first call starts every env afresh."""

    def __init__(self, agent: Any, **act_kwargs: Any) -> None:
        self.agent, self.act_kwargs = agent, act_kwargs
        self.state: Any = None
        self.stateful = bool(getattr(agent, "recurrent", False))

    def __call__(self, obs: np.ndarray, episode_start: np.ndarray | None = None) -> np.ndarray:
        if not getattr(self.agent, "recurrent", False):
            return self.agent.act(obs, **self.act_kwargs)
        if self.state is None:
            self.state, episode_start = self.agent.initial_state(len(obs)), np.ones(len(obs), dtype=bool)
        actions, self.state = self.agent.act(obs, state=self.state, episode_start=episode_start, **self.act_kwargs)
        return actions


def evaluate(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seed: int,
    env_kwargs: dict | None = None,
    num_envs: int = 8,
    max_steps: int = 10_000_000,
    pipeline: bool = False,
) -> EvalResult:
    """Play ``episodes`` full episodes with ``act`` (batched obs, episode-start flags -> actions; e.g. an
    ``AgentActor``) on ``num_envs`` parallel envs.

    Episodes are split evenly across envs beforehand, so short episodes are not over-represented. With
    next-step autoreset, an env's observation starts an episode after ``reset`` and after a step that follows
    an episode end (that step's action is ignored).
    """
    num_envs = max(1, min(num_envs, episodes))
    targets = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=np.int64)
    result = EvalResult()
    keys: tuple[str, ...] = ()

    def record(info: dict, offset: int) -> None:
        for i, ret, length in episode_stats(info):
            values = final_info_values(info, i, keys)  # i indexes this group's info
            i += offset
            if counts[i] < targets[i]:
                counts[i] += 1
                result.returns.append(ret)
                result.lengths.append(length)
                for key, value in values.items():
                    result.metrics[key].append(value)

    pipelined = pipeline and not getattr(act, "stateful", False)
    groups = _eval_envs(env_id, num_envs, seed, env_kwargs, pipelined=pipelined)
    keys = episode_metric_keys(groups[0])
    result.metrics = {key: [] for key in keys}
    try:
        if len(groups) == 2:
            _play_pipelined(act, groups, seed, record, counts, targets, max_steps)
        else:
            envs = groups[0]
            obs, _ = envs.reset(seed=seed)
            episode_start = np.ones(num_envs, dtype=bool)
            ended = np.zeros(num_envs, dtype=bool)
            # Envs that have played their episodes keep stepping (a vector env steps all of them) but the policy
            # only runs for the others: the tail of long, uneven games costs no forward passes for idle envs.
            # A stateful policy keeps one state row per env, so it always sees the whole batch.
            trim = not getattr(act, "stateful", False) and isinstance(obs, np.ndarray)
            actions = None
            for _ in range(max_steps):
                playing = counts < targets
                if trim and actions is not None and not playing.all():
                    actions = actions.copy()  # idle envs repeat their last (valid) action
                    actions[playing] = act(obs[playing], episode_start[playing])
                else:
                    actions = act(obs, episode_start)
                episode_start = ended  # this step reset the envs whose episodes ended on the previous step
                obs, _, terminated, truncated, info = envs.step(actions)
                ended = np.asarray(terminated) | np.asarray(truncated)
                record(info, 0)
                if (counts >= targets).all():
                    break
    finally:
        for envs in groups:
            envs.close()
    return result


def _eval_envs(
    env_id: str, num_envs: int, seed: int, env_kwargs: dict | None, pipelined: bool = True
) -> list[Any]:
    """One vector env, or two halves when the env steps asynchronously (ALE), there are >= 4 envs and the
    policy keeps no state across calls (a recurrent policy's state is laid out for one batch of all envs)."""
    envs = make_vec_env(env_id, num_envs, seed=seed, mode="eval", env_kwargs=env_kwargs)
    if not pipelined or num_envs < 4 or not getattr(envs, "supports_async", False):
        return [envs]
    envs.close()
    half = num_envs // 2
    # The second half's seed is offset so its games differ from the first half's.
    return [
        make_vec_env(env_id, half, seed=seed, mode="eval", env_kwargs=env_kwargs),
        make_vec_env(env_id, num_envs - half, seed=seed + 10_007, mode="eval", env_kwargs=env_kwargs),
    ]


def _play_pipelined(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    groups: list[Any],
    seed: int,
    record: Callable[[dict, int], None],
    counts: np.ndarray,
    targets: np.ndarray,
    max_steps: int,
) -> None:
    """Ping-pong between two halves: the network acts for one half while ALE's threads step the other, so
    the forward pass and emulation overlap instead of alternating."""
    first, second = groups
    offset = first.num_envs
    obs_first, _ = first.reset(seed=seed)
    obs_second, _ = second.reset(seed=seed + 10_007)
    # With next-step autoreset an observation starts an episode after a reset or after a step that ended one.
    start_second = np.ones(second.num_envs, bool)
    ended_first, ended_second = np.zeros(first.num_envs, bool), np.zeros(second.num_envs, bool)
    first.step_async(act(obs_first, np.ones(first.num_envs, bool)))
    for _ in range(max_steps):
        actions_second = act(obs_second, start_second)  # overlaps the first half's emulation
        obs_first, _, terminated, truncated, info = first.step_wait()
        start_first, ended_first = ended_first, np.asarray(terminated) | np.asarray(truncated)
        second.step_async(actions_second)
        record(info, 0)
        actions_first = act(obs_first, start_first)  # overlaps the second half's emulation
        obs_second, _, terminated, truncated, info = second.step_wait()
        start_second, ended_second = ended_second, np.asarray(terminated) | np.asarray(truncated)
        first.step_async(actions_first)
        record(info, offset)
        if (counts >= targets).all():
            break
    first.step_wait()  # leave no step in flight before closing


def evaluate_during_training(agent: Any, run: Any) -> float:
    """Periodic evaluation of a training agent: TensorBoard ``eval/*``, a line in ``eval/evaluations.jsonl``,
    and ``checkpoints/best.safetensors`` when the mean improves. Uses its own RNG, so evaluating never
    changes the training run's exploration."""
    cfg = agent.config
    started = time.time()
    eval_rng = np.random.default_rng(cfg.seed + 1_000_003)
    epsilon = getattr(cfg, "eval_epsilon", 0.0)
    result = evaluate(
        AgentActor(agent, epsilon=epsilon, rng=eval_rng),
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
