"""Agents act and evaluate in eval mode and update in train mode: with a BatchNorm encoder an observation's
action values must not depend on the other observations of the acting batch, and acting must not move the
running statistics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rlkit.agents.base import training_mode
from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.policy_gradient import PPO, PPOConfig

IMAGES = gym.spaces.Box(0, 255, (3, 32, 32), np.uint8)
BATCH_NORM = {"encoder": "resnet18", "encoder_kwargs": {"norm": "batch"}, "device": "cpu"}


def running_means(module: torch.nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_dqn_acts_in_eval_mode_and_updates_in_train_mode():
    agent = DQN(DQNConfig(**BATCH_NORM), IMAGES, gym.spaces.Discrete(3))
    rng = np.random.default_rng(0)
    x, others = rng.integers(0, 256, (1, 3, 32, 32), np.uint8), rng.integers(0, 256, (5, 3, 32, 32), np.uint8)
    before = running_means(agent.q_net)
    assert before
    alone = agent.q_values(x)
    in_batch = agent.q_values(np.concatenate([x, others]))[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, running_means(agent.q_net)))
    obs = torch.as_tensor(np.concatenate([x, others]))
    batch = (obs, torch.zeros(6, dtype=torch.long), torch.zeros(6), obs, torch.full((6,), 0.99), torch.ones(6))
    agent.update(batch)  # batch statistics: the running means move
    assert any(not torch.equal(a, b) for a, b in zip(before, running_means(agent.q_net)))
    assert not agent.q_net.training and not agent.target_net.training


def test_ppo_acts_in_eval_mode_and_optimises_in_train_mode():
    agent = PPO(PPOConfig(**BATCH_NORM, epochs=1, minibatches=1), IMAGES, gym.spaces.Discrete(3))
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, (2, 3, 3, 32, 32), np.uint8)  # (steps, envs, ...)
    before = running_means(agent.net)
    with torch.no_grad():
        together = agent.net.distribution(torch.as_tensor(obs[0])).probs[:1]
        first = agent.net.distribution(torch.as_tensor(obs[0, :1])).probs
    torch.testing.assert_close(first, together)
    agent.act(obs[0], deterministic=False)
    assert all(torch.equal(a, b) for a, b in zip(before, running_means(agent.net)))
    zeros = np.zeros((2, 3), np.float32)
    agent.optimise(obs, np.zeros((2, 3), np.int64), zeros, zeros, zeros + 1, zeros, np.ones((2, 3), np.float32))
    assert any(not torch.equal(a, b) for a, b in zip(before, running_means(agent.net)))
    assert not agent.net.training


def encoder_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def test_frozen_encoders_keep_their_statistics_through_updates():
    """--freeze keeps a BatchNorm encoder in eval mode inside the updates too: its running statistics (part of the
    pretrained file) stay as loaded, and its features do not depend on the update batch, while the heads learn."""
    frozen = {**BATCH_NORM, "freeze_encoder": True}
    rng = np.random.default_rng(2)
    dqn = DQN(DQNConfig(**frozen), IMAGES, gym.spaces.Discrete(3))
    before, head = encoder_state(dqn.q_net.encoder), dqn.q_net.head.weight.clone()
    obs = torch.as_tensor(rng.integers(0, 256, (6, 3, 32, 32), np.uint8))
    dqn.update((obs, torch.zeros(6, dtype=torch.long), torch.ones(6), obs, torch.full((6,), 0.99), torch.ones(6)))
    after = encoder_state(dqn.q_net.encoder)
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not torch.equal(head, dqn.q_net.head.weight)
    assert not dqn.q_net.encoder.training and not dqn.target_net.encoder.training

    ppo = PPO(PPOConfig(**frozen, epochs=1, minibatches=1), IMAGES, gym.spaces.Discrete(3))
    before = encoder_state(ppo.net.actor_encoder)
    frames = rng.integers(0, 256, (2, 3, 3, 32, 32), np.uint8)
    zeros = np.zeros((2, 3), np.float32)
    ppo.optimise(frames, np.zeros((2, 3), np.int64), zeros, zeros, zeros + 1, zeros, np.ones((2, 3), np.float32))
    after = encoder_state(ppo.net.actor_encoder)
    assert all(torch.equal(before[key], after[key]) for key in before)
    with training_mode(ppo.net):  # what every update does: the head in train mode, the frozen encoder not
        assert ppo.net.training and not ppo.net.actor_encoder.training
