"""Ground-truth labels of the PyBullet sims in frame datasets: collect writes the simulator state, quantised."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlkit.vision.data import FrameDataset, read_manifest
from rlkit.vision.labels import (
    DRIVING_BINS,
    NAVIGATION_BINS,
    quantise_angle,
    quantise_linear,
    quantise_signed,
)


def test_quantisers_reference_values():
    assert [quantise_angle(a) for a in (0.0, math.pi / 2, -math.pi / 2, math.pi, -math.pi)] == [128, 192, 64, 0, 0]
    assert quantise_angle(2 * math.pi / 256) == 129 and quantise_angle(-2 * math.pi / 256) == 127
    assert [quantise_signed(x, 2.0) for x in (0.0, 2.0, -2.0, 1.0, -1.0, 9.0, -9.0)] == [128, 255, 1, 192, 64, 255, 0]
    assert [quantise_linear(x, 4.0) for x in (0.0, 4.0, 2.0, -1.0, 10.0, math.inf)] == [0, 255, 128, 0, 255, 255]


def _collected(tmp_path, env_id: str, steps: int, episode_steps: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    from rlkit.vision.collect import collect

    out = tmp_path / env_id.split("/")[1]
    collect(env_id, steps, out, seed=5, chunk_size=32, episode_steps=episode_steps, print_fn=lambda s: None)
    data = FrameDataset(out, None)
    rows = np.arange(steps)
    return read_manifest(out), {key: data.get_batch(rows, key) for key in ("episode", "action", "labels", "obs")}


def _replay(env_id: str, arrays: dict[str, np.ndarray], expected_fn) -> np.ndarray:
    """Re-simulate the collection (same seed, recorded actions); ``expected_fn(sim)`` reads the state back."""
    from rlkit.vision.collect import _frame, make_collect_env

    env, _, reset = make_collect_env(env_id)
    expected = []
    obs, _ = reset(env, 5)
    try:
        for i in range(len(arrays["action"])):
            if i > 0 and arrays["episode"][i] != arrays["episode"][i - 1]:
                obs, _ = reset(env)
            np.testing.assert_array_equal(arrays["obs"][i], _frame(env, obs), err_msg=f"frame {i}")
            expected.append(expected_fn(env.unwrapped))
            obs, *_ = env.step(int(arrays["action"][i]))
    finally:
        env.close()
    return np.array(expected, dtype=np.int64)


def _ray_range(client, start: list[float], angle: float, length: float) -> float:
    end = [start[0] + length * math.cos(angle), start[1] + length * math.sin(angle), start[2]]
    hit = client.rayTest(start, end)[0]
    return length * (hit[2] if hit[0] >= 0 else 1.0)


def test_navigation_labels_match_simulator_state(tmp_path):
    from rlkit.envs.navigation import ROBOT_HEIGHT
    from rlkit.envs.navigation_planning import signed_distance

    manifest, arrays = _collected(tmp_path, "rlkit/NavigationRGB-v0", 90, episode_steps=30)
    assert manifest["labels"] == list(NAVIGATION_BINS) and manifest["label_source"] == "navigation-sim"
    assert manifest["label_info"]["bins"] == NAVIGATION_BINS

    def expected(sim) -> list[int]:
        x, y = sim.position
        gx, gy = sim.goal_position
        diagonal, length = sim.arena_size * math.sqrt(2), sim.ray_length
        distance = math.hypot(gx - x, gy - y)
        bearing = math.atan2(gy - y, gx - x) - sim.yaw
        bearing = math.atan2(math.sin(bearing), math.cos(bearing))
        clearance = float(signed_distance(np.array([[x, y]]), sim.obstacles, sim.arena_size / 2)[0])
        start = [x, y, ROBOT_HEIGHT / 2]
        rays = [_ray_range(sim._p, start, sim.yaw + a, length) for a in (0.0, math.pi / 4, -math.pi / 4)]
        return [
            min(255, round(255 * distance / diagonal)),
            min(255, round(255 * sim._progress_distance(sim.position) / diagonal)),  # the geodesic reward distance
            round(256 * (bearing + math.pi) / (2 * math.pi)) % 256,
            min(255, max(0, round(255 * (clearance - sim.robot_radius) / length))),
            *[min(255, round(255 * r / length)) for r in rays],
        ]

    truth = _replay("rlkit/NavigationRGB-v0", arrays, expected)
    # rounding conventions (half up vs half to even) may differ by one unit exactly at a bin edge
    np.testing.assert_allclose(arrays["labels"], truth, atol=1, rtol=0)
    assert (arrays["labels"] == truth).mean() > 0.99
    assert all(len(np.unique(arrays["labels"][:, k])) > 3 for k in range(len(NAVIGATION_BINS)))


def test_driving_labels_match_simulator_state(tmp_path):
    from rlkit.envs.driving import _CAR_CENTRE, _RAY_HEIGHT, _RAY_START

    manifest, arrays = _collected(tmp_path, "rlkit/Driving-v0", 90, episode_steps=None)
    assert manifest["labels"] == list(DRIVING_BINS) and manifest["label_source"] == "driving-sim"
    assert len(np.unique(arrays["episode"])) >= 2  # random steering leaves the road: several episodes

    def expected(sim) -> list[int]:
        c = sim._client
        pos, orn = c.getBasePositionAndOrientation(sim._car)
        vel, _ = c.getBaseVelocity(sim._car)
        yaw = c.getEulerFromQuaternion(orn)[2]
        heading = np.array([math.cos(yaw), math.sin(yaw)])
        xy = np.array(pos[:2]) + _CAR_CENTRE * heading
        track = sim.track
        i = int(np.argmin(np.sum((track.points - xy) ** 2, axis=1)))  # nearest centreline sample, full search
        offset = float((xy - track.points[i]) @ track.normals[i])
        s = track.s[i] + float((xy - track.points[i]) @ track.tangents[i])
        def sample(arc: float) -> int:  # the centreline sample at arc length ``arc``
            return int(round(arc % track.length / track.spacing)) % len(track.points)

        tangent = track.tangents[sample(s)]
        error = yaw - math.atan2(tangent[1], tangent[0])
        error = math.atan2(math.sin(error), math.cos(error))
        ahead = track.curvature[sample(s + 2.0)]
        start = [*(xy + _RAY_START * heading), _RAY_HEIGHT]
        obstacle = _RAY_START + _ray_range(c, start, yaw, sim.ray_length)
        half = track.width / 2 + sim.off_track_margin

        def signed(v: float, hi: float) -> int:  # halves away from zero: steering commands of +-0.5 give 128 +- 64
            units = 127 * v / hi
            return min(255, max(0, 128 + int(np.sign(units) * np.floor(abs(units) + 0.5))))

        return [
            signed(offset, half),
            round(256 * (error + math.pi) / (2 * math.pi)) % 256,
            signed(float(heading @ np.array(vel[:2])), sim.max_speed),
            signed(sim._steer, sim.max_steer),
            signed(float(ahead), 1 / sim.track_kwargs["min_turn_radius"]),
            min(255, round(255 * obstacle / (_RAY_START + sim.ray_length))),
        ]

    truth = _replay("rlkit/Driving-v0", arrays, expected)
    np.testing.assert_allclose(arrays["labels"], truth, atol=1, rtol=0)
    assert (arrays["labels"] == truth).mean() > 0.99
    for k in range(5):  # every label but obstacle_range (no obstacles by default) varies
        assert len(np.unique(arrays["labels"][:, k])) > 3, list(DRIVING_BINS)[k]
    assert (arrays["labels"][:, 5] == 255).all()


def test_ground_truth_before_reset_is_one_line_error():
    import gymnasium as gym

    from rlkit.errors import RLKitError

    for env_id in ("rlkit/Navigation-v0", "rlkit/Driving-v0"):
        env = gym.make(env_id)
        try:
            with pytest.raises(RLKitError, match="reset"):
                env.unwrapped.ground_truth()
        finally:
            env.close()
