"""REINFORCE (Williams 1992) with an optional learned baseline, updating on batches of whole episodes.

The ``pong-pixels`` preset reproduces Karpathy's "Pong from Pixels" (2016): 80x80 difference frames, a
200-unit hidden layer, UP/DOWN actions, RMSProp 1e-4 (decay 0.99), gamma 0.99, returns restarted at every
point scored and standardised per batch, an update every 10 episodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.agents.base import Agent, training_mode
from rlkit.agents.dqn import resolve_device
from rlkit.agents.optim import OptimizerConfig, OptimizerName, apply_lr_schedule, optimizer_from_config
from rlkit.errors import RLKitError
from rlkit.loop import LoopMonitor
from rlkit.registry import AGENTS
from rlkit.vision.encoders import default_encoder, make_encoder


@dataclasses.dataclass
class ReinforceConfig(OptimizerConfig):
    """REINFORCE settings."""

    encoder: str = "auto"
    """Registered encoder (auto: nature_cnn for images, mlp otherwise; mlp200 for Pong from Pixels)."""
    episodes_per_update: int = 10
    """Complete episodes per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    baseline: Literal["learned", "none"] = "learned"
    """Subtract a learned state-value baseline from the returns."""
    normalize_returns: bool = True
    """Standardise the batch's returns (or advantages) before the policy gradient."""
    restart_return_on_reward: bool = False
    """Restart the discounted return at every nonzero reward (Pong: each point is its own game)."""
    optimizer: OptimizerName = "rmsprop"
    lr: float = 1e-3
    """Learning rate (at the start of lr_schedule)."""
    optimizer_eps: float = 1e-5
    """Optimizer epsilon."""
    vf_coef: float = 0.5
    """Baseline (value) loss weight."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    max_grad_norm: float = 0.0
    """Gradient-norm clip (0: off)."""
    chunk_size: int = 8192
    """Steps per forward/backward chunk when a batch of episodes is long (memory bound, not a hyper-parameter)."""


def discounted_returns(
    rewards: np.ndarray, gamma: float, restart_on_reward: bool = False, tail_value: float = 0.0
) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} over one episode (restarting after each nonzero reward if asked); ``tail_value``
    is G after the last step: 0 when the episode terminated, the final observation's value when it was truncated."""
    returns = np.zeros(len(rewards), dtype=np.float64)
    running = float(tail_value)
    for t in reversed(range(len(rewards))):
        if restart_on_reward and rewards[t] != 0:
            running = 0.0
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns.astype(np.float32)


