"""MaskedCartPole: CartPole-v1 without the velocities (obs = [x, theta]), a memory task.

A feed-forward policy sees positions only and cannot tell which way the pole is moving; a recurrent policy
can infer velocities from successive observations.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

VISIBLE = np.array([0, 2])  # cart position, pole angle (hidden: cart velocity 1, pole angular velocity 3)


class MaskedCartPoleEnv(gym.Env):
    """CartPole-v1 dynamics and reward; observations keep only cart position and pole angle."""

    metadata = CartPoleEnv.metadata

    def __init__(self, render_mode: str | None = None) -> None:
        self.env = CartPoleEnv(render_mode=render_mode)
        self.render_mode = render_mode
        self.action_space = self.env.action_space
        full = self.env.observation_space
        self.observation_space = gym.spaces.Box(full.low[VISIBLE], full.high[VISIBLE], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        return obs[VISIBLE].astype(np.float32), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs[VISIBLE].astype(np.float32), float(reward), terminated, truncated, info

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()
