"""``rlkit collect``: run a policy in an env and write frames (+ ground-truth labels) as a frame dataset.

Atari ids run one Python ALE env with the evaluation-mode preprocessing of ``make_vec_env`` (84x84 grayscale,
frame skip 4 with max-pooling, stack 4, no-op starts, FIRE on reset, sticky actions, full games) so that the
RAM can be read after every step; labels come from ``rlkit.vision.labels``. Other envs store their
observation when it is an image, else the rendered frame as 84x84 grayscale; they have labels only when a
``label_fn`` is registered for their family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError
from rlkit.vision.data import ChunkWriter, assign_splits
from rlkit.vision.labels import label_fn_for

Policy = Callable[[np.ndarray, bool], Any]
"""(observation, episode_start) -> action; ``episode_start`` is True on an episode's first observation."""


def make_collect_env(env_id: str, color: bool = False) -> tuple[gym.Env, dict[str, Any], Callable[..., Any]]:
    """(env, settings record, reset function) used by ``collect`` (and by tests that re-simulate it)."""
    from rlkit.envs import env_family, env_spec, headless_rendering

    env_spec(env_id)
    if env_family(env_id) == "atari":
        from rlkit.envs.atari import atari_settings, fire_reset, make_atari_single_env

        settings = atari_settings("eval", {})
        env = make_atari_single_env(env_id, settings)
        record = {"env_id": env_id, "pipeline": "gymnasium AtariPreprocessing + FrameStackObservation",
                  **settings.__dict__}
        return env, record, fire_reset
    headless_rendering()
    env = gym.make(env_id, render_mode="rgb_array")

    def reset(env: gym.Env, seed: int | None = None) -> tuple[np.ndarray, dict]:
        return env.reset(seed=seed)

    return env, {"env_id": env_id}, reset


def channels_first(env: gym.Env | None, obs: np.ndarray) -> bool:
    """Whether an image observation is laid out (C, H, W), read from the env's observation space (``obs``'s own
    shape without one): the channel axis is the shorter end, as an image is wider than its channel count, so
    (4, 84, 84) and (6, 84, 84) (two stacked RGB frames) are channels-first, (84, 84, 3) and (84, 84, 6) not."""
    space = getattr(env, "observation_space", None)
    shape = space.shape if isinstance(space, gym.spaces.Box) and space.shape == obs.shape else obs.shape
    return shape[0] <= shape[-1]


def _frame(env: gym.Env | None, obs: np.ndarray) -> np.ndarray:
    """The stored frame: an image observation as (C, H, W), else the render as (1, 84, 84) grayscale."""
    obs = np.asarray(obs)
    if obs.dtype == np.uint8 and obs.ndim == 3:
        return obs if channels_first(env, obs) else obs.transpose(2, 0, 1)
    import cv2

    rgb = env.render()
    if rgb is None:
        raise RLKitError("this env has no image observations and renders no rgb_array frames; it cannot be collected.")
    gray = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA)[None]


def _color(env: gym.Env) -> np.ndarray:
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "ale"):
        return unwrapped.ale.getScreenRGB()
    return np.asarray(env.render())


def collect(
    env_id: str,
    steps: int,
    out_dir: str | Path,
    policy: Policy | None = None,
    policy_name: str = "random",
    seed: int = 0,
    color: bool = False,
    chunk_size: int = 1000,
    episode_steps: int | None = None,
    print_fn: Callable[[str], None] = print,
) -> Path:
    """Write ``steps`` frames of ``env_id`` to ``out_dir``; returns the manifest path.

    ``policy`` maps one observation and whether it starts an episode (a recurrent policy resets its state there)
    to an action (default: uniform random, seeded). ``episode_steps`` cuts
    episodes after that many frames (more, shorter episodes; the cut is recorded as truncation).
    """
    from rlkit.run import Progress

    if steps < 1:
        raise RLKitError(f"--steps must be at least 1, got {steps}.")
    if chunk_size < 1:
        raise RLKitError(f"--chunk-size must be at least 1, got {chunk_size}.")
    labels = label_fn_for(env_id)
    env, settings, reset = make_collect_env(env_id, color)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    if policy is None:
        n_actions = env.action_space.n if isinstance(env.action_space, gym.spaces.Discrete) else None

        def policy(obs: np.ndarray, episode_start: bool) -> Any:
            return int(rng.integers(n_actions)) if n_actions is not None else env.action_space.sample()

    writer = ChunkWriter(
        out_dir,
        chunk_size,
        {
            "env_id": env_id,
            "policy": policy_name,
            "seed": seed,
            "steps": steps,
            "labels": labels.names if labels else [],
            "label_source": labels.source if labels else None,
            "label_info": labels.extra if labels else {},
            "color": color,
            "episode_steps": episode_steps,
            "env_settings": settings,
        },
    )
    progress = Progress(steps, 0, print_fn)
    episodes: list[dict[str, Any]] = []
    obs, _ = reset(env, seed)
    episode, t, ret = 0, 0, 0.0
    obs_shape = color_shape = None
    try:
        for i in range(steps):
            frame = _frame(env, obs)
            obs_shape = list(frame.shape)
            action = policy(np.asarray(obs), t == 0)
            row: dict[str, Any] = {"obs": frame, "episode": episode, "step": t, "action": np.asarray(action, np.int64)}
            if labels:
                values = labels.read(env)
                row["labels"] = np.array([values[n] for n in labels.names], dtype=np.int64)
            if color:
                row["color"] = _color(env)
                color_shape = list(row["color"].shape)
            obs, reward, terminated, truncated, _ = env.step(action)
            row["reward"] = np.float32(reward)
            writer.add(**row)
            ret += float(reward)
            t += 1
            cut = episode_steps is not None and t >= episode_steps
            if terminated or truncated or cut or i == steps - 1:
                episodes.append({"id": episode, "frames": t, "return": ret, "complete": bool(terminated or truncated)})
                if i < steps - 1:
                    obs, _ = reset(env)
                episode, t, ret = episode + 1, 0, 0.0
            if (i + 1) % 100 == 0 or i == steps - 1:
                progress.update(i + 1, {"episodes": len(episodes)})
    finally:
        progress.close()
        env.close()
    split = assign_splits([e["id"] for e in episodes], seed)
    for e in episodes:
        e["split"] = split[e["id"]]
    counts = {s: sum(e["frames"] for e in episodes if e["split"] == s) for s in ("train", "val", "test")}
    path = writer.close(
        {"obs_shape": obs_shape, "obs_dtype": "uint8", "color_shape": color_shape, "episodes": episodes,
         "split_frames": counts}
    )
    print_fn(
        f"wrote {steps} frames of {env_id} ({len(episodes)} episodes; frames train/val/test "
        f"{counts['train']}/{counts['val']}/{counts['test']}; labels: {', '.join(writer.manifest['labels']) or 'none'})"
        f" to {Path(out_dir)}"
    )
    return path