class Reinforce(Agent):
    """Monte-Carlo policy gradient on complete episodes from ``num_envs`` parallel envs."""

    samples_from_torch = True

    Config = ReinforceConfig
    name = "reinforce"

    def __init__(self, config: ReinforceConfig, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        if not isinstance(action_space, gym.spaces.Discrete):
            raise RLKitError(f"reinforce needs Discrete actions (categorical policy), got {action_space}; use ppo.")
        if not isinstance(observation_space, gym.spaces.Box):
            raise RLKitError(f"reinforce needs Box observations, got {observation_space}; use q_learning for Discrete.")
        self.config = config
        self.observation_space, self.action_space = observation_space, action_space
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        name = default_encoder(observation_space) if config.encoder == "auto" else config.encoder
        self.encoder = make_encoder(name, observation_space)
        self.policy_head = nn.Linear(self.encoder.features_dim, int(action_space.n))
        self.modules = nn.ModuleDict({"encoder": self.encoder, "policy_head": self.policy_head})
        self.value_net: nn.Sequential | None = None
        if config.baseline == "learned":
            value_encoder = make_encoder(name, observation_space)
            self.value_net = nn.Sequential(value_encoder, nn.Linear(value_encoder.features_dim, 1))
            self.modules["value_net"] = self.value_net
        self.modules.to(self.device)
        self.modules.eval()  # train mode only inside update()
        parameters = self.modules.parameters()
        self.optimizer = optimizer_from_config(config, parameters, eps=config.optimizer_eps)
        self.rng = np.random.default_rng(config.seed)
        self.reset_counters()

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.policy_head(self.encoder(obs)))

    @torch.no_grad()
    def act(self, observations: np.ndarray, deterministic: bool = True, epsilon: float | None = None,
            rng: np.random.Generator | None = None) -> np.ndarray:
        """Most probable actions when deterministic, else samples."""
        dist = self.distribution(torch.as_tensor(np.asarray(observations), device=self.device))
        actions = dist.probs.argmax(-1) if deterministic else dist.sample()
        return actions.cpu().numpy().astype(np.int64)

    def learn(self, run: Any) -> None:
        """Play episodes; every ``episodes_per_update`` finished episodes, one policy-gradient step."""
        cfg = self.config
        envs = self.make_train_envs()
        obs, _ = envs.reset(seed=self.reset_seed())
        running: list[dict[str, list]] = [{"obs": [], "actions": [], "rewards": []} for _ in range(cfg.num_envs)]
        finished: list[dict[str, np.ndarray]] = []
        reset_next = np.zeros(cfg.num_envs, dtype=bool)
        monitor = LoopMonitor(self, run)
        stats: dict[str, float] = {}
        try:
            while self.global_step < cfg.total_steps and not run.stop_requested:
                with torch.no_grad():
                    actions = self.distribution(torch.as_tensor(obs, device=self.device)).sample().cpu().numpy()
                next_obs, rewards, terminated, truncated, info = envs.step(actions)
                for i in np.flatnonzero(~reset_next):
                    episode = running[i]
                    episode["obs"].append(obs[i])
                    episode["actions"].append(actions[i])
                    episode["rewards"].append(rewards[i])
                    if terminated[i] or truncated[i]:
                        finished.append({k: np.asarray(v) for k, v in episode.items()})
                        if truncated[i] and not terminated[i]:  # cut off by a time limit: bootstrap from here
                            finished[-1]["final_obs"] = np.asarray(next_obs[i])
                        running[i] = {"obs": [], "actions": [], "rewards": []}
                reset_next = terminated | truncated
                obs = next_obs
                self.global_step += cfg.num_envs
                monitor.episodes(info)
                if len(finished) >= cfg.episodes_per_update:
                    apply_lr_schedule(self.optimizer, cfg, self.global_step)
                    stats = self.update(finished)
                    finished = []
                if monitor.tick(stats):
                    break
        finally:
            envs.close()
            self.save(run.checkpoint_dir / "last.safetensors")
        monitor.finish()

    def episode_returns(self, episodes: list[dict[str, np.ndarray]]) -> np.ndarray:
        """The discounted returns of every step of ``episodes``, concatenated. An episode cut off by a time limit
        (it carries ``final_obs``) continues past its last step: with the learned baseline its return is
        bootstrapped from the final observation's value; without one, the tail counts as 0."""
        cfg = self.config
        tails = [0.0] * len(episodes)
        truncated = [i for i, e in enumerate(episodes) if "final_obs" in e]
        if truncated and self.value_net is not None:
            final = torch.as_tensor(np.stack([episodes[i]["final_obs"] for i in truncated]), device=self.device)
            with torch.no_grad():
                values = self.value_net(final).squeeze(-1).float().cpu().numpy()
            for i, value in zip(truncated, values):
                tails[i] = float(value)
        return np.concatenate([
            discounted_returns(e["rewards"], cfg.gamma, cfg.restart_return_on_reward, tail)
            for e, tail in zip(episodes, tails)
        ])

    def update(self, episodes: list[dict[str, np.ndarray]]) -> dict[str, float]:
        """One gradient step on whole episodes (forward/backward in chunks to bound memory)."""
        cfg = self.config
        returns = self.episode_returns(episodes)
        obs = np.concatenate([e["obs"] for e in episodes])
        actions = np.concatenate([e["actions"] for e in episodes])
        returns_t = torch.as_tensor(returns, device=self.device)
        if self.value_net is not None:
            with torch.no_grad():
                values = torch.cat([self.value_net(torch.as_tensor(obs[s : s + cfg.chunk_size], device=self.device))
                                    .squeeze(-1) for s in range(0, len(obs), cfg.chunk_size)])
            advantages = returns_t - values
        else:
            advantages = returns_t
        if cfg.normalize_returns and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        total = len(obs)
        self.optimizer.zero_grad(set_to_none=True)
        policy_sum = value_sum = entropy_sum = 0.0
        with training_mode(self.modules):
            for start in range(0, total, cfg.chunk_size):
                chunk = slice(start, start + cfg.chunk_size)
                o = torch.as_tensor(obs[chunk], device=self.device)
                dist = self.distribution(o)
                log_prob = dist.log_prob(torch.as_tensor(actions[chunk], device=self.device))
                policy_loss = -(log_prob * advantages[chunk]).sum() / total
                entropy = dist.entropy().sum() / total
                loss = policy_loss - cfg.ent_coef * entropy
                if self.value_net is not None:
                    value_loss = 0.5 * ((self.value_net(o).squeeze(-1) - returns_t[chunk]) ** 2).sum() / total
                    loss = loss + cfg.vf_coef * value_loss
                    value_sum += float(value_loss.detach())
                loss.backward()
                policy_sum += float(policy_loss.detach())
                entropy_sum += float(entropy.detach())
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.modules.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        return {"losses/policy": policy_sum, "losses/value": value_sum, "losses/entropy": entropy_sum,
                "charts/batch_steps": float(total), "charts/learning_rate": self.optimizer.param_groups[0]["lr"]}

    # ---- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.network_state(self.modules, self.optimizer)

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.load_network_state(self.modules, self.optimizer, tensors, meta)


AGENTS.register("reinforce")(Reinforce)
