"""Atari on ale-py's C++ vectorised env, with the standard (Nature / SB3 zoo) preprocessing.

Rewards are clipped here, in Python, rather than inside ALE so that episode statistics always report the
real game score. A game ends when ALE says so (or truncates); with ``episodic_life`` a lost life ends the
training episode but the statistics keep adding up until the game is over.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from rlkit.envs.ale_pool import ale_seed
from rlkit.errors import RLKitError


@dataclasses.dataclass
class AtariSettings:
    """Preprocessing of an ALE/<Game>-v5 env; recorded in the run's config."""

    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    grayscale: bool = True
    max_pool: bool = True
    noop_max: int = 30
    fire_reset: bool = True
    episodic_life: bool = False
    clip_rewards: bool = False
    repeat_action_probability: float = 0.25
    full_action_space: bool = False
    max_episode_frames: int = 108_000
    pipeline: Literal["nature", "pong_pixels"] = "nature"
    """nature: 84x84 grayscale stacks (Mnih et al. 2015); pong_pixels: Karpathy's 80x80 difference frames
    with the two actions UP / DOWN (Pong only)."""
    backend: Literal["auto", "in_process", "ale_vector"] = "auto"
    """Who plays the games: in_process = rlkit's ``ALEPool`` in the calling process (no per-step hand-off to a
    thread; one core); ale_vector = ale-py's C++ ``AtariVectorEnv`` threads (one per core); auto = in_process
    for a single env, ale_vector for more (the faster of the two in each case, docs/benchmarks.md). The game
    logic and the noop-reset draws are the same (tests/test_ale_pool.py). pong_pixels always uses ale_vector."""


TRAIN_DEFAULTS = {"episodic_life": True, "clip_rewards": True}


def atari_settings(mode: str, env_kwargs: dict[str, Any]) -> AtariSettings:
    """Resolve settings for ``mode`` ("train" clips rewards and ends episodes on life loss by default;
    "eval" always plays full, unclipped games)."""
    valid = {f.name for f in dataclasses.fields(AtariSettings)}
    unknown = set(env_kwargs) - valid
    if unknown:
        raise RLKitError(
            f"unknown Atari env setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}."
        )
    hints = typing.get_type_hints(AtariSettings)
    for key, value in env_kwargs.items():
        expected = hints[key]
        if typing.get_origin(expected) is Literal:
            choices = typing.get_args(expected)
            if value not in choices:
                raise RLKitError(f"Atari env setting {key}={value!r} is not one of {', '.join(choices)}.")
        elif expected is bool and not isinstance(value, bool):
            raise RLKitError(f"Atari env setting {key} must be true or false, not {value!r}.")
        elif expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise RLKitError(f"Atari env setting {key} must be an integer, not {value!r}.")
        elif expected is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RLKitError(f"Atari env setting {key} must be a number, not {value!r}.")
    for key, low in (("frame_skip", 1), ("frame_stack", 1), ("screen_size", 1), ("noop_max", 0),
                     ("max_episode_frames", 1)):
        if key in env_kwargs and env_kwargs[key] < low:
            raise RLKitError(f"Atari env setting {key} must be at least {low}, not {env_kwargs[key]}.")
    probability = env_kwargs.get("repeat_action_probability", 0.0)
    if not 0.0 <= probability <= 1.0:
        raise RLKitError(f"Atari env setting repeat_action_probability must be in [0, 1], not {probability}.")
    values = dict(TRAIN_DEFAULTS) if mode == "train" else {}
    values.update(env_kwargs)
    if mode == "eval":
        values.update(episodic_life=False, clip_rewards=False)
    return AtariSettings(**values)


def rom_name(env_id: str) -> str:
    """ALE/MsPacman-v5 -> ms_pacman."""
    match = re.fullmatch(r"ALE/([A-Za-z0-9]+)-v5", env_id)
    if not match:
        raise RLKitError(f"{env_id!r} is not an ALE v5 id; write it as ALE/<Game>-v5, e.g. ALE/Pong-v5.")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", match.group(1)).lower()


