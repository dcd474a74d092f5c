"""Time one DQN gradient step (batch 32, 84x84x4 uint8, double DQN targets) per encoder on this machine.

This is the measurement behind the CPU preset's choice of encoder. Usage:

    python scripts/bench_train_step.py [--threads N] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import rlkit
from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.replay import FrameReplayBuffer


def time_train_step(encoder: str, repeats: int, batch_size: int) -> tuple[float, int]:
    """Mean seconds per ``DQN.train_step`` and the parameter count, on a buffer of random frames."""
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    config = DQNConfig(env_id="ALE/Pong-v5", encoder=encoder, dueling=True, double_dqn=True, batch_size=batch_size)
    agent = DQN(config, space, gym.spaces.Discrete(6))
    buffer = FrameReplayBuffer(4_000, 1, space.shape, np.uint8, n_step=3)
    rng = np.random.default_rng(0)
    buffer.start(rng.integers(0, 255, (1, 4, 84, 84), dtype=np.uint8))
    for _ in range(3_000):
        frame = rng.integers(0, 255, (1, 4, 84, 84), dtype=np.uint8)
        buffer.add(np.zeros(1, np.int64), np.ones(1, np.float32), np.zeros(1, bool), np.zeros(1, bool), frame)
    for _ in range(5):
        agent.train_step(buffer)
    start = time.perf_counter()
    for _ in range(repeats):
        agent.train_step(buffer)
    params = sum(p.numel() for p in agent.q_net.parameters())
    return (time.perf_counter() - start) / repeats, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rlkit.load_plugins()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    results = {}
    for encoder in ("nature_cnn", "nature_cnn_small"):
        seconds, params = time_train_step(encoder, args.repeats, args.batch_size)
        results[encoder] = seconds
        print(f"{encoder:18s} {params:>10,d} params  train step {seconds * 1000:7.2f} ms")
    print(f"nature_cnn / nature_cnn_small: {results['nature_cnn'] / results['nature_cnn_small']:.2f}x")


if __name__ == "__main__":
    main()
