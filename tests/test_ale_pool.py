"""rlkit's in-process Atari games (``backend=in_process``) against ale-py's C++ ``AtariVectorEnv``."""

from __future__ import annotations

import numpy as np
import pytest

from rlkit.envs import make_vec_env
from rlkit.envs.atari import AtariSettings, AtariVecEnv
from rlkit.errors import RLKitError


def play(backend: str, env_id: str, num_envs: int, steps: int, seed: int, **settings: object) -> list[tuple]:
    """Every (obs, reward, terminated, truncated, lives) of a seeded random-action run, the reset first."""
    env = AtariVecEnv(env_id, num_envs, AtariSettings(backend=backend, **settings), num_threads=1)
    assert env.backend == backend
    actions = np.random.default_rng(seed).integers(0, env.single_action_space.n, (steps, num_envs))
    obs, info = env.reset(seed=seed)
    record = [(obs, np.zeros(num_envs), np.zeros(num_envs, bool), np.zeros(num_envs, bool), info["lives"])]
    for row in actions:
        obs, reward, terminated, truncated, info = env.step(row)
        record.append((obs, reward, terminated, truncated, info["lives"]))
    env.close()
    return record


@pytest.mark.parametrize(
    ("env_id", "settings"),
    [
        ("ALE/Pong-v5", {}),
        # lives, life-loss terminations (episodic_life), truncation after 600 frames and next-step autoreset
        ("ALE/Breakout-v5", {"episodic_life": True, "max_episode_frames": 600}),
        # full-colour frames, as `rlkit collect` and colour encoders use them
        ("ALE/Pong-v5", {"grayscale": False, "screen_size": 64}),
    ],
)
def test_in_process_games_equal_ale_vector_env_step_for_step(env_id: str, settings: dict) -> None:
    # the default noop starts (up to 30): both backends draw them from std::mt19937 seeded with the game's seed,
    # and ALE's sticky actions are seeded the same way (numpy's generator once drew other noop counts)
    reference = play("ale_vector", env_id, 3, 400, seed=7, **settings)
    ours = play("in_process", env_id, 3, 400, seed=7, **settings)
    for step, (theirs, mine) in enumerate(zip(reference, ours)):
        for name, a, b in zip(("obs", "reward", "terminated", "truncated", "lives"), theirs, mine):
            assert np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)), (step, name)
    size = settings.get("screen_size", 84)
    frame = (size, size) if settings.get("grayscale", True) else (size, size, 3)
    assert ours[-1][0].shape == (3, 4, *frame) and ours[-1][0].dtype == np.uint8
    assert sum(float(np.abs(r).sum()) for _, r, *_ in ours) > 0  # points were scored: rewards are compared
    if env_id == "ALE/Breakout-v5":
        terminated = np.array([t for _, _, t, _, _ in ours])
        truncated = np.array([t for _, _, _, t, _ in ours])
        lives = np.array([lv for *_, lv in ours])
        assert terminated.any() and truncated.any()  # both flags and the autoreset after them were exercised
        assert (np.diff(lives, axis=0) < 0).any()


def test_noop_count_draws_are_cpp_uniform_int_on_mt19937() -> None:
    """std::mt19937(5489)'s first outputs (the C++ standard's default seed; its 10,000th is 4123659995) and
    the multiply-and-shift draws libstdc++ makes from them."""
    from rlkit.envs.ale_pool import StdUniformInt

    draws = StdUniformInt(5489)
    raw = [int(draws._bits.random_raw()) for _ in range(10_000)]
    assert raw[0] == 3499211612 and raw[-1] == 4123659995
    again = StdUniformInt(5489)
    assert [again.integers(30) for _ in range(5)] == [(x * 30) >> 32 for x in raw[:5]]


