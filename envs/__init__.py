"""Env factories: ``make_vec_env`` for training/evaluation, env families for ``rlkit envs``.

``ALE/*`` ids run on ale-py's C++ vectorised env (``rlkit.envs.atari``); every other Gymnasium id goes
through a synchronous Gymnasium vector env with episode statistics. Our own envs register under ``rlkit/``.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError, suggest

gym.register(id="rlkit/FakeImage-v0", entry_point="rlkit.envs.fake:FakeImageEnv", max_episode_steps=1000)
# PyBullet sims: other choices are env kwargs. The pixel ids give (C, H, W) uint8 frames, what rlkit's CNN encoders
# take (camera kwargs grayscale / frame_stack / channels_first mean the same in both: rlkit.envs.pixels).
_PIXELS = {"obs_type": "rgb", "channels_first": True}
gym.register(id="rlkit/Navigation-v0", entry_point="rlkit.envs.navigation:NavigationEnv", max_episode_steps=500)
gym.register(id="rlkit/NavigationRGB-v0", entry_point="rlkit.envs.navigation:NavigationEnv", max_episode_steps=500,
             kwargs=_PIXELS)
gym.register(id="rlkit/Driving-v0", entry_point="rlkit.envs.driving:DrivingEnv", max_episode_steps=1000)
gym.register(id="rlkit/DrivingRGB-v0", entry_point="rlkit.envs.driving:DrivingEnv", max_episode_steps=1000,
             kwargs=_PIXELS)
gym.register(id="rlkit/MaskedCartPole-v0", entry_point="rlkit.envs.masked:MaskedCartPoleEnv", max_episode_steps=500)

EVAL_MAX_EPISODE_STEPS = 10_000  # evaluation episodes of envs without a time limit (CliffWalking) must end

FAMILY_BY_ENTRY = {
    "ale_py": "atari",
    "gymnasium.envs.classic_control": "classic-control",
    "gymnasium.envs.toy_text": "toy-text",
    "gymnasium.envs.box2d": "box2d",
    "gymnasium.envs.mujoco": "mujoco",
    "gymnasium.envs.phys2d": "phys2d",
    "gymnasium.envs.functional_jax_env": "jax",
    "gymnasium.envs.tabular": "tabular",
    "rlkit.envs.driving": "driving",
    "rlkit.envs.navigation": "navigation",
    "rlkit": "rlkit",
}


def _entry_module(spec: gym.envs.registration.EnvSpec) -> str:
    entry = spec.entry_point
    return entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")


def headless_rendering() -> None:
    """Let pygame-rendered envs (classic control, toy text) draw rgb_array frames without a display or sound
    device, and without SDL's warnings about them on stderr (unless the user chose drivers)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def env_family(env_id: str) -> str:
    """The family of a registered id: atari, classic-control, toy-text, rlkit, ..."""
    if env_id.startswith("ALE/"):
        return "atari"
    spec = env_spec(env_id)
    module = _entry_module(spec)
    for prefix, family in FAMILY_BY_ENTRY.items():
        if module.startswith(prefix):
            return family
    return "other"


