"""The PyBullet navigation env: API checks, determinism, planner, expert and SPL."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlkit.envs import make_vec_env
from rlkit.envs.navigation import NavigationEnv, run_expert
from rlkit.envs.navigation_planning import astar, distance_field, point_clearance
from rlkit.errors import RLKitError

COMBOS = [(o, a) for o in ("state", "rgb") for a in ("discrete", "continuous")]


def _checked(env: gym.Env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every checker warning fails the test
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", ["rlkit/Navigation-v0", "rlkit/NavigationRGB-v0"])
def test_check_env_registered(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    _checked(env)
    env.close()


@pytest.mark.parametrize("obs_type,action_type", COMBOS)
def test_check_env_and_spaces_over_rollouts(obs_type, action_type):
    env = gym.make("rlkit/Navigation-v0", obs_type=obs_type, action_type=action_type, max_episode_steps=40)
    _checked(env)
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    assert env.observation_space.contains(obs)
    for _ in range(2):  # two full (time-limited) episodes
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs), obs
            assert np.isfinite(reward)
            done = terminated or truncated
        assert {"success", "spl", "collisions", "path_length", "shortest_path_length"} <= set(info)
        obs, _ = env.reset()
        assert env.observation_space.contains(obs)
    env.close()


def _trajectory(obs_type: str, action_type: str, seed: int, steps: int) -> list:
    env = gym.make("rlkit/Navigation-v0", obs_type=obs_type, action_type=action_type, max_episode_steps=25)
    env.action_space.seed(123)
    obs, _ = env.reset(seed=seed)
    out = [obs.tobytes()]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs.tobytes(), reward, terminated, truncated, info["path_length"], info["collisions"]))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(obs.tobytes())
    env.close()
    return out


@pytest.mark.parametrize("obs_type,action_type", [("state", "continuous"), ("rgb", "discrete")])
def test_same_seed_same_trajectory(obs_type, action_type):
    steps = 60 if obs_type == "state" else 30  # crosses episode boundaries (25-step episodes)
    assert _trajectory(obs_type, action_type, 7, steps) == _trajectory(obs_type, action_type, 7, steps)


def test_reset_with_same_seed_rebuilds_identical_world():
    env = NavigationEnv()
    first, _ = env.reset(seed=3)
    pose = (env.position.copy(), env.yaw)
    for _ in range(10):
        env.step(0)
    again, _ = env.reset(seed=3)
    assert first.tobytes() == again.tobytes()
    assert np.array_equal(pose[0], env.position) and pose[1] == env.yaw
    env.close()


def test_different_seeds_give_different_arenas():
    env = NavigationEnv()
    levels = []
    for seed in range(4):
        env.reset(seed=seed)
        levels.append((tuple(env.obstacles), tuple(env.start_position), tuple(env.goal_position)))
        assert np.linalg.norm(env.start_position - env.goal_position) >= env.min_goal_distance
        assert env.free_grid[env.cell_of(env.start_position)] and env.free_grid[env.cell_of(env.goal_position)]
        assert math.isfinite(env.shortest_path_length)
    assert len(set(levels)) == 4
    env.close()


def test_astar_hand_checked_grid():
    free = np.ones((5, 5), dtype=bool)
    assert astar(free, (0, 0), (4, 4))[1] == pytest.approx(4 * math.sqrt(2))
    assert astar(free, (0, 0), (4, 2), res=0.5)[1] == pytest.approx(0.5 * (2 + 2 * math.sqrt(2)))
    free[2, 0:4] = False  # a wall at column i=2 with one opening at j=4
    # (0,0)->(1,4): 3 straight + 1 diagonal; (1,4)->(2,4)->(3,4): 2 straight (no corner cutting past the wall
    # end); (3,4)->(4,0): 1 diagonal + 3 straight.  8 + 2 sqrt(2) in all.
    path, length = astar(free, (0, 0), (4, 0))
    assert length == pytest.approx(8 + 2 * math.sqrt(2))
    assert (2, 4) in path and all(free[c] for c in path)
    assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1 for a, b in zip(path, path[1:]))
    assert distance_field(free, (4, 0))[0, 0] == pytest.approx(length)
    free[2, 4] = False
    assert astar(free, (0, 0), (4, 0)) == ([], math.inf)
    assert math.isinf(distance_field(free, (4, 0))[0, 0])


def test_distance_field_matches_astar_on_random_grids():
    rng = np.random.default_rng(0)
    for _ in range(3):
        free = rng.random((30, 30)) > 0.25
        free[0, 0] = True
        field = distance_field(free, (0, 0), 0.1)
        for goal in zip(*np.nonzero(free)[:2]):
            if rng.random() < 0.02:
                assert astar(free, (0, 0), goal, 0.1)[1] == pytest.approx(field[goal])


@pytest.mark.parametrize("action_type,episodes", [("discrete", 6), ("continuous", 4)])
def test_expert_solves_levels(action_type, episodes):
    result = run_expert(episodes=episodes, seed=0, action_type=action_type)
    assert result["success_rate"] == 1.0
    assert 0.8 < result["mean_spl"] <= 1.0


def _turn_towards(env: NavigationEnv, angle: float) -> None:
    """Turn in place (continuous actions) until the heading is ``angle``; no distance is driven."""
    for _ in range(40):
        err = (angle - env.yaw + math.pi) % (2 * math.pi) - math.pi
        if abs(err) < 1e-9:
            return
        env.step(np.array([0.0, np.clip(err / (env.max_angular_velocity * env.control_dt), -1, 1)], np.float32))


def test_spl_is_one_for_a_straight_unobstructed_path_and_less_for_a_detour():
    env = NavigationEnv(action_type="continuous", num_obstacles=0)
    env.reset(seed=5)
    dx, dy = env.goal_position - env.position
    _turn_towards(env, math.atan2(dy, dx))
    assert env.path_length < 1e-9
    terminated, steps = False, 0
    while not terminated:
        _, _, terminated, _, info = env.step(np.array([1.0, 0.0], np.float32))
        steps += 1
        assert steps < 200
    assert info["success"] and info["collisions"] == 0 and info["spl"] == 1.0

    env.reset(seed=5)
    for _ in range(15):  # a detour first, then straight to the goal
        env.step(np.array([1.0, 0.6], np.float32))
    terminated = False
    while not terminated:
        dx, dy = env.goal_position - env.position
        err = (math.atan2(dy, dx) - env.yaw + math.pi) % (2 * math.pi) - math.pi
        _, _, terminated, truncated, info = env.step(np.array([1.0, np.clip(3 * err, -1, 1)], np.float32))
    assert info["success"]
    assert info["spl"] == pytest.approx(info["shortest_path_length"] / max(info["path_length"],
                                                                          info["shortest_path_length"]))
    assert info["spl"] < 1.0
    env.close()


def test_collision_counted_penalised_and_terminates_when_asked():
    env = NavigationEnv(action_type="continuous", num_obstacles=0, terminate_on_collision=True)
    env.reset(seed=2)
    dx, dy = env.goal_position - env.position
    _turn_towards(env, math.atan2(dy, dx) + math.pi)  # face away from the goal, drive into a wall
    for _ in range(300):
        _, reward, terminated, _, info = env.step(np.array([1.0, 0.0], np.float32))
        if terminated:
            break
    assert terminated and info["collision"] and info["collisions"] == 1 and not info["success"]
    # moving away from the goal (progress <= 0), so the step cost and the penalty are both in the reward
    assert reward <= -env.collision_penalty - env.step_cost + 1e-9
    assert np.all(np.abs(env.position) <= env.arena_size / 2 - env.robot_radius + 1e-9)  # the wall stopped it
    env.close()


def test_robot_never_penetrates_and_rays_hit_the_modelled_geometry():
    env = NavigationEnv(action_type="continuous", num_obstacles=14, num_rays=24)
    obs, _ = env.reset(seed=4)
    env.action_space.seed(4)
    collided, half = 0, env.arena_size / 2
    for _ in range(150):
        action = np.array([1.0, env.np_random.uniform(-0.3, 0.3)], np.float32)
        obs, _, _, _, info = env.step(action)
        collided += info["collision"]
        assert point_clearance(*env.position, env.obstacles, half) >= env.robot_radius - 1e-9
        # Bullet's rays stop on the surfaces of the obstacles the kinematic footprint test uses
        angles = env.yaw + env._ray_offsets
        r0 = env.robot_radius + 0.01
        for frac, a in zip(obs[3 : 3 + env.num_rays], angles):
            if frac < 1.0:
                d = r0 + float(frac) * (env.ray_length - r0)
                hit = env.position + d * np.array([math.cos(a), math.sin(a)])
                assert abs(point_clearance(*hit, env.obstacles, half)) < 2e-3
    assert collided > 0  # the drive did test the collision handling
    env.close()


def test_close_twice_and_render():
    env = NavigationEnv(obs_type="rgb", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 3) and obs.dtype == np.uint8 and obs.std() > 0
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.std() > 0
    env.close()
    env.close()


def test_make_vec_env():
    envs = make_vec_env("rlkit/Navigation-v0", 2, seed=0)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 21)
    for _ in range(5):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert obs.shape == (2, 21) and reward.shape == (2,) and "spl" in info
    envs.close()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"obs_type": "depth"}, "state, rgb"),
        ({"action_type": "torque"}, "discrete, continuous"),
        ({"renderer": "opengl"}, "tiny, egl"),
        ({"num_obstacles": -1}, "num_obstacles"),
        ({"min_goal_distance": 50.0}, "min_goal_distance"),
    ],
)
def test_bad_kwargs_raise_rlkit_error(kwargs, needle):
    with pytest.raises(RLKitError, match=needle):
        NavigationEnv(**kwargs)


def test_painted_floor_matches_a_rendered_floor():
    env = NavigationEnv(obs_type="rgb")
    env.reset(seed=0)
    for _ in range(5):
        painted = env.step(1)[0]
        env._p.resetBasePositionAndOrientation(env._floor, [0.0, 0.0, -0.01], [0, 0, 0, 1])
        rendered = env._ego_image()
        env._p.resetBasePositionAndOrientation(env._floor, [0.0, 0.0, -1000.0], [0, 0, 0, 1])
        same = np.all(painted == rendered, axis=-1).mean()
        assert same > 0.99, same
    env.close()
