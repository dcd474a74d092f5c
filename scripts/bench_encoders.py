"""Time one DQN gradient step (batch 32, 4x84x84 uint8, double DQN, dueling) per image encoder: fine-tuned,
frozen (head only), and with random-shift augmentation. Also prints parameters and forward FLOPs.

The machine may be shared, so timings are approximate (median of the repeats). Usage:

    python scripts/bench_encoders.py [--threads N] [--seconds 8] [--encoders impala,vit]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import rlkit
from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.replay import FrameReplayBuffer
from rlkit.registry import ENCODERS
from rlkit.vision.encoders import forward_flops, make_encoder

SPACE = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def random_buffer() -> FrameReplayBuffer:
    buffer = FrameReplayBuffer(4_000, 1, SPACE.shape, np.uint8, n_step=3)
    rng = np.random.default_rng(0)
    buffer.start(rng.integers(0, 255, (1, *SPACE.shape), dtype=np.uint8))
    for _ in range(3_000):
        frame = rng.integers(0, 255, (1, *SPACE.shape), dtype=np.uint8)
        buffer.add(np.zeros(1, np.int64), np.ones(1, np.float32), np.zeros(1, bool), np.zeros(1, bool), frame)
    return buffer


def time_train_step(buffer: FrameReplayBuffer, encoder: str, batch_size: int, seconds: float, **options) -> float:
    """Median seconds per ``DQN.train_step`` over about ``seconds`` of repeats (at least 3)."""
    config = DQNConfig(env_id="ALE/Pong-v5", encoder=encoder, dueling=True, batch_size=batch_size, device="cpu",
                       **options)
    agent = DQN(config, SPACE, gym.spaces.Discrete(6))
    agent.train_step(buffer)
    times: list[float] = []
    budget_end = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < budget_end and len(times) < 100):
        start = time.perf_counter()
        agent.train_step(buffer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time spent per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoders", help="comma-separated names (default: every image encoder)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rlkit.load_plugins()
    names = args.encoders.split(",") if args.encoders else [
        name for name, cls in ENCODERS.items() if getattr(cls, "example_input", "image") == "image"
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, DQN batch {args.batch_size}, "
          "input 4x84x84 uint8; median ms per train step")
    print(f"{'encoder':18s} {'params':>10s} {'MFLOPs':>8s} {'train ms':>9s} {'frozen ms':>10s} {'+shift ms':>10s}")
    buffer = random_buffer()
    for name in names:
        encoder = make_encoder(name, SPACE)
        params = sum(p.numel() for p in encoder.parameters())
        flops = forward_flops(encoder, torch.as_tensor(SPACE.sample()[None])) / 1e6
        full = time_train_step(buffer, name, args.batch_size, args.seconds)
        frozen = time_train_step(buffer, name, args.batch_size, args.seconds, freeze_encoder=True)
        shifted = time_train_step(buffer, name, args.batch_size, args.seconds, augment="shift")
        print(f"{name:18s} {params:>10,d} {flops:8.1f} {full * 1e3:9.1f} {frozen * 1e3:10.1f} {shifted * 1e3:10.1f}",
              flush=True)


if __name__ == "__main__":
    main()