def test_noop_reset_is_seeded_and_bounded() -> None:
    def reset_frames(seed: int) -> np.ndarray:
        env = AtariVecEnv("ALE/Pong-v5", 4, AtariSettings(backend="in_process", noop_max=30))
        _, info = env.reset(seed=seed)
        env.close()
        return info["episode_frame_number"]

    first, again, other = reset_frames(3), reset_frames(3), reset_frames(4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # FIRE (1 frame) then U{0..29} - 1 noops, as ale-py: between 1 and 29 frames played before the first obs
    assert ((first >= 1) & (first <= 29)).all() and ((other >= 1) & (other <= 29)).all()


def test_auto_backend_plays_one_env_in_process_and_many_on_ale_threads() -> None:
    one = make_vec_env("ALE/Pong-v5", num_envs=1, seed=0)
    many = make_vec_env("ALE/Pong-v5", num_envs=2, seed=0)
    assert (one.backend, many.backend) == ("in_process", "ale_vector")
    assert one.settings_dict["backend"] == "auto"
    obs, _ = one.reset(seed=0)
    assert obs.shape == (1, 4, 84, 84)
    assert one.single_action_space.n == many.single_action_space.n == 6
    one.close()
    many.close()


def test_in_process_games_reject_bad_actions() -> None:
    env = AtariVecEnv("ALE/Pong-v5", 2, AtariSettings(backend="in_process"))
    env.reset(seed=0)
    with pytest.raises(RLKitError, match="out of range"):
        env.step(np.array([0, 6]))
    with pytest.raises(RLKitError, match="expected 2 actions"):
        env.step(np.array([0, 1, 2]))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"backend": "threads"}, "backend='threads' is not one of auto, in_process, ale_vector"),
        ({"pipeline": "bogus"}, "pipeline='bogus' is not one of nature, pong_pixels"),
        ({"frame_skip": 2.5}, "frame_skip must be an integer"),
        ({"clip_rewards": 1}, "clip_rewards must be true or false"),
        ({"repeat_action_probability": "high"}, "repeat_action_probability must be a number"),
        ({"frame_skip": 0}, "frame_skip must be at least 1, not 0"),
        ({"noop_max": -1}, "noop_max must be at least 0, not -1"),
        ({"frame_stack": 0}, "frame_stack must be at least 1, not 0"),
        ({"repeat_action_probability": 1.5}, r"repeat_action_probability must be in \[0, 1\], not 1.5"),
    ],
)
def test_atari_settings_are_type_checked(setting: dict, message: str) -> None:
    with pytest.raises(RLKitError, match=message):
        make_vec_env("ALE/Pong-v5", 1, env_kwargs=setting)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_seeds_beyond_ales_32_bits_wrap_instead_of_crashing(num_envs: int) -> None:
    """A run seed near 2**31 plus the evaluation offsets went past ALE's signed 32-bit seed (a TypeError from
    both backends); such seeds wrap, and the wrapped seed plays the same games as seeding with it directly."""
    from rlkit.envs.ale_pool import ale_seed

    big = 2**31 + 5
    assert ale_seed(big, num_envs) == big - (2**31 - num_envs) and ale_seed(12345, num_envs) == 12345
    envs = make_vec_env("ALE/Pong-v5", num_envs=num_envs, seed=0)
    try:
        wrapped, _ = envs.reset(seed=big)
        frames = [envs.step(np.full(num_envs, 2))[0] for _ in range(40)]
        direct, _ = envs.reset(seed=ale_seed(big, num_envs))
        np.testing.assert_array_equal(wrapped, direct)
        for expected in frames:
            np.testing.assert_array_equal(envs.step(np.full(num_envs, 2))[0], expected)
    finally:
        envs.close()



@pytest.mark.parametrize("backend", ["in_process", "ale_vector"])
def test_evaluation_presses_fire_after_a_lost_life(backend: str) -> None:
    """Eval settings (no episodic life): a policy that never presses FIRE must still play Breakout to its game
    over, because the env relaunches the ball after each lost life as training did; it used to stall after
    the first lost life until the 27,000-step limit. The lost lives end nothing."""
    from rlkit.envs.atari import atari_settings

    env = AtariVecEnv("ALE/Breakout-v5", 1, AtariSettings(**{**vars(atari_settings("eval", {})), "backend": backend}))
    env.reset(seed=3)
    lives, ended_at = [], None
    for step in range(3000):
        _, _, terminated, truncated, info = env.step(np.array([0]))  # NOOP, always
        lives.append(int(info["lives"][0]))
        if terminated[0] or truncated[0]:
            ended_at = step
            break
    env.close()
    assert ended_at is not None and not truncated[0], "the game stalled after a lost life"
    assert lives[-1] == 0 and sorted(set(lives), reverse=True)[:2] == [5, 4]


def test_single_env_stack_starts_with_zero_frames_as_the_vector_env() -> None:
    """``rlkit collect``'s single env pads a new episode's stack the way the agent's vector env does."""
    from rlkit.envs.atari import atari_settings, make_atari_single_env

    settings = atari_settings("eval", {"noop_max": 0})
    single = make_atari_single_env("ALE/Pong-v5", settings)
    obs, _ = single.reset(seed=0)
    single.close()
    vector = AtariVecEnv("ALE/Pong-v5", 1, AtariSettings(**{**vars(settings), "fire_reset": False}))
    vector_obs, _ = vector.reset(seed=0)
    vector.close()
    assert obs.shape == vector_obs.shape[1:] == (4, 84, 84)
    assert not obs[:3].any() and obs[3].any()
    assert not vector_obs[0, :3].any()
