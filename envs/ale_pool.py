"""Atari games played in the calling process: ``ALEInterface`` + the Nature preprocessing in numpy / OpenCV.

The same game logic as ale-py's C++ ``AtariVectorEnv`` (frame skip with sticky actions inside ALE, max-pool of
the last two screens (grayscale or RGB), ``INTER_AREA`` resize, frame stack, noop and FIRE reset, life-loss signal,
truncation after ``max_episode_frames`` frames, next-step autoreset), without its per-step hand-off to a worker
thread, which on a small CPU costs more than the preprocessing (docs/benchmarks.md): the fastest way to play
one game. With ``noop_max=0`` its observations, rewards and flags equal ale-py's step for step
(tests/test_ale_pool.py), and with noop starts too: the noop counts are drawn as ale-py draws them
(``StdUniformInt``: C++'s ``std::mt19937`` seeded with the game's seed, ``uniform_int_distribution`` as libstdc++
computes it), so both backends play the same games for the same seed.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError

ALE_SEED_LIMIT = 2**31
"""ALE takes seeds of a signed 32-bit int."""


class StdUniformInt:
    """The draws of C++'s ``std::uniform_int_distribution<int>(0, n - 1)`` on ``std::mt19937(seed)``, as
    libstdc++ computes them (Lemire's multiply-and-shift with rejection on 32-bit outputs); ale-py's vector env
    draws its noop counts this way. numpy's MT19937 is the same generator: only its seeding (``init_genrand``)
    is done here, and its state set through the public ``state`` property."""

    def __init__(self, seed: int) -> None:
        key = np.empty(624, dtype=np.uint32)
        value = seed & 0xFFFFFFFF
        key[0] = value
        for i in range(1, 624):
            value = (1812433253 * (value ^ (value >> 30)) + i) & 0xFFFFFFFF
            key[i] = value
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}

    def integers(self, n: int) -> int:
        """One draw from {0, ..., n - 1} (``n`` >= 1)."""
        product = int(self._bits.random_raw()) * n
        low = product & 0xFFFFFFFF
        if low < n:
            threshold = ((1 << 32) - n) % n
            while low < threshold:
                product = int(self._bits.random_raw()) * n
                low = product & 0xFFFFFFFF
        return product >> 32


def ale_seed(seed: int, games: int) -> int:
    """``seed`` folded so that the games' seeds ``seed + i`` (i < ``games``) fit ALE: unchanged below the limit,
    wrapped above it (a run seed near 2**31 plus the evaluation offsets would overflow)."""
    return seed % (ALE_SEED_LIMIT - games)

RAW_HEIGHT, RAW_WIDTH = 210, 160


@dataclasses.dataclass(frozen=True)
class GameSettings:
    """What the games need from ``AtariSettings``, ``life_loss_info`` being its ``episodic_life``."""

    rom_path: str
    frame_skip: int
    frame_stack: int
    screen_size: int
    max_pool: bool
    noop_max: int
    fire_reset: bool
    life_loss_info: bool
    repeat_action_probability: float
    full_action_space: bool
    max_episode_frames: int
    grayscale: bool


class ALEPool:
    """``num_envs`` Atari games with the Nature preprocessing, played in the calling process: the part of ale-py's
    ``AtariVectorEnv`` interface that ``rlkit.envs.atari.AtariVecEnv`` uses (``reset``, ``send``, ``recv``,
    ``step``, ``close``, the spaces, ``action_set``). ``send`` plays the step at once."""

    def __init__(self, settings: GameSettings, num_envs: int) -> None:
        import cv2
        from ale_py import Action, ALEInterface, LoggerMode

        ALEInterface.setLoggerMode(LoggerMode.Error)
        self.cv2 = cv2
        self.num_envs = num_envs
        self.settings = settings
        size = settings.screen_size
        frame_shape = (size, size) if settings.grayscale else (size, size, 3)
        self.obs = np.zeros((num_envs, settings.frame_stack, *frame_shape), np.uint8)
        self.rewards = np.zeros(num_envs, np.float32)
        self.terminated = np.zeros(num_envs, bool)
        self.truncated = np.zeros(num_envs, bool)
        self.lives = np.zeros(num_envs, np.int32)
        self.frame_number = np.zeros(num_envs, np.int32)
        self.episode_frame_number = np.zeros(num_envs, np.int32)
        self.ales = []
        for _ in range(num_envs):
            ale = ALEInterface()
            ale.setFloat("repeat_action_probability", settings.repeat_action_probability)
            ale.loadROM(settings.rom_path)
            self.ales.append(ale)
        ale = self.ales[0]
        self.action_set = list(ale.getLegalActionSet() if settings.full_action_space else ale.getMinimalActionSet())
        self.fire = settings.fire_reset and Action.FIRE in self.action_set
        self.noop, self.fire_action = Action.NOOP, Action.FIRE
        raw_shape = (RAW_HEIGHT, RAW_WIDTH) if settings.grayscale else (RAW_HEIGHT, RAW_WIDTH, 3)
        self.raw = np.zeros((num_envs, 2, *raw_shape), dtype=np.uint8)
        self.read_screen = ALEInterface.getScreenGrayscale if settings.grayscale else ALEInterface.getScreenRGB
        self.rngs = [StdUniformInt(0) for _ in range(num_envs)]  # reseeded by every seeded reset
        self.elapsed = [0] * num_envs  # frames played in the current episode
        self.previous_lives = [0] * num_envs
        self.needs_reset = [True] * num_envs
        self.single_observation_space = gym.spaces.Box(0, 255, self.obs.shape[1:], np.uint8)
        self.single_action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset every game; game i gets ``seed + i`` for ALE (sticky actions) and its noop draws."""
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        seed = ale_seed(seed, self.num_envs)
        for i in range(self.num_envs):
            self._reset_game(i, seed + i)
        return self.obs.copy(), self._info()

    def send(self, actions: np.ndarray) -> None:
        """Play one agent step of every game with ``actions`` (indices into ``action_set``); a game whose
        episode ended on the previous step is reset instead (reward 0, not terminated)."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise RLKitError(f"expected {self.num_envs} actions, got shape {actions.shape}.")
        indices = actions.astype(np.int64, copy=False).tolist()  # Python ints: cheaper than numpy scalars
        for index in indices:
            if not 0 <= index < len(self.action_set):
                raise RLKitError(f"action {index} out of range for {len(self.action_set)} actions.")
        settings, read_screen = self.settings, self.read_screen
        for i, ale in enumerate(self.ales):
            if self.needs_reset[i]:
                self._reset_game(i, None)
                continue
            action = self.action_set[indices[i]]
            raw, lives = self.raw[i], self.previous_lives[i]
            reward, elapsed = 0, self.elapsed[i]
            for skip in range(settings.frame_skip, 0, -1):
                reward += ale.act(action)
                game_over = ale.game_over()
                elapsed += 1
                if game_over or elapsed >= settings.max_episode_frames:
                    break
                if skip <= 2:
                    read_screen(ale, raw[skip - 1])
            now = ale.lives()
            self._push_frame(i)
            self.elapsed[i], self.previous_lives[i] = elapsed, now
            terminated = game_over or (settings.life_loss_info and 0 < now < lives)
            timed_out = elapsed >= settings.max_episode_frames
            self.rewards[i] = reward
            self.terminated[i] = terminated
            self.truncated[i] = timed_out and not terminated
            self._write_counters(i)
            self.needs_reset[i] = game_over or timed_out

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """The step played by ``send``: (observations, rewards, terminated, truncated, info)."""
        return self.obs.copy(), self.rewards.copy(), self.terminated.copy(), self.truncated.copy(), self._info()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self.send(actions)
        return self.recv()

    def close(self) -> None:
        """Nothing to release: the games live in this process."""

    def _info(self) -> dict[str, np.ndarray]:
        return {
            "env_id": np.arange(self.num_envs, dtype=np.int32),
            "lives": self.lives.copy(),
            "frame_number": self.frame_number.copy(),
            "episode_frame_number": self.episode_frame_number.copy(),
        }

    def _reset_game(self, i: int, seed: int | None) -> None:
        ale, settings = self.ales[i], self.settings
        if seed is not None:
            ale.setInt("random_seed", seed)
            ale.loadROM(settings.rom_path)
            self.rngs[i] = StdUniformInt(seed)
        ale.reset_game()
        if self.fire:
            ale.act(self.fire_action)
        noops = (int(self.rngs[i].integers(settings.noop_max)) if settings.noop_max > 0 else 0) - int(self.fire)
        for _ in range(noops):
            ale.act(self.noop)
            if ale.game_over():
                ale.reset_game()
        self.obs[i] = 0
        self.read_screen(ale, self.raw[i, 0])
        self.raw[i, 1] = 0
        self._push_frame(i)
        self.elapsed[i] = 0
        self.previous_lives[i] = ale.lives()
        self.needs_reset[i] = False
        self.rewards[i] = 0
        self.terminated[i] = False
        self.truncated[i] = False
        self._write_counters(i)

    def _push_frame(self, i: int) -> None:
        """Max-pool the last two screens, resize to ``screen_size`` (per channel) and append to game i's stack
        (newest last)."""
        raw, stack = self.raw[i], self.obs[i]
        if self.settings.max_pool:
            np.maximum(raw[0], raw[1], out=raw[0])
        stack[:-1] = stack[1:]
        size = self.settings.screen_size
        self.cv2.resize(raw[0], (size, size), dst=stack[-1], interpolation=self.cv2.INTER_AREA)

    def _write_counters(self, i: int) -> None:
        ale = self.ales[i]
        self.lives[i] = ale.lives()
        self.frame_number[i] = ale.getFrameNumber()
        self.episode_frame_number[i] = ale.getEpisodeFrameNumber()
