"""Evaluation: full episodes in evaluation-mode envs (Atari: unclipped rewards, no life-loss episodes).

Besides returns and lengths, an env can name numeric keys of its final-step ``info`` to aggregate over episodes
(success, SPL, route completion, ...) in ``metadata["episode_metrics"]``; their per-episode values and means land
in ``EvalResult.metrics`` / ``summary()``, eval.json, the printed table and TensorBoard (``eval/<key>``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.envs import env_family, episode_stats, make_vec_env
from rlkit.envs.ale_pool import ale_seed
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

    @property
    def draws_randomness(self) -> bool:
        """Whether its actions are drawn at random: epsilon exploration or a sampled (non-greedy) policy."""
        return (self.act_kwargs.get("epsilon") or 0) > 0 or not self.act_kwargs.get("deterministic", True)

    def split(self, count: int) -> list[AgentActor] | None:
        """``count`` actors for groups of envs played concurrently, each drawing its exploration from its own
        generator (spawned from this actor's, or the agent's), so the results do not depend on thread timing.
        None when that cannot hold: a recurrent policy (one state for all envs), or one that samples with
        torch's global generator (a stochastic policy-gradient agent)."""
        if self.stateful:
            return None
        deterministic = self.act_kwargs.get("deterministic", True)
        if getattr(self.agent, "samples_from_torch", False) and not (
            deterministic and getattr(getattr(self.agent, "config", None), "eval_deterministic", True)
        ):
            return None
        base = self.act_kwargs.get("rng") or getattr(self.agent, "rng", None)
        rngs = base.spawn(count) if isinstance(base, np.random.Generator) else [None] * count
        return [AgentActor(self.agent, **{**self.act_kwargs, "rng": rng}) for rng in rngs]


@dataclass
class _Episode:
    env_index: int
    number: int  # the env's 0th, 1st, ... episode
    ret: float
    length: int
    metrics: dict[str, float]


class EvaluationStopped(Exception):
    """``evaluate`` gave up because ``should_stop`` said so (a training run asked to stop)."""


