"""What rlkit's two PyBullet sims (driving, navigation) share: camera-layout kwargs, CHW pixel ids, full resolved
settings in ``make_vec_env``, one-line errors for impossible knobs, episode metrics in evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rlkit.envs import make_vec_env
from rlkit.envs.driving import DrivingEnv
from rlkit.envs.navigation import NavigationEnv
from rlkit.errors import RLKitError
from rlkit.evaluation import EvalResult, evaluate, final_info_values

ENVS = {"driving": DrivingEnv, "navigation": NavigationEnv}
PIXEL_IDS = ("rlkit/DrivingRGB-v0", "rlkit/NavigationRGB-v0")


@pytest.mark.parametrize("env_id", PIXEL_IDS)
def test_registered_pixel_ids_give_chw_uint8_for_cnn_encoders(env_id):
    import torch

    from rlkit.vision.encoders import make_encoder

    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.shape == obs.shape == (3, 84, 84) and obs.dtype == np.uint8
        encoder = make_encoder("nature_cnn", env.observation_space)
        assert encoder(torch.as_tensor(obs[None])).shape == (1, encoder.features_dim)
    finally:
        env.close()


@pytest.mark.parametrize("name", ENVS)
@pytest.mark.parametrize("kwargs, shape", [({}, (84, 84, 3)), ({"channels_first": True}, (3, 84, 84)),
                                           ({"grayscale": True, "frame_stack": 4, "channels_first": True},
                                            (4, 84, 84)),
                                           ({"grayscale": True, "frame_stack": 2}, (84, 84, 2))])
def test_same_camera_kwargs_same_layout_in_both_sims(name, kwargs, shape):
    env = ENVS[name](obs_type="rgb", **kwargs)
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.shape == obs.shape == shape and obs.dtype == np.uint8
        new, *_ = env.step(0)
        if kwargs.get("frame_stack", 1) > 1:  # rolling stack: oldest frame dropped, newest appended
            axis = 0 if kwargs.get("channels_first") else 2
            assert np.array_equal(np.take(new, [0], axis=axis), np.take(obs, [1], axis=axis))
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["rlkit/Driving-v0", "rlkit/Navigation-v0"])
def test_make_vec_env_records_every_resolved_setting(env_id):
    envs = make_vec_env(env_id, 1, seed=0, env_kwargs={"num_obstacles": 2})
    try:
        settings = envs.unwrapped.envs[0].unwrapped.settings
        assert envs.settings_dict == {"env_id": env_id, **settings}
        assert envs.settings_dict["num_obstacles"] == 2 and envs.settings_dict["obs_type"] == "state"
        assert {"frame_stack", "grayscale", "channels_first", "image_size", "renderer"} <= set(settings)
    finally:
        envs.close()


def test_settings_dict_of_other_envs_is_the_given_kwargs():
    envs = make_vec_env("CartPole-v1", 1, env_kwargs={"sutton_barto_reward": True})
    assert envs.settings_dict == {"env_id": "CartPole-v1", "sutton_barto_reward": True}
    envs.close()


@pytest.mark.parametrize("name, kwargs, needle", [
    ("driving", {"obs_type": "lidar"}, "obs_type"),
    ("driving", {"action_type": "torque"}, "action_type"),
    ("driving", {"num_obstacles": -1}, "num_obstacles must be an integer >= 0"),
    ("driving", {"num_obstacles": 40}, "does not fit"),
    ("driving", {"min_turn_radius": 7.0}, "min_turn_radius"),
    ("driving", {"track_width": 0.2}, "track_width must exceed"),
    ("driving", {"track_radius": 2.0}, "track_radius must be > 2 x track_width"),
    ("driving", {"frame_stack": 0}, "frame_stack must be an integer >= 1"),
    ("driving", {"laps": 0}, "laps"),
    ("navigation", {"obs_type": "lidar"}, "obs_type"),
    ("navigation", {"action_type": "torque"}, "action_type"),
    ("navigation", {"num_obstacles": -1}, "num_obstacles must be an integer >= 0"),
    ("navigation", {"min_goal_distance": 12.0}, "min_goal_distance must be <"),
    ("navigation", {"arena_size": 0.5}, "leaves no room"),
    ("navigation", {"obstacle_size": 9.0}, "obstacle_size must be < arena_size"),
    ("navigation", {"frame_stack": 0}, "frame_stack must be an integer >= 1"),
])
def test_impossible_knobs_raise_one_line_errors_at_construction(name, kwargs, needle):
    with pytest.raises(RLKitError, match=needle) as info:
        ENVS[name](**kwargs)
    assert "\n" not in str(info.value)


def test_bad_kwargs_through_make_vec_env_are_one_line_user_errors():
    with pytest.raises(RLKitError, match="goal") as info:
        make_vec_env("rlkit/Navigation-v0", 1, env_kwargs={"min_goal_distance": 50.0})
    assert "\n" not in str(info.value)
    with pytest.raises(RLKitError, match="bad env_kwargs"):
        make_vec_env("rlkit/Driving-v0", 1, env_kwargs={"image_layout": "chw"})


def test_final_info_values_respect_the_vector_masks():
    info = {"success": np.array([True, False]), "_success": np.array([True, True]),
            "spl": np.array([0.8, 0.0]), "_spl": np.array([True, False])}
    assert final_info_values(info, 0, ("success", "spl", "missing")) == {"success": 1.0, "spl": 0.8}
    assert final_info_values(info, 1, ("success", "spl")) == {"success": 0.0}
    result = EvalResult([1.0, 3.0], [10, 20], {"success": [1.0, 0.0], "spl": [0.5, 0.0]})
    summary = result.summary()
    assert summary["success"] == 0.5 and summary["spl"] == 0.25 and summary["mean"] == 2.0


def test_evaluate_aggregates_the_env_episode_metrics():
    def forward(obs, episode_start=None):
        return np.zeros(len(obs), np.int64)  # navigation: always forward

    result = evaluate(forward, "rlkit/Navigation-v0", 3, seed=0, env_kwargs={"max_episode_steps": 30}, num_envs=3)
    assert set(result.metrics) == set(NavigationEnv.metadata["episode_metrics"])
    assert all(len(v) == 3 for v in result.metrics.values())
    summary = result.summary()
    assert 0.0 <= summary["spl"] <= summary["success"] <= 1.0 and summary["path_length"] > 0
    result = evaluate(lambda obs, start=None: np.full(len(obs), 2), "rlkit/Driving-v0", 2, seed=0, num_envs=2)
    assert {"route_completion", "laps", "is_success"} <= set(result.summary())