def _register_ale() -> None:
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:  # pragma: no cover - ale-py is a dependency
        pass


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The Gymnasium spec of ``env_id``, or a one-line error with close matches."""
    _register_ale()
    if env_id not in gym.registry:
        raise RLKitError(
            f"unknown env id {env_id!r}; run `rlkit envs` to list ids." + suggest(env_id, gym.registry.keys())
        )
    return gym.registry[env_id]


def list_envs() -> dict[str, list[str]]:
    """Registered env ids grouped by family (Atari: v5 ids only)."""
    _register_ale()
    groups: dict[str, list[str]] = {}
    for env_id in list(gym.registry):
        if env_id.startswith("ALE/") and not env_id.endswith("-v5"):
            continue
        if "/" in env_id and not env_id.startswith(("ALE/", "rlkit/")):
            continue
        try:
            family = env_family(env_id)
        except RLKitError:  # pragma: no cover
            continue
        if family in ("jax", "phys2d", "tabular", "other") or "ram" in env_id.lower():
            continue
        groups.setdefault(family, []).append(env_id)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def make_vec_env(
    env_id: str,
    num_envs: int = 1,
    seed: int | None = None,
    mode: str = "train",
    env_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
    ale_threads: int | None = None,
) -> gym.vector.VectorEnv:
    """Build ``num_envs`` copies of ``env_id`` as one VectorEnv (next-step autoreset, episode statistics).

    ``mode="eval"`` gives full, unclipped episodes. ``ale_threads``: C++ threads of an ALE vector env (default:
    one per env, at most one per core; unused where the games play in this process, see
    ``AtariSettings.backend``). The resolved env settings are in ``env.settings_dict`` (for
    envs with an ``unwrapped.settings`` dict, such as rlkit's sims, every kwarg including defaults).
    The action space is seeded from ``seed``; pass the same seed to the first ``reset``.
    """
    env_kwargs = dict(env_kwargs or {})
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', not {mode!r}")
    if num_envs < 1:
        raise RLKitError(f"num_envs must be >= 1, got {num_envs}.")
    if env_family(env_id) == "atari" and render_mode is None:
        from rlkit.envs.atari import AtariVecEnv, PongPixelsVecEnv, atari_settings

        settings = atari_settings(mode, env_kwargs)
        threads = ale_threads or min(num_envs, os.cpu_count() or 1)
        env_class = PongPixelsVecEnv if settings.pipeline == "pong_pixels" else AtariVecEnv
        envs: gym.vector.VectorEnv = env_class(env_id, num_envs, settings, num_threads=threads)
        envs.settings_dict = {"env_id": env_id, **settings.__dict__}  # type: ignore[attr-defined]
    else:
        spec = env_spec(env_id)
        if mode == "eval" and spec.max_episode_steps is None and "max_episode_steps" not in env_kwargs:
            env_kwargs["max_episode_steps"] = EVAL_MAX_EPISODE_STEPS
        try:
            envs = gym.make_vec(
                spec.id,
                num_envs=num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
                render_mode=render_mode,
                **env_kwargs,
            )
        except TypeError as exc:
            raise RLKitError(f"bad env_kwargs for {env_id}: {exc}.") from None
        except ValueError as exc:  # gymnasium's (or the env's) own check of a kwarg's value
            if not env_kwargs:
                raise
            raise RLKitError(f"{env_id} rejects {_named_kwargs(env_kwargs, str(exc))}: {exc}; fix or drop it "
                             f"(--set env_kwargs.KEY=..., --env-kwarg KEY=...).") from None
        # our sims expose every resolved kwarg (defaults included) as ``unwrapped.settings``: record them all
        resolved = getattr(envs.envs[0].unwrapped, "settings", None) if hasattr(envs, "envs") else None
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
        envs.settings_dict = {"env_id": env_id, **env_kwargs, **(resolved or {})}  # type: ignore[attr-defined]
    if seed is not None:
        envs.action_space.seed(seed)
        envs.single_action_space.seed(seed)
    return envs


def _named_kwargs(env_kwargs: dict[str, Any], message: str) -> str:
    """``key=value`` of the env kwargs that ``message`` names (all of them when it names none)."""
    named = {key: value for key, value in env_kwargs.items() if key in message} or env_kwargs
    return "env_kwargs " + ", ".join(f"{key}={value!r}" for key, value in named.items())


def check_env_groups(env_id: str, num_envs: int, groups: int) -> None:
    """One-line errors for a split of ``num_envs`` into ``groups`` ALE vector envs that cannot be made."""
    if env_family(env_id) != "atari":
        raise RLKitError(f"env_groups > 1 needs an ALE/ Atari env (C++ vector env), not {env_id}; use env_groups=1.")
    if groups < 1 or num_envs % groups:
        raise RLKitError(f"env_groups={groups} must divide num_envs={num_envs}; pick a divisor, or 1.")


def make_atari_env_groups(
    env_id: str, num_envs: int, groups: int, mode: str = "train", env_kwargs: dict[str, Any] | None = None
) -> list[gym.vector.VectorEnv]:
    """``num_envs`` Atari games as ``groups`` ALE vector envs of ``num_envs // groups`` games, the cores shared
    out among them. A learner acts for one group while the C++ threads of another play (``start_step`` /
    ``finish_step``). Game i of group g is game g * (num_envs // groups) + i of one vector env: reset group g
    with ``seed + g * (num_envs // groups)`` and every game gets the seed it would have had there."""
    check_env_groups(env_id, num_envs, groups)
    per_group = num_envs // groups
    env_kwargs = dict(env_kwargs or {})
    if env_kwargs.get("backend", "auto") == "auto":  # C++ threads even for 1 game a group: they overlap the learner,
        env_kwargs["backend"] = "ale_vector"  # (the games are the same on either backend)
    threads = max(1, min(per_group, (os.cpu_count() or 1) // groups))
    return [make_vec_env(env_id, per_group, mode=mode, env_kwargs=env_kwargs, ale_threads=threads)
            for _ in range(groups)]


def start_step(envs: gym.vector.VectorEnv, actions: np.ndarray) -> Any:
    """Begin a step of ``envs``: an ALE vector env plays in its C++ threads until ``finish_step`` (the caller
    may compute meanwhile); any other vector env steps now. Pass the return value to ``finish_step``."""
    from rlkit.envs.atari import AtariVecEnv

    if isinstance(envs, AtariVecEnv):
        envs.send(actions)
        return None
    return envs.step(actions)


def finish_step(envs: gym.vector.VectorEnv, started: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
    """The step begun by ``start_step``: (observations, rewards, terminated, truncated, info)."""
    return envs.recv() if started is None else started  # type: ignore[attr-defined]


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """One (non-vectorised) env, e.g. for ``check_env`` or video."""
    env_spec(env_id)
    env = gym.make(env_id, render_mode=render_mode, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def episode_stats(info: dict) -> list[tuple[int, float, int]]:
    """(env index, return, length) for every episode that finished in this step's ``info``."""
    if "_episode" not in info:
        return []
    done = np.flatnonzero(info["_episode"])
    return [(int(i), float(info["episode"]["r"][i]), int(info["episode"]["l"][i])) for i in done]
