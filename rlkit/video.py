"""Evaluation video: mp4 (H.264, yuv420p, browser-playable) of full episodes in full colour.

Atari: the agent plays its usual 84x84 grayscale stack; a second ALE env with the same seed, settings and played
actions (the agent's, or FIRE where the env presses it) renders the full-colour 210x160 screen. Both consume the
same random streams, so they stay in lockstep; rewards and episode ends are compared every step and a divergence is
an error.
Other envs: Gymnasium's ``render_mode="rgb_array"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.envs import env_family, headless_rendering, make_vec_env
from rlkit.evaluation import AgentActor, separate_torch_rng

Act = Callable[[np.ndarray], np.ndarray]


def unique_path(directory: Path, stem: str, suffix: str) -> Path:
    """``directory/stem.suffix``, or ``stem-1``, ``stem-2``... if taken: never overwrite a video."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}{suffix}"
    k = 1
    while path.exists():
        path = directory / f"{stem}-{k}{suffix}"
        k += 1
    return path


def write_mp4(frames: list[np.ndarray], path: Path, fps: int, scale: int = 1) -> None:
    """Encode RGB frames (H, W, 3 uint8) as H.264 mp4."""
    import imageio.v2 as imageio

    with imageio.get_writer(
        str(path), fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=7
    ) as writer:
        for frame in frames:
            if scale > 1:
                frame = frame.repeat(scale, axis=0).repeat(scale, axis=1)
            writer.append_data(np.ascontiguousarray(frame))


def write_gif(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Write RGB frames as an animated GIF."""
    import imageio.v2 as imageio

    imageio.mimsave(str(path), [np.ascontiguousarray(f) for f in frames], duration=1000 / fps, loop=0)


def _atari_episode(act: Act, config: Any, seed: int, max_steps: int) -> list[np.ndarray]:
    from rlkit.envs.ale_pool import ale_seed
    from rlkit.envs.atari import AtariVecEnv, PongPixelsVecEnv, ale_vector_env, atari_settings

    # Both envs on ale-py's vector env: the same seed gives the same no-op starts and sticky-action draws (the
    # in-process backend draws them from another generator), so the colour game is the agent's game.
    settings = dataclasses.replace(atari_settings("eval", config.env_kwargs), backend="ale_vector")
    env_class = PongPixelsVecEnv if settings.pipeline == "pong_pixels" else AtariVecEnv
    agent_env = env_class(config.env_id, 1, settings, num_threads=1)
    colour_env = ale_vector_env(
        config.env_id, 1, settings, num_threads=1, img_height=210, img_width=160, grayscale=False, stack_num=1
    )
    try:
        obs, _ = agent_env.reset(seed=seed)
        colour, _ = colour_env.reset(seed=ale_seed(seed, 1))  # folded as agent_env folds it
        frames = [colour[0, 0]]
        for _ in range(max_steps):
            action = act(obs)
            obs, reward, terminated, truncated, _ = agent_env.step(action)
            colour, colour_reward, colour_term, colour_trunc, _ = colour_env.step(agent_env.played_actions)
            if reward[0] != colour_reward[0] or terminated[0] != colour_term[0] or truncated[0] != colour_trunc[0]:
                raise RuntimeError("colour video env diverged from the agent's env")
            frames.append(colour[0, 0])
            if terminated[0] or truncated[0]:
                break
        return frames
    finally:
        agent_env.close()
        colour_env.close()


def _rendered_episode(act: Act, config: Any, seed: int, max_steps: int) -> list[np.ndarray]:
    headless_rendering()
    envs = make_vec_env(config.env_id, 1, seed=seed, mode="eval", env_kwargs=config.env_kwargs, render_mode="rgb_array")
    try:
        obs, _ = envs.reset(seed=seed)
        frames = [np.asarray(envs.render()[0])]
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = envs.step(act(obs))
            frames.append(np.asarray(envs.render()[0]))
            if terminated[0] or truncated[0]:
                break
        return frames
    finally:
        envs.close()


def play_episode(act: Act, config: Any, seed: int, max_steps: int = 100_000) -> list[np.ndarray]:
    """Full-colour frames of one evaluation episode (reset frame + one per step); ``act`` maps a batch
    of observations to actions."""
    play = _atari_episode if env_family(config.env_id) == "atari" else _rendered_episode
    return play(act, config, seed, max_steps)


def log_gif(writer: Any, tag: str, frames: list[np.ndarray], step: int, fps: int = 30, max_frames: int = 400) -> None:
    """Log frames to TensorBoard as an animated GIF (what SummaryWriter.add_video writes, without moviepy)."""
    import io

    import imageio.v2 as imageio
    from tensorboard.compat.proto.summary_pb2 import Summary

    stride = max(1, len(frames) // max_frames)
    clip = [np.ascontiguousarray(f) for f in frames[::stride]]
    buffer = io.BytesIO()
    imageio.mimsave(buffer, clip, format="GIF", duration=1000 * stride / fps, loop=0)
    height, width = clip[0].shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def record_video(
    agent: Any,
    config: Any,
    out_dir: Path,
    seed: int,
    epsilon: float = 0.0,
    step: int = 0,
    episodes: int = 1,
    max_steps: int = 100_000,
    label: str | None = None,
    gif: bool = False,
    deterministic: bool = True,
) -> list[Path]:
    """Play ``episodes`` episodes and write one video each: the reset frame plus one frame per step,
    named ``<label>__step<S>__ep<K>.mp4`` (never overwriting an existing file). The policy is the evaluated
    one (``deterministic``, ``epsilon``); episode K is seeded ``seed + K``, its exploration and any sampling
    too, so a video does not depend on what was played before it."""
    atari = env_family(config.env_id) == "atari"
    label = label or config.env_id.replace("/", "-")
    paths = []
    for episode in range(episodes):
        episode_seed = seed + episode
        actor = AgentActor(agent, deterministic=deterministic, epsilon=epsilon,
                           rng=np.random.default_rng(episode_seed))
        with separate_torch_rng(episode_seed, getattr(agent, "device", None)):
            frames = play_episode(actor, config, episode_seed, max_steps)
        path = unique_path(Path(out_dir), f"{label}__step{step}__ep{episode}", ".gif" if gif else ".mp4")
        if gif:
            write_gif(frames, path, fps=30)
        else:
            write_mp4(frames, path, fps=30, scale=2 if atari else 1)
        paths.append(path)
    return paths


def record_training_video(agent: Any, run: Any) -> Path:
    """One evaluation episode of a training agent: mp4 under eval/ and a GIF under TensorBoard videos/eval."""
    cfg = agent.config
    seed = cfg.seed + 3_000_017
    rng = np.random.default_rng(seed)  # never shifts training exploration
    epsilon = getattr(cfg, "eval_epsilon", 0.0)
    with separate_torch_rng(seed, getattr(agent, "device", None)):
        frames = play_episode(AgentActor(agent, epsilon=epsilon, rng=rng), cfg, seed=seed)
    path = unique_path(run.eval_dir, f"{run.dir.name}__step{agent.global_step}__ep0", ".mp4")
    write_mp4(frames, path, fps=30, scale=2 if len(frames[0]) < 300 else 1)
    log_gif(run.writer, "videos/eval", frames, agent.global_step)
    run.print(f"video @ {agent.global_step}: {path} ({len(frames)} frames)")
    return path