def evaluate(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seed: int,
    env_kwargs: dict | None = None,
    num_envs: int = 8,
    max_steps: int = 10_000_000,
    workers: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Play ``episodes`` full episodes with ``act`` (batched obs, episode-start flags -> actions; e.g. an
    ``AgentActor``) on ``num_envs`` parallel envs; returns are listed by env, then by episode.

    Episodes are split evenly across envs beforehand, so short episodes are not over-represented. Env ``i``
    is seeded with ``seed + i``. With next-step autoreset, an env's observation starts an episode after
    ``reset`` and after a step that follows an episode end (that step's action is ignored).

    Atari games (the standard pipeline) are played in ``workers`` groups at once (default: one per core, at least 2
    games per group; for an actor that draws random actions, ``RANDOM_ACTOR_WORKERS`` groups whatever the cores,
    since each group draws from its own generator and the results must not depend on the machine), each group in its
    own thread with one torch thread, each game in its own one-env ``AtariVecEnv``: ALE and torch release the GIL,
    so one group's network runs while another's games step, and a game that has played its episodes stops stepping
    (a vector env would step every game until the longest ends). The episodes are the same as with one vector env
    when ``act`` is a greedy ``AgentActor`` that can be ``split``; other callables, recurrent or torch-sampling
    policies and other envs use one vector env.

    ``should_stop`` is polled every step (every 0.2 s for Atari groups); when it returns True the evaluation
    ends at once with ``EvaluationStopped``, so a stop request never waits for whole games.
    """
    num_envs = max(1, min(num_envs, episodes))
    targets = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    if workers is None:
        random_actor = isinstance(act, AgentActor) and act.draws_randomness
        workers = min(RANDOM_ACTOR_WORKERS if random_actor else os.cpu_count() or 1, num_envs // 2)
    workers = max(1, min(workers, num_envs))
    actors = act.split(workers) if workers > 1 and isinstance(act, AgentActor) else None
    if actors is None or not _per_game_atari(env_id, env_kwargs):
        played, keys = _play_vector_env(act, env_id, targets, seed, env_kwargs, max_steps, should_stop)
    else:  # Atari has no episode metrics. The seeds folded as one vector env of all the games folds them.
        base = ale_seed(seed, len(targets))
        played, keys = _play_groups(actors, env_id, targets, base, env_kwargs, max_steps, should_stop), ()
    played.sort(key=lambda episode: (episode.env_index, episode.number))
    result = EvalResult(metrics={key: [] for key in keys})
    for episode in played:
        result.returns.append(episode.ret)
        result.lengths.append(episode.length)
        for key, value in episode.metrics.items():
            result.metrics[key].append(value)
    return result


SWITCH_INTERVAL = 1e-4  # seconds; Python's default is 5e-3
RANDOM_ACTOR_WORKERS = 2
"""groups of games for an actor that draws random actions, whatever the cores: each group draws from its own
generator, so the number of groups is part of the result, and must not depend on the machine"""


def _per_game_atari(env_id: str, env_kwargs: dict | None) -> bool:
    """Whether ``env_id`` is an Atari game on the standard (nature) pipeline, which ``_play_games`` plays."""
    if env_family(env_id) != "atari":
        return False
    from rlkit.envs.atari import atari_settings

    return atari_settings("eval", dict(env_kwargs or {})).pipeline == "nature"


def _play_groups(
    actors: list[AgentActor],
    env_id: str,
    targets: np.ndarray,
    seed: int,
    env_kwargs: dict | None,
    max_steps: int,
    should_stop: Callable[[], bool] | None = None,
) -> list[_Episode]:
    """Contiguous blocks of envs, one per actor, each played in its own thread; Ctrl-C (or ``should_stop``)
    stops them all."""
    bounds = np.linspace(0, len(targets), len(actors) + 1).round().astype(int)
    stop = threading.Event()
    previous_threads, previous_interval = torch.get_num_threads(), sys.getswitchinterval()
    torch.set_num_threads(max(1, previous_threads // len(actors)))
    # A thread coming back from ALE or torch waits for the GIL up to the switch interval (5 ms by default,
    # longer than a step): a short interval lets the groups hand it over at step granularity.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(len(actors), thread_name_prefix="rlkit-eval") as pool:
            futures = [
                pool.submit(_play_games, actor, env_id, int(lo), targets[lo:hi], seed + int(lo), env_kwargs,
                            max_steps, stop)
                for actor, lo, hi in zip(actors, bounds[:-1], bounds[1:])
            ]
            try:
                while not all(future.done() for future in futures):
                    wait(futures, timeout=0.2)
                    if should_stop is not None and should_stop():
                        raise EvaluationStopped
            finally:
                stop.set()
            outcomes = [future.result() for future in futures]
    finally:
        torch.set_num_threads(previous_threads)
        sys.setswitchinterval(previous_interval)
    return [episode for played in outcomes for episode in played]


def _play_games(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    env_id: str,
    offset: int,
    targets: np.ndarray,
    seed: int,
    env_kwargs: dict | None,
    max_steps: int,
    stop: threading.Event,
) -> list[_Episode]:
    """Play ``targets[i]`` episodes of game ``i`` (seeded ``seed + i``; game ``offset + i`` of the evaluation),
    each game in its own one-env ``AtariVecEnv`` on ale-py's vector env, so only games with episodes left are
    stepped. ``AtariVecEnv`` plays the evaluation settings as for one vector env of all the games: FIRE after
    a lost life, unclipped full-game returns and lengths."""
    from rlkit.envs.atari import AtariVecEnv, atari_settings

    settings = dataclasses.replace(atari_settings("eval", dict(env_kwargs or {})), backend="ale_vector")
    count = len(targets)
    games, first_obs = [], []
    try:
        for i in range(count):  # building and seeded resets load the ROM with the GIL held: other groups wait
            games.append(AtariVecEnv(env_id, 1, settings, num_threads=1))
            first_obs.append(games[-1].reset(seed=seed + i)[0])
        obs = np.concatenate(first_obs)
        played: list[_Episode] = []
        counts = np.zeros(count, dtype=np.int64)
        starting, resetting = np.ones(count, dtype=bool), np.zeros(count, dtype=bool)
        active = [i for i in range(count) if targets[i] > 0]
        for _ in range(max_steps):
            if not active or stop.is_set():
                break
            actions = np.asarray(act(obs[active], starting[active]), dtype=np.int64)
            for k, i in enumerate(active):
                games[i].send(actions[k : k + 1])
            still_playing = []
            for i in active:
                frame, _, terminated, truncated, info = games[i].recv()
                obs[i] = frame[0]
                if resetting[i]:  # next-step autoreset: this step started the game's next episode
                    resetting[i], starting[i] = False, True
                    still_playing.append(i)
                    continue
                starting[i] = False
                if terminated[0] or truncated[0]:
                    game = info["episode"]  # the whole game's score and agent steps
                    played.append(_Episode(offset + i, int(counts[i]), float(game["r"][0]), int(game["l"][0]), {}))
                    counts[i] += 1
                    resetting[i] = counts[i] < targets[i]
                    if not resetting[i]:
                        continue
                still_playing.append(i)
            active = still_playing
    finally:
        for game in games:
            game.close()
    return played


def _play_vector_env(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    env_id: str,
    targets: np.ndarray,
    seed: int,
    env_kwargs: dict | None,
    max_steps: int,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[_Episode], tuple[str, ...]]:
    """Play ``targets[i]`` episodes on env ``i`` of one vector env; also returns the env's metric keys."""
    num_envs = len(targets)
    counts = np.zeros(num_envs, dtype=np.int64)
    played: list[_Episode] = []
    envs = make_vec_env(env_id, num_envs, seed=seed, mode="eval", env_kwargs=env_kwargs)
    keys = episode_metric_keys(envs)
    try:
        obs, _ = envs.reset(seed=seed)
        episode_start = np.ones(num_envs, dtype=bool)
        ended = np.zeros(num_envs, dtype=bool)
        # Envs that have played their episodes keep stepping (a vector env steps all of them) but the policy
        # only runs for the others: the tail of long, uneven games costs no forward passes for idle envs.
        # A stateful policy keeps one state row per env, so it always sees the whole batch.
        trim = not getattr(act, "stateful", False) and isinstance(obs, np.ndarray)
        actions = None
        for _ in range(max_steps):
            if should_stop is not None and should_stop():
                raise EvaluationStopped
            playing = counts < targets
            if trim and actions is not None and not playing.all():
                actions = actions.copy()  # idle envs repeat their last (valid) action
                actions[playing] = act(obs[playing], episode_start[playing])
            else:
                actions = act(obs, episode_start)
            episode_start = ended  # this step reset the envs whose episodes ended on the previous step
            obs, _, terminated, truncated, info = envs.step(actions)
            ended = np.asarray(terminated) | np.asarray(truncated)
            for i, ret, length in episode_stats(info):
                if counts[i] < targets[i]:
                    values = final_info_values(info, i, keys)
                    played.append(_Episode(i, int(counts[i]), ret, length, values))
                    counts[i] += 1
            if (counts >= targets).all():
                break
    finally:
        envs.close()
    return played, keys


@contextlib.contextmanager
def separate_torch_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Torch's global generators (CPU, and ``device`` when it is a GPU) seeded with ``seed`` inside the block and
    restored after it: a stochastic policy's samples during an evaluation neither depend on the training run's
    stream nor move it."""
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to a JSON-lines file as one line. A partial last line (a run killed while appending it,
    then resumed) is cut off first, so every line before the last stays a whole record."""
    with open(path, "a+b") as handle:  # writes go to the end; reads may look anywhere
        end = handle.seek(0, os.SEEK_END)
        if end:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                handle.seek(0)
                handle.truncate(handle.read().rfind(b"\n") + 1)
        handle.write((json.dumps(record) + "\n").encode())


def evaluate_during_training(agent: Any, run: Any) -> float:
    """Periodic evaluation of a training agent: TensorBoard ``eval/*``, a line in ``eval/evaluations.jsonl``,
    and ``checkpoints/best.safetensors`` when the mean improves. Uses its own RNGs (numpy and torch), so evaluating
    never changes the training run's exploration."""
    cfg = agent.config
    started = time.time()
    eval_rng = np.random.default_rng(cfg.seed + 1_000_003)
    epsilon = getattr(cfg, "eval_epsilon", 0.0)
    try:
        with separate_torch_rng(cfg.seed + 1_000_003, getattr(agent, "device", None)):
            result = evaluate(
                AgentActor(agent, epsilon=epsilon, rng=eval_rng),
                cfg.env_id,
                cfg.eval_episodes,
                seed=cfg.seed + 1_000_003,
                env_kwargs=cfg.env_kwargs,
                num_envs=min(cfg.eval_episodes, 10),
                should_stop=lambda: run.stop_requested,
            )
    except EvaluationStopped:
        run.print(f"eval @ {agent.global_step}: cut short by the stop request, not recorded")
        return float("nan")
    summary = result.summary()
    step = agent.global_step
    extra = {key: summary[key] for key in result.metrics if key in summary}
    run.log_scalars({"eval/mean_return": summary["mean"], "eval/std_return": summary["std"],
                     **{f"eval/{key}": value for key, value in extra.items()}}, step)
    record = {"step": step, **summary, "returns": result.returns, "lengths": result.lengths,
              "metrics": result.metrics}
    append_json_line(run.eval_dir / "evaluations.jsonl", record)
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
