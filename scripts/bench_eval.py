"""Evaluation speed: rlkit's vectorised evaluation vs SB3's ``evaluate_policy``, same model, same episodes.

Both sides play 10 full Pong games (ALE/Pong-v5: sticky actions 0.25, no reward clipping, no life-loss
episodes) with the *same* greedy NatureCNN Q-network: rlkit's DQN agent (a trained checkpoint with
``--checkpoint``, else a freshly initialised one) and an SB3 ``DQN("CnnPolicy")`` whose weights are copied
from it (a dueling head replaces SB3's linear head), so both policies are identical and play games of
similar length. A random network loses every game 0-21 in about 760 agent steps, so building and seeding the
envs weighs more than with a trained agent, whose games last thousands of steps.

- rlkit: ``rlkit.evaluation.evaluate`` on ale-py's C++ vector env, 10 envs (one episode each), played as
  one group of envs per core, each group in its own thread (the default), and as one group (``workers=1``).
- SB3: ``evaluate_policy(model, env, n_eval_episodes=10, deterministic=True)`` on the standard SB3 Atari
  pipeline (``make_atari_env`` with ``clip_reward=False, terminal_on_life_loss=False`` + ``VecFrameStack(4)``),
  once with 1 env (the usual call) and once with 10 envs (``DummyVecEnv``).

Each measurement runs in its own process, with the OpenMP default (torch's threads busy-wait between
parallel regions) and once with ``OMP_WAIT_POLICY=PASSIVE`` on each side: on an idle machine the default is
as fast or faster; beside other jobs PASSIVE avoids starving ALE's threads and the other processes.

Printed: wall time, agent steps (4 emulator frames each; SB3's Monitor counts frames, converted here),
agent steps/s, and the speed ratio of steps/s (so episode-length differences cancel).

    python scripts/bench_eval.py [--checkpoint runs/RUN/checkpoints/best.safetensors] [--episodes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import torch

FRAME_SKIP = 4


def build_rlkit_agent(checkpoint: str | None, seed: int):
    import rlkit
    from rlkit.agents.dqn import DQN, DQNConfig
    from rlkit.checkpoint import load_checkpoint
    from rlkit.config import build_config

    rlkit.load_plugins()
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    if checkpoint:
        tensors, meta = load_checkpoint(checkpoint)
        config = build_config(DQNConfig, {**meta["config"], "device": "cpu"})
        if config.encoder != "nature_cnn":
            raise SystemExit("--checkpoint must be a nature_cnn DQN (SB3's CnnPolicy encoder)")
        agent = DQN(config, space, gym.spaces.Discrete(meta["n_actions"]))
        agent.load_state_dict(tensors, meta)
    else:
        config = DQNConfig(env_id="ALE/Pong-v5", encoder="nature_cnn", seed=seed, device="cpu")
        agent = DQN(config, space, gym.spaces.Discrete(6))
    return agent


class DuelingHead(torch.nn.Module):
    """Q = V + A - mean(A) over the 512 features: rlkit's dueling head, swapped into SB3's ``q_net.q_net`` so
    a dueling checkpoint runs unchanged under SB3's ``evaluate_policy`` (same model, same arithmetic)."""

    def __init__(self, features: int, n_actions: int) -> None:
        super().__init__()
        self.advantage = torch.nn.Linear(features, n_actions)
        self.value = torch.nn.Linear(features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantages = self.advantage(features)
        return self.value(features) + advantages - advantages.mean(dim=1, keepdim=True)


def copy_into_sb3(agent, model) -> None:
    """rlkit NatureCNN Q-network -> SB3 CnnPolicy q_net (the layers match one to one; a dueling head replaces
    SB3's linear head)."""
    ours = agent.q_net.state_dict()
    if agent.config.dueling:
        for q_net in (model.policy.q_net, model.policy.q_net_target):
            q_net.q_net = DuelingHead(ours["head.weight"].shape[1], ours["head.weight"].shape[0])
        ours = dict(ours)
        ours.update({"advantage.weight": ours["head.weight"], "advantage.bias": ours["head.bias"]})
    params = ("weight", "bias")
    mapping = {f"features_extractor.cnn.{i}.{p}": f"encoder.convs.{i}.{p}" for i in (0, 2, 4) for p in params}
    mapping.update({f"features_extractor.linear.0.{p}": f"encoder.head.0.{p}" for p in ("weight", "bias")})
    if agent.config.dueling:
        mapping.update({f"q_net.{layer}.{p}": f"{layer}.{p}" for layer in ("advantage", "value") for p in params})
    else:
        mapping.update({f"q_net.0.{p}": f"head.{p}" for p in params})
    state = {k: ours[v].contiguous() for k, v in mapping.items()}
    model.policy.q_net.load_state_dict(state)
    model.policy.q_net_target.load_state_dict(state)


def bench_rlkit(agent, episodes: int, seed: int, workers: int | None = None) -> dict:
    from rlkit.evaluation import AgentActor, evaluate

    start = time.perf_counter()
    result = evaluate(
        AgentActor(agent, epsilon=0.0), "ALE/Pong-v5", episodes, seed=seed, num_envs=episodes, workers=workers
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": int(sum(result.lengths)), "mean": result.mean}


def bench_sb3(agent, episodes: int, seed: int, n_envs: int) -> dict:
    import ale_py
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)

    def make_env():
        env = make_atari_env(
            "ALE/Pong-v5",
            n_envs=n_envs,
            seed=seed,
            env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25},
            wrapper_kwargs={"clip_reward": False, "terminal_on_life_loss": False},
        )
        return VecFrameStack(env, n_stack=4)

    spaces_env = make_env()
    model = DQN("CnnPolicy", spaces_env, buffer_size=1, learning_starts=0, device="cpu", seed=seed)
    spaces_env.close()
    copy_into_sb3(agent, model)
    check_same_q_values(agent, model, seed)
    start = time.perf_counter()  # like rlkit's evaluate(), the timing includes building the envs
    env = make_env()
    rewards, lengths = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
    )
    seconds = time.perf_counter() - start
    env.close()
    # SB3's Monitor sits under AtariWrapper's frame skip, so its lengths are emulator frames: 4 per agent step.
    return {"seconds": seconds, "steps": int(round(sum(lengths) / FRAME_SKIP)), "mean": float(np.mean(rewards))}


