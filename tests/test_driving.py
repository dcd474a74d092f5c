"""PyBullet driving env: Gymnasium API checks, spaces, determinism, track generation, the privileged expert."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlkit.envs import env_family, list_envs, make_vec_env
from rlkit.envs.driving import ACTION_TYPES, OBS_TYPES, DrivingEnv, DrivingExpert, run_expert
from rlkit.errors import RLKitError

IDS = ("rlkit/Driving-v0", "rlkit/DrivingRGB-v0")


@pytest.mark.parametrize("env_id", IDS)
def test_registered_ids_pass_check_env(env_id):
    env = gym.make(env_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)
    finally:
        env.close()
    assert env_family(env_id) == "driving" and env_id in list_envs()["driving"]


@pytest.mark.parametrize("obs_type", OBS_TYPES)
@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_every_obs_and_action_type_passes_check_env_and_stays_in_space(obs_type, action_type):
    env = gym.make("rlkit/Driving-v0", obs_type=obs_type, action_type=action_type, num_obstacles=3,
                   render_mode="rgb_array").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)  # includes render checks and closes the env (twice is fine)
    env.action_space.seed(1)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), obs
        assert np.isfinite(reward)
        assert set(info) >= {"route_completion", "laps", "off_track", "collision", "speed"}
        if terminated or truncated:
            obs, info = env.reset()
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 5
    env.close()
    env.close()


def _rollout(env: gym.Env, seed: int, steps: int = 80) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    observations, rewards = [obs], []
    for _ in range(steps):
        continuous = env.unwrapped.action_type == "continuous"
        action = np.float32(rng.uniform(-1, 1, 2)) if continuous else int(rng.integers(5))
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            observations.append(env.reset()[0])
    return observations, rewards


@pytest.mark.parametrize("kwargs", [{"num_obstacles": 4, "action_type": "continuous"}, {"obs_type": "rgb"}])
def test_same_seed_gives_bit_identical_trajectories(kwargs):
    a, b = DrivingEnv(**kwargs), DrivingEnv(**kwargs)
    try:
        _rollout(b, seed=99, steps=10)  # b has history: reset(seed) must wipe it
        obs_a, rew_a = _rollout(a, seed=5)
        obs_b, rew_b = _rollout(b, seed=5)
        assert len(obs_a) == len(obs_b)
        assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b))
        assert rew_a == rew_b
        obs_c, rew_c = _rollout(b, seed=6)
        assert rew_c != rew_a
    finally:
        a.close()
        b.close()


def test_seeds_give_different_drivable_tracks_and_track_seed_fixes_one():
    env = DrivingEnv(track_roughness=0.35, track_harmonics=5)
    lengths = []
    for seed in range(4):
        env.reset(seed=seed)
        track = env.track
        lengths.append(track.length)
        assert np.max(np.abs(track.curvature)) <= 1 / 1.5 + 1e-9
        assert np.allclose(np.linalg.norm(track.tangents, axis=1), 1.0)
    assert len({round(x, 6) for x in lengths}) == 4
    env.close()
    fixed = DrivingEnv(track_seed=7)
    fixed.reset(seed=0)
    first = fixed.track.points.copy()
    fixed.reset(seed=1)
    assert np.array_equal(first, fixed.track.points)
    fixed.close()


def test_expert_completes_laps_without_leaving_the_road():
    # a narrow, curvy track with obstacles: placement must leave a lane, generation must bound curvature
    result = run_expert("rlkit/Driving-v0", episodes=3, seed=10, action_type="continuous", num_obstacles=6,
                        track_width=1.0, track_roughness=0.4, track_harmonics=6)
    assert result["success_rate"] == 1.0 and result["laps"] == 1.0
    assert result["off_track_rate"] == 0.0 and result["collision_rate"] == 0.0
    discrete = run_expert("rlkit/Driving-v0", episodes=2, seed=20)  # 5 steering angles at fixed throttle
    assert discrete["route_completion"] == 1.0 and discrete["off_track_rate"] == 0.0


def test_collisions_and_off_track_are_detected_and_terminate():
    env = DrivingEnv(action_type="continuous", num_obstacles=8)
    env.reset(seed=3)
    expert = DrivingExpert(env)
    expert.path_offset = lambda s: env._obstacles[0][2]  # drive straight at the first obstacle's line
    for _ in range(400):
        _, reward, terminated, _, info = env.step(expert.act())
        if terminated:
            break
    assert info["collision"] and terminated and reward < -5
    env.reset(seed=3)
    for _ in range(400):  # full left lock leaves the road
        _, reward, terminated, _, info = env.step(np.array([1.0, 0.5], dtype=np.float32))
        if terminated:
            break
    assert info["off_track"] and terminated and reward < -5
    env.close()


def test_grayscale_frame_stack_channels_first_layout():
    env = DrivingEnv(obs_type="rgb", grayscale=True, frame_stack=4, channels_first=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert all(np.array_equal(obs[0], obs[k]) for k in range(4))
    for _ in range(10):  # get moving, so that consecutive frames differ
        previous, *_ = env.step(2)
    new, *_ = env.step(2)
    assert np.array_equal(new[:3], previous[1:])  # rolling stack: oldest dropped, newest appended
    assert not np.array_equal(new[3], new[2])  # and the newest frame is a new one
    env.close()


def test_make_vec_env_records_kwargs():
    envs = make_vec_env("rlkit/Driving-v0", 2, seed=0, env_kwargs={"track_width": 1.2, "num_obstacles": 2})
    try:
        settings = envs.unwrapped.envs[0].unwrapped.settings  # every resolved kwarg, defaults included
        assert envs.settings_dict == {"env_id": "rlkit/Driving-v0", **settings}
        assert settings["track_width"] == 1.2 and settings["num_obstacles"] == 2
        assert settings["track_radius"] == 6.0 and settings["obs_type"] == "state"
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 17)
        assert not np.array_equal(obs[0], obs[1])  # seeds 0 and 1: different tracks (curvature ahead)
        for _ in range(5):
            obs, *_ = envs.step(envs.action_space.sample())
        assert obs.shape == (2, 17) and obs.dtype == np.float32
    finally:
        envs.close()


@pytest.mark.parametrize("kwargs, valid", [({"obs_type": "depth"}, "state, rgb"),
                                           ({"action_type": "steer"}, "discrete, discrete_steer_throttle, continuous"),
                                           ({"renderer": "opengl"}, "tiny, egl")])
def test_bad_kwargs_raise_one_line_error(kwargs, valid):
    with pytest.raises(RLKitError, match=valid):
        DrivingEnv(**kwargs)


def test_egl_renderer_on_request_draws_the_road():
    try:
        env = DrivingEnv(obs_type="rgb", renderer="egl")
        obs, _ = env.reset(seed=0)
    except RLKitError as exc:  # no EGL plugin on this machine
        pytest.skip(str(exc))
    try:
        obs, *_ = env.step(2)
        assert obs.shape == (84, 84, 3) and obs.dtype == np.uint8
        road = obs[-10:, 38:46].reshape(-1, 3)  # just ahead of the car: grey road, not green grass
        assert np.all(np.abs(road[:, 0].astype(int) - road[:, 1]) < 8)
    finally:
        env.close()


def test_egl_renderer_draws_the_new_road_after_a_reset():
    """Every reset writes new road meshes; the camera must draw them, not the first episode's (PyBullet caches
    OBJ files by path), and the previous episode's files are removed."""
    envs = []
    try:
        try:
            for seed in (0, 1):
                envs.append(DrivingEnv(obs_type="rgb", renderer="egl"))
                envs[-1].reset(seed=seed)
        except RLKitError as exc:  # no EGL plugin on this machine
            pytest.skip(str(exc))
        reused, fresh = envs  # reset with seed 0 and seed 1
        expected, _ = fresh.reset(seed=1)
        obs, _ = reused.reset(seed=1)
        assert np.array_equal(obs, expected)
        mesh_dir = reused._mesh_dir.name
        before = sorted(os.listdir(mesh_dir))
        obs0, _ = reused.reset(seed=0)
        assert not np.array_equal(obs0, expected)  # a different track looks different
        after = sorted(os.listdir(mesh_dir))
        assert len(after) == len(before) == 3 and not set(before) & set(after)
    finally:
        for env in envs:
            env.close()
        env.close()
