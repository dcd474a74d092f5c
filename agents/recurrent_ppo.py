"""Recurrent PPO (``ppo_lstm``): PPO with an LSTM between the encoder and the policy/value heads.

After CleanRL's ppo_atari_lstm.py: one encoder and one LSTM shared by actor and critic; the LSTM state is
zeroed at every episode start, both while collecting the rollout and when the rollout is re-run during the
update; minibatches are sets of whole env streams (the rollout split over envs, never over time), each
re-run from the LSTM state the rollout started with. Everything else (GAE with truncation bootstrapping,
clipped losses, normalisation, schedules, checkpoints) is PPO's, imported from ``policy_gradient``.

With next-step autoreset an episode's first observation arrives one step after the step that ended it
(that reset step's action is ignored and masked from the loss), so ``episode_start[t]`` is true exactly
when step ``t - 1`` was a reset step, and at the first step after ``envs.reset``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.agents.base import training_mode
from rlkit.agents.optim import apply_lr_schedule
from rlkit.agents.policy_gradient import PPO, ActorCritic, PPOConfig, gae, tanh_log_det
from rlkit.errors import RLKitError
from rlkit.loop import LoopMonitor
from rlkit.registry import AGENTS
from rlkit.vision.encoders import make_encoder

LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class RecurrentPPOConfig(PPOConfig):
    """Recurrent PPO settings (defaults: PPO's; minibatches split the envs, so num_envs % minibatches == 0)."""

    lstm_hidden: int = 128
    """LSTM hidden size (CleanRL ppo_atari_lstm: 128)."""
    lstm_layers: int = 1
    """Stacked LSTM layers."""


class RecurrentActorCritic(ActorCritic):
    """Encoder -> LSTM -> policy and value heads (one encoder and LSTM shared by actor and critic)."""

    def __init__(self, config: RecurrentPPOConfig, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        nn.Module.__init__(self)
        image = isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 3
        name = config.encoder if config.encoder != "auto" else ("nature_cnn" if image else "mlp_tanh")
        self.encoder_name = name
        self.actor_encoder = make_encoder(name, observation_space, **config.encoder_kwargs)
        self.critic_encoder = None
        self.lstm = nn.LSTM(self.actor_encoder.features_dim, config.lstm_hidden, config.lstm_layers)
        for param_name, param in self.lstm.named_parameters():
            if "bias" in param_name:
                nn.init.zeros_(param)
            else:
                nn.init.orthogonal_(param, 1.0)
        self.build_heads(config, config.lstm_hidden, action_space)

    def initial_state(self, batch: int) -> LSTMState:
        """Zero (h, c), each (layers, batch, hidden)."""
        shape = (self.lstm.num_layers, batch, self.lstm.hidden_size)
        device = self.value_head.weight.device
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def recurrent_features(
        self, obs: torch.Tensor, episode_start: torch.Tensor, state: LSTMState
    ) -> tuple[torch.Tensor, LSTMState]:
        """LSTM outputs (T, B, hidden) for observations (T, B, ...), the state zeroed for streams whose
        ``episode_start[t]`` is set before step ``t`` is processed; also the state after the last step.

        Runs one LSTM call per stretch of steps without any episode start (exact, and fast for long episodes).
        """
        steps, batch = episode_start.shape
        x = self.actor_encoder(obs.reshape(steps * batch, *obs.shape[2:])).reshape(steps, batch, -1)
        starts = episode_start.bool()
        cuts = [0, *torch.nonzero(starts[1:].any(dim=1)).flatten().add(1).tolist(), steps]
        h, c = state
        outputs = []
        for begin, end in zip(cuts[:-1], cuts[1:]):
            if begin == end:
                continue
            keep = (~starts[begin]).to(h.dtype).view(1, batch, 1)
            out, (h, c) = self.lstm(x[begin:end], (h * keep, c * keep))
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    def value(self, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Value from LSTM outputs (unlike ``ActorCritic.value``, which takes observations)."""
        return self.value_head(features).squeeze(-1)


@AGENTS.register("ppo_lstm")
class RecurrentPPO(PPO):
    """PPO with an LSTM policy; ``act`` takes and returns the per-env recurrent state."""

    Config = RecurrentPPOConfig
    Network = RecurrentActorCritic
    name = "ppo_lstm"
    recurrent = True
    pipelined_rollout = False

    def __init__(
        self, config: RecurrentPPOConfig, observation_space: gym.spaces.Space, action_space: gym.spaces.Space
    ):
        if config.num_envs % config.minibatches != 0:
            raise RLKitError(
                f"ppo_lstm splits minibatches over envs: num_envs={config.num_envs} must be a multiple of "
                f"minibatches={config.minibatches}; e.g. --set minibatches="
                f"{math.gcd(config.num_envs, config.minibatches)}."
            )
        if config.augment != "none":
            raise RLKitError(
                f"augment={config.augment} is not available for ppo_lstm (its updates re-run whole sequences "
                "through the LSTM); use augment=none, or ppo with frame stacking."
            )
        super().__init__(config, observation_space, action_space)

    def initial_state(self, batch: int) -> LSTMState:
        """The recurrent state of ``batch`` envs at their episodes' start."""
        return self.net.initial_state(batch)

    def _step(
        self, obs: torch.Tensor, state: LSTMState, episode_start: np.ndarray
    ) -> tuple[torch.distributions.Distribution, torch.Tensor, LSTMState]:
        """Distribution and value for one step of a batch of envs (observations as ``_obs`` gives them),
        and the next state."""
        starts = torch.as_tensor(np.asarray(episode_start, dtype=np.float32), device=self.device).view(1, -1)
        features, state = self.net.recurrent_features(obs.unsqueeze(0), starts, state)
        return self.net.head_distribution(features[0]), self.net.value(features[0]), state

    @torch.no_grad()
    def act(  # type: ignore[override]
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        epsilon: float | None = None,
        rng: np.random.Generator | None = None,
        state: LSTMState | None = None,
        episode_start: np.ndarray | None = None,
    ) -> tuple[np.ndarray, LSTMState]:
        """Env actions and the next state for a batch; ``state`` None starts every env's episode afresh,
        ``episode_start[i]`` zeroes env i's state first."""
        count = len(observations)
        if state is None:
            state, episode_start = self.initial_state(count), np.ones(count, bool)
        elif episode_start is None:
            episode_start = np.zeros(count, bool)
        dist, _, state = self._step(self._obs(observations), state, episode_start)
        if deterministic and self.config.eval_deterministic:
            raw = dist.probs.argmax(-1) if self.net.discrete else dist.mean
        else:
            raw = dist.sample()
        return self.to_env_action(raw.cpu().numpy()), state

    # ---- learning ------------------------------------------------------------------------------------
    def learn(self, run: Any) -> None:
        """Collect ``rollout_steps`` x ``num_envs`` steps carrying the LSTM state, compute GAE, optimise."""
        cfg = self.config
        envs = self.make_train_envs()
        T, N = cfg.rollout_steps, cfg.num_envs
        buf_obs, buf_actions, buf_logp, buf_values, buf_rewards, buf_term, buf_ended, buf_valid = (
            self.rollout_arrays()
        )
        buf_start = np.zeros((T, N), np.float32)  # episode-start flags, for the LSTM state resets
        obs, _ = envs.reset(seed=self.reset_seed())
        state = self.initial_state(N)
        episode_start = np.ones(N, dtype=bool)
        reset_next = np.zeros(N, dtype=bool)
        discounted_return = np.zeros(N)
        monitor = LoopMonitor(self, run)
        stats: dict[str, float] = {}
        try:
            while self.global_step < cfg.total_steps and not run.stop_requested:
                apply_lr_schedule(self.optimizer, cfg, self.global_step)
                initial_state = (state[0].clone(), state[1].clone())
                for t in range(T):
                    if self.obs_rms is not None:
                        self.obs_rms.update(np.asarray(obs, dtype=np.float64))
                    obs_tensor = self._obs(obs)
                    with torch.no_grad():
                        dist, value, state = self._step(obs_tensor, state, episode_start)
                        raw = dist.sample()
                        logp = dist.log_prob(raw) if self.net.discrete else dist.log_prob(raw).sum(-1)
                        if cfg.squash and not self.net.discrete:
                            logp = logp - tanh_log_det(raw)
                    actions = raw.cpu().numpy()
                    next_obs, rewards, terminated, truncated, info = envs.step(self.to_env_action(actions))
                    rewards = np.asarray(rewards, dtype=np.float64)
                    if self.return_rms is not None:
                        discounted_return = discounted_return * cfg.gamma * (~reset_next) + rewards
                        if (~reset_next).any():
                            self.return_rms.update(discounted_return[~reset_next])
                        rewards = rewards / math.sqrt(self.return_rms.var + 1e-8)
                    buf_obs[t], buf_actions[t], buf_start[t] = obs_tensor.cpu().numpy(), actions, episode_start
                    buf_logp[t], buf_values[t] = logp.cpu().numpy(), value.cpu().numpy()
                    buf_rewards[t] = rewards
                    buf_term[t], buf_ended[t] = terminated, terminated | truncated
                    buf_valid[t] = ~reset_next
                    episode_start = reset_next  # this was a reset step: the next observation starts an episode
                    reset_next = terminated | truncated
                    obs = next_obs
                    self.global_step += N
                    monitor.episodes(info)
                with torch.no_grad():
                    next_value = self._step(self._obs(obs), state, episode_start)[1].cpu().numpy()
                advantages, returns = gae(
                    buf_rewards, buf_values, next_value, buf_term, buf_ended, cfg.gamma, cfg.gae_lambda
                )
                stats = self.optimise_sequences(
                    buf_obs, buf_actions, buf_logp, buf_values, advantages, returns, buf_valid, buf_start,
                    initial_state,
                )
                stats["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
                if monitor.tick(stats):
                    break
        finally:
            envs.close()
            self.save(run.checkpoint_dir / "last.safetensors")
        monitor.finish()

    def minibatch_envs(self) -> list[np.ndarray]:
        """One epoch's minibatches: a random partition of the env indices into ``minibatches`` equal sets."""
        order = self.rng.permutation(self.config.num_envs)
        return list(order.reshape(self.config.minibatches, -1))

    def optimise_sequences(
        self, obs, actions, old_logp, old_values, advantages, returns, valid, starts, initial_state: LSTMState
    ) -> dict[str, float]:
        """Epochs of minibatch updates; each minibatch re-runs whole env streams (T, B) through the LSTM from
        the rollout's initial state, and the loss covers their valid (non-reset) steps."""
        cfg = self.config
        tensor = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        t_obs, t_actions, t_logp, t_values = tensor(obs), tensor(actions), tensor(old_logp), tensor(old_values)
        t_adv, t_returns, t_valid, t_starts = tensor(advantages), tensor(returns), tensor(valid) > 0, tensor(starts)
        clip = self.clip_range()
        log: dict[str, list[float]] = {"pg": [], "value": [], "entropy": [], "kl": [], "clipfrac": []}
        with training_mode(self.net):
            for _ in range(cfg.epochs):
                for envs in self.minibatch_envs():
                    idx = torch.as_tensor(envs, device=self.device)
                    state = (initial_state[0][:, idx], initial_state[1][:, idx])
                    features, _ = self.net.recurrent_features(t_obs[:, idx], t_starts[:, idx], state)
                    keep = t_valid[:, idx].reshape(-1)
                    features = features.reshape(-1, features.shape[-1])[keep]
                    mb_actions = t_actions[:, idx].reshape(-1, *t_actions.shape[2:])[keep]
                    new_logp, entropy = self.net.dist_log_prob_entropy(self.net.head_distribution(features), mb_actions)
                    values = self.net.value(features)
                    old_logp, adv, old_values, mb_returns = (
                        t[:, idx].reshape(-1)[keep] for t in (t_logp, t_adv, t_values, t_returns)
                    )
                    self.minibatch_step(new_logp, entropy, values, old_logp, adv, old_values, mb_returns, clip, log)
                if cfg.target_kl is not None and np.mean(log["kl"][-cfg.minibatches :]) > cfg.target_kl:
                    break
        return self.loss_statistics(log)