def ale_vector_env(
    env_id: str, num_envs: int, settings: AtariSettings, num_threads: int = 0, **overrides: Any
) -> Any:
    """ale-py's C++ ``AtariVectorEnv`` configured from ``settings`` (rewards unclipped, next-step
    autoreset); ``overrides`` replace its keyword arguments (e.g. full-colour frames for video)."""
    from ale_py.vector_env import AtariVectorEnv

    kwargs = dict(
        num_threads=num_threads,
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
        max_num_frames_per_episode=settings.max_episode_frames,
        img_height=settings.screen_size,
        img_width=settings.screen_size,
        grayscale=settings.grayscale,
        stack_num=settings.frame_stack,
        frameskip=settings.frame_skip,
        maxpool=settings.max_pool,
        noop_max=settings.noop_max,
        # ale-py's own episodic_life resets the whole game at every lost life; life_loss_info only signals
        # termination and play goes on (the Nature / SB3 EpisodicLifeEnv behaviour).
        episodic_life=False,
        life_loss_info=settings.episodic_life,
        reward_clipping=False,
        use_fire_reset=settings.fire_reset,
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )
    kwargs.update(overrides)
    return AtariVectorEnv(rom_name(env_id), num_envs, **kwargs)


def ale_pool(env_id: str, num_envs: int, settings: AtariSettings) -> Any:
    """rlkit's in-process ``ALEPool`` configured from ``settings`` (rewards unclipped, next-step autoreset)."""
    from ale_py import roms

    from rlkit.envs.ale_pool import ALEPool, GameSettings

    game = GameSettings(
        rom_path=str(roms.get_rom_path(rom_name(env_id))),
        frame_skip=settings.frame_skip,
        frame_stack=settings.frame_stack,
        screen_size=settings.screen_size,
        max_pool=settings.max_pool,
        noop_max=settings.noop_max,
        fire_reset=settings.fire_reset,
        life_loss_info=settings.episodic_life,
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
        max_episode_frames=settings.max_episode_frames,
        grayscale=settings.grayscale,
    )
    return ALEPool(game, num_envs)


