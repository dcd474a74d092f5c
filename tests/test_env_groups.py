"""Pipelined PPO rollouts: ALE envs split into groups (act for one group while another's games run)."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_cli import assert_user_error

from rlkit.agents.policy_gradient import PPO, ActorCritic
from rlkit.cli import main
from rlkit.envs import finish_step, make_atari_env_groups, make_vec_env, start_step
from rlkit.errors import RLKitError


def _policy_of_the_frame(self: ActorCritic, obs: torch.Tensor):
    """The rollout's sampler replaced by a deterministic policy (action = pixel sum mod n, log-prob 0) with
    zero values, so that rollouts can be compared."""
    n = self.policy_head.out_features
    choice = obs.reshape(len(obs), -1).to(torch.int64).sum(1) % n
    return choice, torch.zeros(len(obs)), torch.zeros(len(obs))


def _rollouts(tmp_path, monkeypatch, groups: int) -> list[tuple[np.ndarray, ...]]:
    captured: list[tuple[np.ndarray, ...]] = []

    def capture(self, obs, actions, old_logp, old_values, advantages, returns, valid):
        captured.append(tuple(np.array(a) for a in (obs, actions, returns, valid)))
        return {}

    monkeypatch.setattr("rlkit.loop.evaluate_during_training", lambda agent, run: 0.0)  # no final eval games
    monkeypatch.setattr(ActorCritic, "sample_with_value", _policy_of_the_frame)
    monkeypatch.setattr(PPO, "optimise", capture)
    run = tmp_path / f"groups{groups}"
    code = main(["train", "ppo", "--env", "ALE/Breakout-v5", "--preset", "atari", "--seed", "3", "--total-steps", "512",
                 "--run-dir", str(run), "--set", "num_envs=4", "--set", "rollout_steps=64", "--set", "eval_every=0",
                 "--set", "torch_threads=1", "--set", f"env_groups={groups}"])
    assert code == 0
    return captured


def test_grouped_rollout_matches_one_vector_env(tmp_path, monkeypatch):
    alone, pipelined = _rollouts(tmp_path, monkeypatch, 1), _rollouts(tmp_path, monkeypatch, 2)
    assert len(alone) == len(pipelined) == 2
    for one, two in zip(alone, pipelined):
        for name, a, b in zip(("obs", "actions", "returns", "valid"), one, two):
            np.testing.assert_array_equal(a, b, err_msg=name)
    obs, actions, returns, valid = alone[1]
    assert len(np.unique(actions)) > 1 and (valid == 0).any()  # the comparison covers life-loss resets
    assert not np.array_equal(obs[:, 0], obs[:, 1])  # per-env seeds differ


def test_auto_env_groups():
    from rlkit.agents.policy_gradient import PPOConfig
    from rlkit.config import build_config

    space, action_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6)

    def groups(**values) -> int:
        config = build_config(PPOConfig, {"env_id": "ALE/Pong-v5", "device": "cpu", **values})
        return PPO(config, space, action_space).env_group_count()

    expected = 2 if (os.cpu_count() or 1) >= 2 else 1
    assert groups(num_envs=8) == expected
    assert groups(num_envs=7) == 1
    assert groups(num_envs=8, env_groups=4) == 4


def test_start_and_finish_step_match_step():
    stepped, split = make_vec_env("ALE/Pong-v5", 2), make_vec_env("ALE/Pong-v5", 2)
    stepped.reset(seed=5), split.reset(seed=5)
    actions = np.array([2, 3])
    for _ in range(20):
        a = stepped.step(actions)
        b = finish_step(split, start_step(split, actions))
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
    stepped.close(), split.close()
    gym_envs = make_vec_env("CartPole-v1", 2)
    gym_envs.reset(seed=0)
    obs, *_ = finish_step(gym_envs, start_step(gym_envs, np.array([0, 1])))
    assert obs.shape == (2, 4)


def test_env_groups_errors(capsys):
    with pytest.raises(RLKitError, match="must divide num_envs=8"):
        make_atari_env_groups("ALE/Pong-v5", 8, 3)
    assert_user_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--total-steps", "64",
                               "--set", "env_groups=2"], "env_groups > 1 needs an ALE/ Atari env")
