"""Policy-gradient family on vectorised envs: PPO (Schulman et al. 2017) and A2C (Mnih et al. 2016).

A2C is the same loop with one full-batch gradient step per rollout and no clipping. Discrete actions use a
categorical policy; Box actions a Gaussian with state-independent log-std, optionally squashed by tanh with
the change-of-variables log-prob correction. Advantages are GAE(lambda); a truncated episode bootstraps from
the value of its final observation (next-step autoreset keeps it in the rollout, on the reset step, which is
masked out of the loss).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.agents.base import Agent, EncoderConfig, training_mode
from rlkit.agents.dqn import resolve_device
from rlkit.agents.optim import OptimizerConfig, OptimizerName, apply_lr_schedule, optimizer_from_config
from rlkit.agents.schedules import LRSchedule, linear_schedule
from rlkit.errors import RLKitError
from rlkit.loop import LoopMonitor
from rlkit.registry import AGENTS
from rlkit.vision.encoders import make_encoder


@dataclasses.dataclass
class PPOConfig(EncoderConfig, OptimizerConfig):
    """PPO settings (defaults: CleanRL's ppo.py for classic control)."""

    encoder: str = "auto"
    """Registered encoder; auto: nature_cnn (shared by actor and critic) for images, separate mlp_tanh otherwise."""
    num_envs: int = 4
    """Parallel environments."""
    rollout_steps: int = 128
    """Steps per env per rollout (batch = num_envs x rollout_steps)."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per pass."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (1: Monte-Carlo advantages)."""
    clip_range: float = 0.2
    """PPO ratio clip (0: no clipping, the plain policy gradient as in A2C)."""
    anneal_clip: bool = False
    """Anneal the clip range linearly to 0 with training progress."""
    clip_value_loss: bool = True
    """Clip the value update around the rollout's values with clip_range."""
    vf_coef: float = 0.5
    """Value-loss weight; the value loss is 0.5 x mean squared error (CleanRL's form; SB3's vf_coef multiplies the
    mean squared error itself, so SB3's x is rlkit's 2x)."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    normalize_advantages: bool = True
    """Normalise advantages in each minibatch."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip (0: off)."""
    target_kl: float | None = None
    """Stop a rollout's epochs early once the approximate KL exceeds this."""
    lr: float = 2.5e-4
    """Learning rate (at the start of lr_schedule)."""
    lr_schedule: LRSchedule = "linear"
    optimizer_eps: float = 1e-5
    """Optimizer epsilon (Adam / RMSprop)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of a Gaussian policy."""
    squash: bool = False
    """tanh-squash Gaussian actions into the action bounds (else: clip at the env)."""
    normalize_observations: bool = False
    """Running mean/std normalisation of vector observations (saved with checkpoints)."""
    normalize_rewards: bool = False
    """Scale rewards by the running std of the discounted return."""
    eval_deterministic: bool = True
    """Evaluate with the distribution's mode (argmax / mean) rather than samples."""
    env_groups: int = 0
    """Atari: play the envs as this many ALE vector envs and act for one while the others' games run, torch
    threads shared out during the rollout (0: auto, 2 on a CPU with an even num_envs, else 1)."""


@dataclasses.dataclass
class A2CConfig(PPOConfig):
    """A2C settings (defaults: SB3's A2C)."""

    vf_coef: float = 1.0
    """Value loss weight. rlkit's value loss is 0.5 x mean squared error and SB3's is the mean squared error,
    so 1.0 here weighs it as SB3's default vf_coef=0.5 does."""
    num_envs: int = 8
    rollout_steps: int = 5
    epochs: int = 1
    minibatches: int = 1
    gae_lambda: float = 1.0
    clip_range: float = 0.0
    clip_value_loss: bool = False
    normalize_advantages: bool = False
    optimizer: OptimizerName = "rmsprop"
    lr: float = 7e-4
    lr_schedule: LRSchedule = "constant"


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_value: np.ndarray,
    terminated: np.ndarray,
    ended: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and returns for (T, N) arrays.

    ``values[t]`` is V(obs_t); the value after step t is ``values[t + 1]`` (``next_value`` after the last
    step), which after a truncation is the final observation's value. No bootstrap past a termination; the
    advantage recursion stops at every episode end (``ended`` = terminated or truncated).
    """
    steps = len(rewards)
    advantages = np.zeros_like(rewards, dtype=np.float64)
    last = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(steps)):
        following = values[t + 1] if t + 1 < steps else next_value
        delta = rewards[t] + gamma * following * (1.0 - terminated[t]) - values[t]
        last = delta + gamma * lam * (1.0 - ended[t]) * last
        advantages[t] = last
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.)."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape)
        self.var = np.ones(shape)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total


def orthogonal_init_(weight: torch.Tensor, gain: float) -> None:
    """``nn.init.orthogonal_`` that also works on channels-last convolution weights (which it cannot view)."""
    fresh = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    nn.init.orthogonal_(fresh, gain)
    with torch.no_grad():
        weight.copy_(fresh)


class ActorCritic(nn.Module):
    """Policy and value heads over one shared encoder (images) or two separate ones (vectors)."""

    def __init__(self, config: PPOConfig, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        super().__init__()
        image = isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 3
        name = config.encoder if config.encoder != "auto" else ("nature_cnn" if image else "mlp_tanh")
        self.encoder_name = name
        self.actor_encoder = make_encoder(name, observation_space, **config.encoder_kwargs)
        self.critic_encoder = None if image else make_encoder(name, observation_space, **config.encoder_kwargs)
        self.build_heads(config, self.actor_encoder.features_dim, action_space)

    def build_heads(self, config: PPOConfig, features: int, action_space: gym.spaces.Space) -> None:
        """Policy head (logits, or Gaussian mean with a state-independent log-std) and value head on
        ``features``-wide inputs; orthogonal initialisation of every linear layer built so far."""
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.policy_head = nn.Linear(features, int(action_space.n))
        else:
            dim = int(np.prod(action_space.shape))
            self.policy_head = nn.Linear(features, dim)
            self.log_std = nn.Parameter(torch.full((dim,), float(config.log_std_init)))
        self.value_head = nn.Linear(features, 1)
        self.squash = config.squash
        # Orthogonal initialisation of every linear and convolutional layer, as CleanRL's layer_init and SB3's
        # ortho_init do. PyTorch's default conv init shrinks NatureCNN's features 13x (rms 0.044 vs 0.59 on
        # random frames), which left a Pong run's policy updates at approx_kl ~1e-4 and no clipping for 2.8M steps.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                orthogonal_init_(module.weight, math.sqrt(2))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        orthogonal_init_(self.policy_head.weight, 0.01)
        orthogonal_init_(self.value_head.weight, 1.0)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        encoder = self.critic_encoder if self.critic_encoder is not None else self.actor_encoder
        return self.value_head(encoder(obs)).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return self.head_distribution(self.actor_encoder(obs))

    def features_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy head's input features and the value; a shared encoder (images) runs once, not twice."""
        features = self.actor_encoder(obs)
        value_features = features if self.critic_encoder is None else self.critic_encoder(obs)
        return features, self.value_head(value_features).squeeze(-1)

    def distribution_and_value(self, obs: torch.Tensor) -> tuple[torch.distributions.Distribution, torch.Tensor]:
        """Policy distribution and value in one pass."""
        features, value = self.features_and_value(obs)
        return self.head_distribution(features), value

    def sample_with_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled (pre-squash) action, its log-probability (tanh correction included) and the value, in one
        pass. Discrete policies sample from the log-softmax directly (the same ``torch.multinomial`` draw as
        ``Categorical.sample``, without building the distribution object: 0.77-0.80 instead of 0.92 ms per act
        of 4 Atari frames on one thread, docs/benchmarks.md)."""
        if not self.discrete:
            dist, value = self.distribution_and_value(obs)
            raw = dist.sample()
            logp = dist.log_prob(raw).sum(-1)
            return raw, (logp - tanh_log_det(raw) if self.squash else logp), value
        features, value = self.features_and_value(obs)
        log_probs = torch.log_softmax(self.policy_head(features), dim=-1)
        raw = torch.multinomial(log_probs.exp(), 1, replacement=True)
        return raw.squeeze(-1), log_probs.gather(-1, raw).squeeze(-1), value

    def head_distribution(self, features: torch.Tensor) -> torch.distributions.Distribution:
        """The policy's (pre-squash) action distribution given the policy head's input features."""
        out = self.policy_head(features)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Normal(out, self.log_std.exp().expand_as(out))

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of stored (pre-squash) actions and the policy entropy."""
        return self.dist_log_prob_entropy(self.distribution(obs), actions)

    def dist_log_prob_entropy(
        self, dist: torch.distributions.Distribution, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of stored (pre-squash) actions under ``dist`` and its entropy."""
        if self.discrete:
            return dist.log_prob(actions.long()), dist.entropy()
        log_prob = dist.log_prob(actions).sum(-1)
        if not self.squash:
            return log_prob, dist.entropy().sum(-1)
        # No closed form under tanh: H[tanh(u)] = H[u] + E[log |det d tanh(u)/du|], the expectation estimated
        # with one reparameterised draw, so its gradient raises the entropy (-log_prob at the stored actions
        # would have zero expected gradient at the rollout policy).
        return log_prob - tanh_log_det(actions), dist.entropy().sum(-1) + tanh_log_det(dist.rsample())


def ppo_losses(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float,
    clip_value: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy loss ``mean(max(-A r, -A clip(r, 1-c, 1+c)))`` with ``r = exp(new - old)`` (``-mean(A log pi)``
    when ``clip`` is 0), and value loss ``0.5 mean((V - R)^2)``, its update clipped around the old values."""
    if clip > 0:
        ratio = (new_logp - old_logp).exp()
        pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
    else:
        pg_loss = -(advantages * new_logp).mean()
    if clip_value and clip > 0:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        v_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((values - returns) ** 2).mean()
    return pg_loss, v_loss


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """sum log(1 - tanh(u)^2), computed stably as 2 * (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


class PPO(Agent):
    """Proximal policy optimisation; ``A2C`` below is the same loop with A2C's settings."""

    samples_from_torch = True
    pipelined_rollout = True  # learn() plays env groups (env_groups); a subclass with its own loop sets False

    Config = PPOConfig
    Network: type[nn.Module] = ActorCritic
    name = "ppo"

    def __init__(self, config: PPOConfig, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise RLKitError(f"{self.name} supports Discrete and Box actions, not {action_space}.")
        if not isinstance(observation_space, gym.spaces.Box):
            raise RLKitError(
                f"{self.name} needs Box observations, got {observation_space}; for Discrete observations use "
                "q_learning, sarsa or expected_sarsa."
            )
        if config.normalize_observations and observation_space.dtype == np.uint8:
            raise RLKitError(
                f"normalize_observations=true is for vector observations; {config.env_id} gives uint8 images "
                f"{observation_space.shape}, which the encoder scales to [0, 1]: use normalize_observations=false."
            )
        rollout = config.num_envs * config.rollout_steps
        if config.minibatches > rollout:
            raise RLKitError(f"minibatches={config.minibatches} is more than a rollout's {rollout} transitions "
                             f"(num_envs x rollout_steps); use at most {rollout}.")
        self.config = config
        self.observation_space, self.action_space = observation_space, action_space
        self.device = resolve_device(config.device)
        groups = self.env_group_count()
        if groups > 1:
            from rlkit.envs import check_env_groups

            check_env_groups(config.env_id, config.num_envs, groups)
        torch.manual_seed(config.seed)
        self.check_augment()
        self.net = self.Network(config, observation_space, action_space).to(self.device)
        self.net.eval()  # train mode only inside the updates
        self.encoder_name = self.net.encoder_name
        self.apply_precision(self.encoders())
        groups = self.encoder_param_groups(self.net, self.encoders())
        self.optimizer = optimizer_from_config(config, groups, eps=config.optimizer_eps)
        self.rng = np.random.default_rng(config.seed)
        self.obs_rms = RunningMeanStd(observation_space.shape) if config.normalize_observations else None
        self.return_rms = RunningMeanStd() if config.normalize_rewards else None
        self.reset_counters()

    def encoders(self) -> list[nn.Module]:
        return [e for e in (self.net.actor_encoder, self.net.critic_encoder) if e is not None]

    # ---- acting --------------------------------------------------------------------------------------
    def _obs(self, observations: np.ndarray) -> torch.Tensor:
        obs = np.asarray(observations)
        if self.obs_rms is not None:
            obs = np.clip((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8), -10, 10).astype(np.float32)
        return torch.as_tensor(obs, device=self.device)

    def to_env_action(self, actions: np.ndarray) -> np.ndarray:
        """Map sampled (pre-squash) actions to the env's action space."""
        if self.net.discrete:
            return actions.astype(np.int64)
        low, high = self.action_space.low, self.action_space.high
        if self.config.squash:
            return (low + (np.tanh(actions) + 1.0) * 0.5 * (high - low)).astype(np.float32)
        return np.clip(actions, low, high).astype(np.float32)

    @torch.no_grad()
    def act(
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        epsilon: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Env actions for a batch: the distribution's mode when deterministic, else a sample."""
        deterministic = deterministic and self.config.eval_deterministic
        dist = self.net.distribution(self._obs(observations))
        if deterministic:
            raw = dist.probs.argmax(-1) if self.net.discrete else dist.mean
        else:
            raw = dist.sample()
        return self.to_env_action(raw.cpu().numpy())

    # ---- learning ------------------------------------------------------------------------------------
    def env_group_count(self) -> int:
        """How many ALE vector envs the rollout plays (``env_groups``, auto resolved)."""
        cfg = self.config
        if not self.pipelined_rollout:
            if cfg.env_groups > 1:
                raise RLKitError(f"{self.name} plays one vector env: env_groups must be 0 or 1, got {cfg.env_groups}.")
            return 1
        if cfg.env_groups > 0:
            return cfg.env_groups
        from rlkit.envs import env_family

        overlap = env_family(cfg.env_id) == "atari" and self.device.type == "cpu" and (os.cpu_count() or 1) >= 2
        return 2 if overlap and cfg.num_envs % 2 == 0 else 1

    def make_env_groups(self) -> list[Any]:
        """The training envs as ``env_group_count()`` vector envs (one: ``make_train_envs``)."""
        cfg = self.config
        groups = self.env_group_count()
        if groups == 1:
            return [self.make_train_envs()]
        from rlkit.envs import make_atari_env_groups

        return make_atari_env_groups(cfg.env_id, cfg.num_envs, groups, mode="train", env_kwargs=cfg.env_kwargs)

    def learn(self, run: Any) -> None:
        """Collect ``rollout_steps`` x ``num_envs`` steps, compute GAE, optimise, repeat.

        With several env groups the rollout is pipelined: the policy acts for group g while the games of the
        group stepped before it run in their C++ threads. Each group's columns of the rollout see exactly the
        sequence of observations and actions they would see alone, so results depend on the seed only."""
        from rlkit.envs import finish_step, start_step

        cfg = self.config
        groups = self.make_env_groups()
        T, N = cfg.rollout_steps, cfg.num_envs
        size = N // len(groups)
        columns = [slice(g * size, (g + 1) * size) for g in range(len(groups))]
        buf_obs, buf_actions, buf_logp, buf_values, buf_rewards, buf_term, buf_ended, buf_valid = (
            self.rollout_arrays()
        )
        seed = self.reset_seed()
        obs = [envs.reset(seed=seed + g * size)[0] for g, envs in enumerate(groups)]
        started: list[Any] = [None] * len(groups)
        reset_next = np.zeros(N, dtype=bool)
        discounted_return = np.zeros(N)
        monitor = LoopMonitor(self, run)
        stats: dict[str, float] = {}
        learner_threads = torch.get_num_threads()
        rollout_threads = max(1, learner_threads // len(groups))

        def act_and_start(g: int, t: int) -> None:
            cols = columns[g]
            if self.obs_rms is not None:
                self.obs_rms.update(np.asarray(obs[g], dtype=np.float64))
            obs_tensor = self._obs(obs[g])
            with torch.inference_mode():
                raw, logp, value = self.net.sample_with_value(obs_tensor)
            actions = raw.cpu().numpy()
            buf_obs[t, cols], buf_actions[t, cols] = obs_tensor.cpu().numpy(), actions  # normalised if enabled
            buf_logp[t, cols], buf_values[t, cols] = logp.cpu().numpy(), value.cpu().numpy()
            buf_valid[t, cols] = ~reset_next[cols]
            started[g] = start_step(groups[g], self.to_env_action(actions))

        def finish(g: int, t: int) -> None:
            cols = columns[g]
            obs[g], rewards, terminated, truncated, info = finish_step(groups[g], started[g])
            rewards = np.asarray(rewards, dtype=np.float64)
            if self.return_rms is not None:
                fresh = ~reset_next[cols]
                discounted_return[cols] = discounted_return[cols] * cfg.gamma * fresh + rewards
                if fresh.any():  # every env may be on its reset step at once
                    self.return_rms.update(discounted_return[cols][fresh])
                rewards = rewards / math.sqrt(self.return_rms.var + 1e-8)
            buf_rewards[t, cols] = rewards
            buf_term[t, cols], buf_ended[t, cols] = terminated, terminated | truncated
            reset_next[cols] = terminated | truncated
            self.global_step += size
            monitor.episodes(info)

        try:
            while self.global_step < cfg.total_steps and not run.stop_requested:
                apply_lr_schedule(self.optimizer, cfg, self.global_step)
                torch.set_num_threads(rollout_threads)
                try:
                    for t in range(T):
                        for g in range(len(groups)):
                            if t > 0:
                                finish(g, t - 1)
                            act_and_start(g, t)
                    for g in range(len(groups)):
                        finish(g, T - 1)
                finally:
                    torch.set_num_threads(learner_threads)
                with torch.inference_mode():
                    next_value = self.net.value(self._obs(np.concatenate(obs))).cpu().numpy()
                advantages, returns = gae(
                    buf_rewards, buf_values, next_value, buf_term, buf_ended, cfg.gamma, cfg.gae_lambda
                )
                stats = self.optimise(buf_obs, buf_actions, buf_logp, buf_values, advantages, returns, buf_valid)
                stats["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
                if monitor.tick(stats):
                    break
        finally:
            for envs in groups:
                envs.close()
            self.save(run.checkpoint_dir / "last.safetensors")
        monitor.finish()

    def rollout_arrays(self) -> tuple[np.ndarray, ...]:
        """Zeroed (rollout_steps, num_envs, ...) storage: observations, actions, log-probs, values, rewards,
        terminated, ended (terminated or truncated) and valid (not a reset step) flags."""
        T, N = self.config.rollout_steps, self.config.num_envs
        obs_dtype = np.uint8 if self.observation_space.dtype == np.uint8 else np.float32
        observations = np.zeros((T, N, *self.observation_space.shape), dtype=obs_dtype)
        actions = np.zeros((T, N, *self.action_space.shape), dtype=np.int64 if self.net.discrete else np.float32)
        return (observations, actions, *(np.zeros((T, N), np.float32) for _ in range(6)))

    def clip_range(self) -> float:
        cfg = self.config
        if cfg.clip_range <= 0:
            return 0.0
        if not cfg.anneal_clip:
            return cfg.clip_range
        return linear_schedule(cfg.clip_range, 0.0, cfg.total_steps, self.global_step)

    def optimise(self, obs, actions, old_logp, old_values, advantages, returns, valid) -> dict[str, float]:
        """Epochs of minibatch updates on one rollout (reset steps excluded); returns loss statistics."""
        cfg = self.config
        keep = valid.reshape(-1) > 0
        flat = lambda a: torch.as_tensor(a.reshape(-1, *a.shape[2:])[keep], device=self.device)  # noqa: E731
        b_obs, b_actions, b_logp = flat(obs), flat(actions), flat(old_logp)
        b_values, b_adv, b_returns = flat(old_values), flat(advantages), flat(returns)
        size = len(b_logp)
        clip = self.clip_range()
        log: dict[str, list[float]] = {"pg": [], "value": [], "entropy": [], "kl": [], "clipfrac": []}
        with training_mode(self.net):
            for _ in range(cfg.epochs):
                order = torch.as_tensor(self.rng.permutation(size), device=self.device)
                # `minibatches` near-equal parts, also when the reset steps left a size they do not divide
                parts = torch.tensor_split(order, min(cfg.minibatches, size))
                for idx in parts:
                    dist, values = self.net.distribution_and_value(self.augment(b_obs[idx]))
                    new_logp, entropy = self.net.dist_log_prob_entropy(dist, b_actions[idx])
                    self.minibatch_step(
                        new_logp, entropy, values, b_logp[idx], b_adv[idx], b_values[idx], b_returns[idx], clip, log
                    )
                if cfg.target_kl is not None and np.mean(log["kl"][-len(parts) :]) > cfg.target_kl:
                    break
        return self.loss_statistics(log)

    def minibatch_step(
        self,
        new_logp: torch.Tensor,
        entropy: torch.Tensor,
        values: torch.Tensor,
        old_logp: torch.Tensor,
        advantages: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        clip: float,
        log: dict[str, list[float]],
    ) -> None:
        """One optimizer step on a minibatch's clipped PPO loss (advantages normalised when configured);
        appends the minibatch's statistics to ``log``."""
        cfg = self.config
        log_ratio = new_logp - old_logp
        ratio = log_ratio.exp()
        if cfg.normalize_advantages and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        pg_loss, v_loss = ppo_losses(new_logp, old_logp, advantages, values, old_values, returns, clip,
                                     cfg.clip_value_loss)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        with torch.no_grad():
            log["kl"].append(float(((ratio - 1) - log_ratio).mean()))
            log["clipfrac"].append(float(((ratio - 1).abs() > clip).float().mean()) if clip > 0 else 0.0)
        log["pg"].append(float(pg_loss.detach()))
        log["value"].append(float(v_loss.detach()))
        log["entropy"].append(float(entropy.mean().detach()))

    @staticmethod
    def loss_statistics(log: dict[str, list[float]]) -> dict[str, float]:
        """Means of one update's minibatch statistics, under their TensorBoard names."""
        return {
            "losses/policy": float(np.mean(log["pg"])),
            "losses/value": float(np.mean(log["value"])),
            "losses/entropy": float(np.mean(log["entropy"])),
            "losses/approx_kl": float(np.mean(log["kl"])),
            "losses/clip_fraction": float(np.mean(log["clipfrac"])),
        }

    # ---- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = self.network_state(self.net, self.optimizer)
        meta["normalizer_counts"] = {}
        for name, rms in (("obs_rms", self.obs_rms), ("return_rms", self.return_rms)):
            if rms is not None:
                tensors[f"{name}.mean"] = torch.as_tensor(np.asarray(rms.mean, dtype=np.float64))
                tensors[f"{name}.var"] = torch.as_tensor(np.asarray(rms.var, dtype=np.float64))
                meta["normalizer_counts"][name] = rms.count
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.load_network_state(self.net, self.optimizer, tensors, meta)
        for name, rms in (("obs_rms", self.obs_rms), ("return_rms", self.return_rms)):
            if rms is not None and f"{name}.mean" in tensors:
                rms.mean = tensors[f"{name}.mean"].numpy()
                rms.var = tensors[f"{name}.var"].numpy()
                rms.count = meta["normalizer_counts"][name]


AGENTS.register("ppo")(PPO)


@AGENTS.register("a2c")
class A2C(PPO):
    """Advantage actor-critic: one full-batch step per 5-step rollout, RMSprop (SB3's A2C defaults)."""

    Config = A2CConfig
    name = "a2c"
