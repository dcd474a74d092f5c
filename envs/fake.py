"""A fast fake image env for tests: Atari-shaped uint8 frames, a learnable but trivial reward."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError

MAX_ACTIONS = 254  # brightness levels (k + 1) * 255 // (n_actions + 1) stay distinct up to here


class FakeImageEnv(gym.Env):
    """Frames of shape ``(stack, size, size)``; reward 1 when the action equals the newest frame's brightness
    class.

    Observations are a rolling frame stack like Atari's (each step drops the oldest frame and appends one new
    frame), which the frame-deduplicating replay buffer relies on. Episodes last ``episode_length`` steps.
    Costs microseconds per step, so CNN code paths test fast.

    Brightness class k has level ``(k + 1) * 255 // (n_actions + 1)``; pixels are level + noise in [-8, 7],
    clipped to [0, 255] (only the darkest and brightest classes of more than 30 actions reach the clip), so the
    mean brightness grows with k for every ``n_actions`` from 1 to 254.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        size: int = 84,
        stack: int = 4,
        n_actions: int = 4,
        episode_length: int = 50,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(n_actions, bool) or not isinstance(n_actions, (int, np.integer)) or not (
                1 <= n_actions <= MAX_ACTIONS):
            raise RLKitError(f"n_actions must be an integer in [1, {MAX_ACTIONS}] (one brightness level each); "
                             f"got {n_actions!r}.")
        self.size, self.stack, self.n_actions, self.episode_length = size, stack, n_actions, episode_length
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (stack, size, size), np.uint8)
        self.action_space = gym.spaces.Discrete(n_actions)
        self._t = 0
        self._target = 0
        self._frames = np.zeros((stack, size, size), dtype=np.uint8)

    def _frame(self) -> np.ndarray:
        self._target = int(self.np_random.integers(self.n_actions))
        level = (self._target + 1) * 255 // (self.n_actions + 1)
        noise = self.np_random.integers(0, 16, (self.size, self.size), dtype=np.uint8)
        return np.clip(noise.astype(np.int16) + (level - 8), 0, 255).astype(np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._frames = np.stack([self._frame() for _ in range(self.stack)])
        return self._frames.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == self._target)
        self._t += 1
        self._frames = np.concatenate([self._frames[1:], self._frame()[None]])
        return self._frames.copy(), reward, False, self._t >= self.episode_length, {}

    def render(self) -> np.ndarray:
        level = (self._target + 1) * 255 // (self.n_actions + 1)
        return np.full((self.size, self.size, 3), level, dtype=np.uint8)
