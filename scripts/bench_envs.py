"""Env stepping speed on one process: random actions, ``--steps`` steps after ``--warmup`` steps, resets included.

Rows are (name, factory) entries in ``ENTRIES`` (our envs: driving and navigation, each with its target steps/s)
and ``REFERENCES`` (other simulators for scale); add a row by appending an entry. References: highway-env's
``highway-fast-v0`` when it is installed (``pip install highway-env``), else CartPole-v1; and a raw PyBullet loop
(racecar.urdf on a plane, same physics settings as rlkit/Driving-v0: 4 substeps of 1/120 s per step, no rays, no
camera) as the floor of what the driving env can reach. The machine, its CPU count and the 1-minute load average
(before and after) are printed: other jobs on a shared machine slow the figures down.

    OMP_NUM_THREADS=1 python scripts/bench_envs.py [--steps 3000] [--warmup 200] [--only navigation]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import rlkit.envs  # noqa: F401  (registers rlkit/* ids)

Factory = Callable[[], gym.Env]

# (name, factory, target steps/s or None)
ENTRIES: list[tuple[str, Factory, float | None]] = [
    ("rlkit/Driving-v0 (state, 9 rays)", lambda: gym.make("rlkit/Driving-v0"), 500.0),
    ("rlkit/Driving-v0 (state, 5 obstacles)", lambda: gym.make("rlkit/Driving-v0", num_obstacles=5), 500.0),
    ("rlkit/DrivingRGB-v0 (3x84x84)", lambda: gym.make("rlkit/DrivingRGB-v0"), 200.0),
    ("rlkit/DrivingRGB-v0 (gray, stack 4)", lambda: gym.make("rlkit/DrivingRGB-v0", grayscale=True, frame_stack=4),
     200.0),
    ("rlkit/Navigation-v0 (state, 16 rays)", lambda: gym.make("rlkit/Navigation-v0"), 1000.0),
    ("rlkit/Navigation-v0 (state, continuous)",
     lambda: gym.make("rlkit/Navigation-v0", action_type="continuous"), 1000.0),
    ("rlkit/NavigationRGB-v0 (3x84x84)", lambda: gym.make("rlkit/NavigationRGB-v0"), 300.0),
    ("rlkit/NavigationRGB-v0 (continuous)",
     lambda: gym.make("rlkit/NavigationRGB-v0", action_type="continuous"), 300.0),
]


class RawRacecar(gym.Env):
    """Reference floor: racecar.urdf on a plane in its own DIRECT client, 4 x 1/120 s substeps per step."""

    def __init__(self) -> None:
        import pybullet as p
        import pybullet_data
        from pybullet_utils import bullet_client

        self.p = p
        self.client = bullet_client.BulletClient(connection_mode=p.DIRECT)
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        c = self.client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=1 / 120, numSolverIterations=10)
        c.loadURDF("plane.urdf")
        self.car = c.loadURDF("racecar/racecar.urdf", [0, 0, 0.05])
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        c, p = self.client, self.p
        for j in (4, 6):
            c.setJointMotorControl2(self.car, j, p.POSITION_CONTROL, targetPosition=0.5 * float(action[0]), force=10)
        for j in (2, 3):
            c.setJointMotorControl2(self.car, j, p.VELOCITY_CONTROL, targetVelocity=60 * float(action[1]), force=10)
        for _ in range(4):
            c.stepSimulation()
        pos, _ = c.getBasePositionAndOrientation(self.car)
        self.t += 1
        return np.asarray(pos, np.float32), 0.0, False, self.t >= 1000, {}

    def close(self) -> None:
        self.client.disconnect()


def _reference_entries() -> list[tuple[str, Factory, float | None]]:
    rows: list[tuple[str, Factory, float | None]] = []
    try:
        import highway_env

        gym.register_envs(highway_env)
        rows.append(("highway-env highway-fast-v0 (kinematics)", lambda: gym.make("highway-fast-v0"), None))
    except ImportError:
        rows.append(("CartPole-v1 (highway-env not installed)", lambda: gym.make("CartPole-v1"), None))
    rows.append(("raw PyBullet racecar on plane (4 substeps)", RawRacecar, None))
    return rows


REFERENCES = _reference_entries()


def bench(factory: Factory, steps: int, warmup: int, seed: int = 0) -> tuple[float, str, int]:
    """(steps/s, observation shape, episodes started) for random actions."""
    env = factory()
    env.action_space.seed(seed)
    env.reset(seed=seed)
    episodes = 0
    try:
        for phase_steps in (warmup, steps):
            episodes = 1
            start = time.perf_counter()
            for _ in range(phase_steps):
                obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    env.reset()
                    episodes += 1
            elapsed = time.perf_counter() - start
    finally:
        env.close()
    return steps / elapsed, str(tuple(np.shape(obs))), episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--only", default="", help="run rows whose name contains this string")
    args = parser.parse_args()
    rows = [r for r in ENTRIES + REFERENCES if args.only.lower() in r[0].lower()]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'env':<46} {'obs shape':>14} {'episodes':>8} {'steps/s':>9} {'target':>7}")
    for name, factory, target in rows:
        sps, shape, episodes = bench(factory, args.steps, args.warmup)
        verdict = "" if target is None else ("ok" if sps >= target else "MISS")
        target_text = "" if target is None else f"{target:.0f}"
        print(f"{name:<46} {shape:>14} {episodes:>8} {sps:>9.0f} {target_text:>7} {verdict}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