def check_same_q_values(agent, model, seed: int) -> None:
    """Both libraries' networks give the same Q-values on a random uint8 batch (else the comparison is off)."""
    obs = np.random.default_rng(seed).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    with torch.no_grad():
        theirs = model.policy.q_net(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(theirs, agent.q_values(obs), rtol=1e-4, atol=1e-5)


MEASUREMENTS = {
    # name: (side, envs, OMP_WAIT_POLICY or None for the OpenMP default)
    "rlkit evaluate, 10 envs": ("rlkit", 10, None),
    "rlkit evaluate, 10 envs, PASSIVE": ("rlkit", 10, "PASSIVE"),
    "rlkit evaluate, 10 envs, one group": ("rlkit-1group", 10, None),
    "SB3 evaluate_policy, 1 env": ("sb3", 1, None),
    "SB3 evaluate_policy, 1 env, PASSIVE": ("sb3", 1, "PASSIVE"),
    "SB3 evaluate_policy, 10 envs": ("sb3", 10, None),
}


def measure(side: str, envs: int, args: argparse.Namespace) -> dict:
    """One measurement in this process (the child side of ``main``)."""
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    agent = build_rlkit_agent(args.checkpoint, args.seed)
    if side.startswith("rlkit"):
        return bench_rlkit(agent, args.episodes, args.seed, workers=1 if side == "rlkit-1group" else None)
    return bench_sb3(agent, args.episodes, args.seed, envs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a nature_cnn rlkit DQN checkpoint (default: random init)")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "side:envs": run one measurement, print JSON
    args = parser.parse_args()
    if args.child:
        side, envs = args.child.split(":")
        print(json.dumps(measure(side, int(envs), args)))
        return
    print(f"{args.episodes} full ALE/Pong-v5 games, greedy NatureCNN DQN "
          f"({'checkpoint ' + args.checkpoint if args.checkpoint else 'random init'}), "
          f"{args.threads or os.cpu_count()} torch threads, load average {os.getloadavg()[0]:.2f}")
    rows = []
    for name, (side, envs, wait_policy) in MEASUREMENTS.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if wait_policy:
            env["OMP_WAIT_POLICY"] = wait_policy
        command = [sys.executable, __file__, "--child", f"{side}:{envs}", "--episodes", str(args.episodes),
                   "--seed", str(args.seed), "--threads", str(args.threads)]
        if args.checkpoint:
            command += ["--checkpoint", args.checkpoint]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        rows.append((name, json.loads(out.strip().splitlines()[-1])))
    print(f"{'':40s} {'wall s':>8s} {'steps':>8s} {'steps/s':>9s} {'mean return':>12s}")
    for name, r in rows:
        print(f"{name:40s} {r['seconds']:8.1f} {r['steps']:8d} {r['steps'] / r['seconds']:9.0f} {r['mean']:12.2f}")
    ours = rows[0][1]["steps"] / rows[0][1]["seconds"]
    for name, r in rows[3:]:  # rows 0-2 are rlkit
        print(f"rlkit / {name}: {ours / (r['steps'] / r['seconds']):.2f}x steps/s (target >= 3x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
