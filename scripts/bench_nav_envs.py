"""Env steps/s on one process with random actions: the navigation env (state, rgb) and reference envs.

    OMP_NUM_THREADS=1 python scripts/bench_nav_envs.py [--seconds 5] [--seed 0]

Each row times ``step`` (and the resets of episodes that end) for up to ``--seconds`` after a short warm-up.
Rows for highway-env appear when ``highway_env`` is installed. The 1-minute load average is printed before and
after, since other jobs on a shared machine slow the figures down.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import gymnasium as gym

import rlkit.envs  # noqa: F401  (registers rlkit/*)

ROWS: list[tuple[str, dict[str, Any]]] = [
    ("rlkit/Navigation-v0", {}),
    ("rlkit/Navigation-v0", {"action_type": "continuous"}),
    ("rlkit/NavigationRGB-v0", {}),
    ("rlkit/NavigationRGB-v0", {"action_type": "continuous"}),
    ("CartPole-v1", {}),
]


def bench(env_id: str, kwargs: dict[str, Any], seconds: float, seed: int) -> tuple[float, int, int]:
    """(steps/s, steps, episodes ended) for random actions."""
    env = gym.make(env_id, **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(20):  # warm-up
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    steps = episodes = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                env.reset()
                episodes += 1
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed, steps, episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = list(ROWS)
    try:
        import highway_env

        gym.register_envs(highway_env)
        rows += [("highway-fast-v0", {}), ("highway-v0", {})]
    except ImportError:
        print("highway-env not installed: no highway-env reference row (pip install highway-env)")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    print(f"{'env':<26} {'kwargs':<28} {'steps/s':>9} {'ms/step':>8} {'steps':>7} {'episodes':>8}")
    for env_id, kwargs in rows:
        sps, steps, episodes = bench(env_id, kwargs, args.seconds, args.seed)
        kw = ",".join(f"{k}={v}" for k, v in kwargs.items()) or "-"
        print(f"{env_id:<26} {kw:<28} {sps:>9.0f} {1000 / sps:>8.3f} {steps:>7} {episodes:>8}", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
