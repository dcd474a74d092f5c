"""Tabular agents for Discrete observations x Discrete actions: Q-learning, SARSA, Expected SARSA.

One class, three registered names (``q_learning``, ``sarsa``, ``expected_sarsa``) that differ only in the
bootstrap value of the next state. ``value_iteration`` solves envs that expose their model
(``env.unwrapped.P``) and is the reference the learned greedy policies are checked against.

References: Watkins 1989 (Q-learning), Rummery & Niranjan 1994 (SARSA), van Seijen et al. 2009
(Expected SARSA); Sutton & Barto 2018, ch. 4 and 6.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlkit.agents.base import Agent, epsilon_greedy
from rlkit.agents.schedules import linear_schedule
from rlkit.config import TrainConfig
from rlkit.errors import RLKitError
from rlkit.loop import LoopMonitor
from rlkit.registry import AGENTS


@dataclasses.dataclass
class TabularConfig(TrainConfig):
    """Tabular TD control settings."""

    gamma: float = 0.99
    """Discount factor."""
    lr: float = 0.5
    """Step size (the first visit's, for lr_schedule=visits)."""
    lr_schedule: Literal["constant", "linear", "visits"] = "visits"
    """constant; linear to lr_end over total_steps; visits: lr / n(s,a)**lr_power (converges)."""
    lr_end: float = 0.01
    """Final step size of the linear schedule."""
    lr_power: float = 0.6
    """Exponent of the visit-count schedule (in (0.5, 1] for convergence)."""
    exploration: Literal["epsilon", "softmax"] = "epsilon"
    """Behaviour policy: epsilon-greedy or Boltzmann (softmax of Q / temperature)."""
    exploration_start: float = 1.0
    """Initial epsilon (or temperature for softmax)."""
    exploration_end: float = 0.1
    """Final epsilon (or temperature)."""
    exploration_steps: int = 50_000
    """Env steps over which exploration decays linearly."""
    initial_q: float = 0.0
    """Initial value of every Q(s, a)."""
    eval_epsilon: float = 0.0
    """Epsilon during evaluation (0: greedy)."""


def value_iteration(
    transitions: dict,
    n_states: int,
    n_actions: int,
    gamma: float,
    tol: float = 1e-10,
    max_iterations: int = 100_000,
    epsilon: float = 0.0,
) -> np.ndarray:
    """Optimal Q* of a finite MDP given as Gymnasium toy-text ``P[s][a] = [(prob, s', reward, terminated)]``.

    With ``epsilon`` > 0, the best action values among epsilon-greedy policies: the next state is valued at
    ``(1 - epsilon) max_a Q + epsilon mean_a Q``. That is the fixed point of SARSA and Expected SARSA with a fixed
    epsilon (on-policy), which differs from Q* where exploring is costly (CliffWalking's safe path)."""
    q = np.zeros((n_states, n_actions))
    for _ in range(max_iterations):
        v = (1.0 - epsilon) * q.max(axis=1) + epsilon * q.mean(axis=1)
        new_q = np.zeros_like(q)
        for s in range(n_states):
            for a in range(n_actions):
                new_q[s, a] = sum(p * (r + (0.0 if done else gamma * v[s2])) for p, s2, r, done in transitions[s][a])
        delta = np.abs(new_q - q).max()
        q = new_q
        if delta < tol:
            return q
    raise RuntimeError("value iteration did not converge")


def optimal_actions(q_star: np.ndarray, tol: float = 1e-6) -> list[set[int]]:
    """For each state, the set of actions within ``tol`` of the best."""
    return [set(np.flatnonzero(row >= row.max() - tol).tolist()) for row in q_star]


class TabularAgent(Agent):
    """Q-table agent; ``method`` picks the TD target of the next state."""

    Config = TabularConfig
    method: str = "q_learning"
    name = "q_learning"
    weight_roots = frozenset({"q"})

    def __init__(self, config: TabularConfig, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        if not isinstance(observation_space, gym.spaces.Discrete) or not isinstance(action_space, gym.spaces.Discrete):
            raise RLKitError(
                f"{self.method} needs Discrete observations and actions, got {observation_space} and {action_space}; "
                "tabular agents fit toy-text envs (FrozenLake, Taxi, CliffWalking); use dqn for Box observations."
            )
        self.config = config
        self.observation_space, self.action_space = observation_space, action_space
        self.n_states, self.n_actions = int(observation_space.n), int(action_space.n)
        self.q = np.full((self.n_states, self.n_actions), config.initial_q, dtype=np.float64)
        self.visits = np.zeros((self.n_states, self.n_actions), dtype=np.int64)
        self.rng = np.random.default_rng(config.seed)
        self.reset_counters()

    # ---- acting --------------------------------------------------------------------------------------
    def exploration(self) -> float:
        cfg = self.config
        return linear_schedule(cfg.exploration_start, cfg.exploration_end, cfg.exploration_steps, self.global_step)

    def policy_probs(self, states: np.ndarray, exploration: float) -> np.ndarray:
        """Behaviour-policy probabilities over actions for each state."""
        q = self.q[states]
        if self.config.exploration == "softmax":
            logits = (q - q.max(axis=1, keepdims=True)) / max(exploration, 1e-8)
            probs = np.exp(logits)
            return probs / probs.sum(axis=1, keepdims=True)
        greedy = q == q.max(axis=1, keepdims=True)  # ties share the greedy mass
        probs = np.full(q.shape, exploration / self.n_actions)
        probs += (1.0 - exploration) * greedy / greedy.sum(axis=1, keepdims=True)
        return probs

    def act(
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        epsilon: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Greedy actions (first maximal action), or epsilon-greedy with ``epsilon``."""
        states = np.asarray(observations, dtype=np.int64)
        actions = self.q[states].argmax(axis=1)
        if epsilon:
            actions = epsilon_greedy(actions, epsilon, self.n_actions, self.rng if rng is None else rng)
        return actions.astype(np.int64)

    def behave(self, states: np.ndarray, exploration: float) -> np.ndarray:
        """Sample behaviour actions (ties among greedy actions broken at random)."""
        probs = self.policy_probs(states, exploration)
        cumulative = probs.cumsum(axis=1)
        draws = self.rng.random(len(states))[:, None]
        return np.minimum((draws > cumulative).sum(axis=1), self.n_actions - 1).astype(np.int64)

    # ---- learning ------------------------------------------------------------------------------------
    def step_size(self, state: int, action: int) -> float:
        cfg = self.config
        if cfg.lr_schedule == "constant":
            return cfg.lr
        if cfg.lr_schedule == "linear":
            return linear_schedule(cfg.lr, cfg.lr_end, cfg.total_steps, self.global_step)
        return cfg.lr / self.visits[state, action] ** cfg.lr_power

    def next_value(self, next_state: int, next_action: int, exploration: float) -> float:
        """The bootstrap value of the next state under this agent's method."""
        if self.method == "q_learning":
            return float(self.q[next_state].max())
        if self.method == "sarsa":
            return float(self.q[next_state, next_action])
        probs = self.policy_probs(np.array([next_state]), exploration)[0]
        return float(probs @ self.q[next_state])

    def update(self, state: int, action: int, reward: float, next_state: int, next_action: int,
               terminated: bool, exploration: float) -> float:
        """One TD update of Q(state, action); returns the TD error."""
        self.visits[state, action] += 1
        bootstrap = 0.0 if terminated else self.config.gamma * self.next_value(next_state, next_action, exploration)
        td_error = reward + bootstrap - self.q[state, action]
        self.q[state, action] += self.step_size(state, action) * td_error
        self.updates += 1
        return float(td_error)

    def learn(self, run: Any) -> None:
        """On-line TD control on ``num_envs`` envs (next-step autoreset: the step after an episode's end
        is a reset step and is not learned from)."""
        cfg = self.config
        envs = self.make_train_envs()
        obs, _ = envs.reset(seed=self.reset_seed())
        exploration = self.exploration()
        actions = self.behave(obs, exploration)
        reset_next = np.zeros(cfg.num_envs, dtype=bool)
        monitor = LoopMonitor(self, run)
        td_errors: list[float] = []
        try:
            while self.global_step < cfg.total_steps and not run.stop_requested:
                next_obs, rewards, terminated, truncated, info = envs.step(actions)
                self.global_step += cfg.num_envs
                exploration = self.exploration()
                next_actions = self.behave(next_obs, exploration)
                for i in np.flatnonzero(~reset_next):
                    td_errors.append(
                        self.update(int(obs[i]), int(actions[i]), float(rewards[i]), int(next_obs[i]),
                                    int(next_actions[i]), bool(terminated[i]), exploration)
                    )
                reset_next = terminated | truncated
                obs, actions = next_obs, next_actions
                monitor.episodes(info)
                scalars = {"charts/exploration": exploration}
                if td_errors and self.global_step >= monitor.next_log:
                    scalars["losses/abs_td_error"] = float(np.mean(np.abs(td_errors)))
                    td_errors.clear()
                if monitor.tick(scalars):
                    break
        finally:
            envs.close()
            self.save(run.checkpoint_dir / "last.safetensors")
        monitor.finish()

    # ---- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {"q": torch.from_numpy(self.q.copy()), "visits": torch.from_numpy(self.visits.copy())}
        meta = {
            "algo": self.method,
            "config": dataclasses.asdict(self.config),
            "observation_shape": [],
            "n_states": self.n_states,
            "n_actions": self.n_actions,
            "counters": self.counters(),
            "rng": {"explore": self.rng.bit_generator.state},
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.check_algorithm(meta)
        if meta.get("n_states") != self.n_states or meta.get("n_actions") != self.n_actions:
            raise RLKitError(
                f"checkpoint has a {meta.get('n_states')}x{meta.get('n_actions')} Q-table, this env needs "
                f"{self.n_states}x{self.n_actions}; use the checkpoint's env."
            )
        self.q[...] = tensors["q"].numpy()
        self.visits[...] = tensors["visits"].numpy()
        self.load_counters(meta["counters"])
        self.rng.bit_generator.state = meta["rng"]["explore"]


@AGENTS.register("q_learning")
class QLearning(TabularAgent):
    """Off-policy: bootstraps from max_a Q(s', a)."""

    method = name = "q_learning"


@AGENTS.register("sarsa")
class Sarsa(TabularAgent):
    """On-policy: bootstraps from Q(s', a') of the action actually taken next."""

    method = name = "sarsa"


@AGENTS.register("expected_sarsa")
class ExpectedSarsa(TabularAgent):
    """Bootstraps from the behaviour policy's expectation sum_a pi(a|s') Q(s', a)."""

    method = name = "expected_sarsa"