class AtariVecEnv(VectorEnv):
    """ale-py ``AtariVectorEnv`` plus Python-side reward clipping and full-game episode statistics.

    ``info["episode"]`` holds ``r`` (game score) and ``l`` (agent steps) where ``info["_episode"]`` is
    true, the same layout as gymnasium's ``RecordEpisodeStatistics``.

    With ``episodic_life`` a lost life is reported as a termination and the following step behaves like a
    next-step autoreset, as consumers of a Gymnasium vector env expect: the agent's action is replaced by
    FIRE (or NOOP) and its reward is reported as 0, while the game itself goes on with its remaining lives
    (the Nature / SB3 EpisodicLifeEnv + FireResetEnv behaviour). The reward still counts in the statistics.

    Without ``episodic_life`` (evaluation) a lost life ends nothing, and with ``fire_reset`` the step after it
    plays FIRE in place of the agent's action (reward and step counted as usual): an agent trained with
    episodic life never chose the action that relaunches the ball, since the env pressed FIRE for it, and
    greedy play would otherwise stall until the time limit after its first lost life (Breakout).
    """

    def __init__(
        self, env_id: str, num_envs: int, settings: AtariSettings, num_threads: int = 0, **ale_overrides: Any
    ) -> None:
        """``num_threads``: C++ threads of ale-py's vector env (0: its default); ``ale_overrides`` replace its
        keyword arguments and imply the ale_vector backend."""
        self.env_id = env_id
        self.settings = settings
        backend = settings.backend
        if backend == "auto":
            backend = "in_process" if num_envs == 1 else "ale_vector"
        self.backend = "ale_vector" if ale_overrides else backend
        if self.backend == "in_process":
            self.ale_env = ale_pool(env_id, num_envs, settings)
            action_set = list(self.ale_env.action_set)
        else:
            self.ale_env = ale_vector_env(env_id, num_envs, settings, num_threads=num_threads, **ale_overrides)
            action_set = list(self.ale_env.ale.get_action_set())
        self.num_envs = num_envs
        self.single_observation_space = self.ale_env.single_observation_space
        self.single_action_space = self.ale_env.single_action_space
        self.observation_space = self.ale_env.observation_space
        self.action_space = self.ale_env.action_space
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self._game_return = np.zeros(num_envs, dtype=np.float64)
        self._game_length = np.zeros(num_envs, dtype=np.int64)
        self._resetting = np.zeros(num_envs, dtype=bool)
        self._life_reset = np.zeros(num_envs, dtype=bool)
        self._any_pending = False  # some env resets this step or must FIRE after a lost life (the slow path)
        from ale_py import Action

        fire = settings.fire_reset and Action.FIRE in action_set
        self._life_reset_action = action_set.index(Action.FIRE) if fire else 0
        self._fire_after_life_loss = fire and not settings.episodic_life
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._fire_next = np.zeros(num_envs, dtype=bool)
        # the ALE actions the last ``send`` played, after FIRE replaced the agent's where the env presses it
        self.played_actions = np.zeros(num_envs, dtype=np.int64)
        # Frames are stacked along the first observation axis, newest last (for frame-deduplicating replay).
        self.frames_stacked = settings.frame_stack > 1

    def to_ale_actions(self, actions: np.ndarray) -> np.ndarray:
        """The ALE actions (indices into the game's minimal action set) that ``actions`` stand for."""
        return np.asarray(actions, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            seed = ale_seed(seed, self.num_envs)
        obs, info = self.ale_env.reset(seed=seed, options=options)
        self._lives[:] = info["lives"]
        self._fire_next[:] = False
        self._game_return[:] = 0
        self._game_length[:] = 0
        self._resetting[:] = False
        self._life_reset[:] = False
        self._any_pending = False
        return obs, dict(info)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        """Start a step: the C++ threads play ``actions`` while the caller goes on; ``recv`` waits for it."""
        actions = np.array(actions, dtype=np.int64)
        if actions.shape != (self.num_envs,):
            raise RLKitError(f"expected {self.num_envs} actions, got shape {actions.shape}.")
        if self._any_pending:
            actions[self._life_reset] = self._life_reset_action
        if self._fire_after_life_loss:
            actions[self._fire_next] = self._life_reset_action
        self.played_actions = actions  # what the games play: a twin env (video) must play the same
        self.ale_env.send(actions)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Finish the step started by ``send``: what ``step`` returns."""
        obs, reward, terminated, truncated, info = self.ale_env.recv()
        reward = reward.astype(np.float32)
        info = dict(info)
        if self._fire_after_life_loss:  # a life lost in a game that goes on: FIRE next (a new game FIREs itself)
            lives = info["lives"]
            self._fire_next = (lives < self._lives) & ~terminated & ~truncated
            self._lives[:] = lives
        if not self._any_pending and not np.count_nonzero(terminated) and not np.count_nonzero(truncated):
            # The usual step: no env ends, resets or lost a life (the full path below gives the same result).
            self._game_return += reward
            self._game_length += 1
            return obs, np.sign(reward) if self.settings.clip_rewards else reward, terminated, truncated, info
        # An env that ended last step is being reset now (next-step autoreset); its step is not counted.
        counted = ~self._resetting
        self._game_return += np.where(counted, reward, 0.0)
        self._game_length += counted
        life_only = self.settings.episodic_life & (info["lives"] > 0)
        # ALE resets a game that is over (or truncated) on the next step; after a lost life play goes on.
        ended = truncated | (terminated & ~life_only)
        game_over = ended & counted
        if game_over.any():
            info["episode"] = {"r": self._game_return.copy(), "l": self._game_length.copy()}
            info["_episode"] = game_over
            self._game_return[game_over] = 0
            self._game_length[game_over] = 0
        self._resetting = ended
        reward[self._life_reset] = 0.0  # a life-reset step is a reset step for the learner
        self._life_reset = terminated & life_only & ~ended
        self._any_pending = bool(np.count_nonzero(self._resetting) or np.count_nonzero(self._life_reset))
        if self.settings.clip_rewards:
            reward = np.sign(reward)
        return obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        if getattr(self, "ale_env", None) is not None:
            self.ale_env.close()
            self.ale_env = None


class PongPixelsVecEnv(AtariVecEnv):
    """Karpathy's "Pong from Pixels" (2016) observation and actions on the ALE vector env.

    The full 210x160 colour frame is cropped to rows 35-194, downsampled by 2 to 80x80, the two background
    colours erased and everything else set to 1; the observation is the difference of the last two such
    frames (the first frame of an episode minus zeros), flattened to 6400 values in {-1, 0, 1} (int8).
    Actions: 0 = UP, 1 = DOWN (ALE actions 2 and 3 in Pong's minimal set).
    """

    ALE_ACTIONS = np.array([2, 3], dtype=np.int64)
    BACKGROUND = (144, 109)

    def __init__(self, env_id: str, num_envs: int, settings: AtariSettings, num_threads: int = 0) -> None:
        if rom_name(env_id) != "pong":
            raise RLKitError(f"the pong_pixels pipeline is Pong's alone, not {env_id}; use ALE/Pong-v5.")
        super().__init__(
            env_id, num_envs, settings, num_threads,
            img_height=210, img_width=160, grayscale=False, stack_num=1, maxpool=False,
        )
        self.single_observation_space = gym.spaces.Box(-1, 1, (6400,), np.int8)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.frames_stacked = False
        self._previous = np.zeros((num_envs, 6400), dtype=np.int8)

    def _binary(self, obs: np.ndarray) -> np.ndarray:
        frame = obs[:, 0, 35:195:2, ::2, 0]
        keep = (frame != self.BACKGROUND[0]) & (frame != self.BACKGROUND[1]) & (frame != 0)
        return keep.reshape(len(obs), -1).astype(np.int8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = super().reset(seed=seed, options=options)
        self._previous = self._binary(obs)
        return self._previous.copy(), info

    def to_ale_actions(self, actions: np.ndarray) -> np.ndarray:
        """0 = UP, 1 = DOWN -> Pong's ALE actions; anything else is an error (numpy would wrap -1 to DOWN)."""
        actions = np.asarray(actions, dtype=np.int64)
        if actions.size and (actions.min() < 0 or actions.max() > 1):
            raise RLKitError(f"pong_pixels actions are 0 (up) and 1 (down), got {actions.tolist()}.")
        return self.ALE_ACTIONS[actions]

    def send(self, actions: np.ndarray) -> None:
        super().send(self.to_ale_actions(actions))

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        restarting = self._resetting.copy()
        obs, reward, terminated, truncated, info = super().recv()
        current = self._binary(obs)
        previous = np.where(restarting[:, None], 0, self._previous)
        self._previous = current
        return (current - previous).astype(np.int8), reward, terminated, truncated, info


def make_atari_single_env(env_id: str, settings: AtariSettings, render_mode: str | None = None) -> gym.Env:
    """One Python ALE env with the vector env's preprocessing (gymnasium's ``AtariPreprocessing`` +
    ``FrameStackObservation``), for code that must read the console (RAM labels) after every step.

    Same settings as ``AtariVecEnv`` except FIRE on reset, which callers do themselves (``fire_reset``); the
    84x84 frames are resized by cv2 INTER_AREA in both, so they match up to rounding, and a new episode's
    stack is padded with zero frames in both (gymnasium's default repeats the reset frame).
    """
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    if settings.pipeline != "nature":
        raise RLKitError(f"pipeline {settings.pipeline!r} is not supported here; use the default nature pipeline.")
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
        max_num_frames_per_episode=settings.max_episode_frames,
        render_mode=render_mode,
    )
    env = AtariPreprocessing(
        env,
        noop_max=settings.noop_max,
        frame_skip=settings.frame_skip,
        screen_size=settings.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=settings.grayscale,
        scale_obs=False,
    )
    if settings.frame_stack == 1:
        return env
    return FrameStackObservation(env, settings.frame_stack, padding_type="zero")


def fire_reset(env: gym.Env, seed: int | None = None) -> tuple[np.ndarray, dict]:
    """Reset, then press FIRE once where the game has it (as ale-py's ``use_fire_reset``)."""
    obs, info = env.reset(seed=seed)
    meanings = env.unwrapped.get_action_meanings()
    if "FIRE" in meanings:
        obs, _, terminated, truncated, info = env.step(meanings.index("FIRE"))
        if terminated or truncated:
            obs, info = env.reset()
    return obs, info
