"""Which points does a Pong agent concede? Plays full greedy games of ALE/Pong-v5 (evaluation settings) with a
trained rlkit agent and reads the console RAM after every agent step (AtariARI indices, DESIGN.md section 6).

For each conceded point it prints how many times the agent had returned the ball since the previous point
(0: the agent missed the serve's first approach), the agent steps since that point, and the last positions of
ball and paddle before the ball left the court. The summary counts misses on the first approach and misses
with the paddle held at the top wall.

    python scripts/pong_points.py RUN_DIR [--games 10] [--seed 123] [--checkpoint best|last|STEP]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

PLAYER_Y, BALL_X, BALL_Y = 51, 49, 54
TOP_WALL_Y = 38  # the paddle's smallest player_y value in Pong's RAM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--seed", type=int, default=123, help="seed of the evaluation games")
    parser.add_argument("--checkpoint", default="best", help="best | last | STEP")
    return parser.parse_args(argv)


def play(args: argparse.Namespace) -> tuple[list[float], list[dict]]:
    """Game returns and one record per conceded point."""
    import rlkit.agents  # noqa: F401  (registers the agents)
    from rlkit.cli import load_agent
    from rlkit.envs import make_vec_env

    agent, _, path, _ = load_agent(args.target, args.checkpoint, env_id="ALE/Pong-v5")
    print(f"checkpoint {path}")
    envs = make_vec_env("ALE/Pong-v5", num_envs=1, seed=args.seed, mode="eval", env_kwargs={"backend": "in_process"})
    ale = envs.unwrapped.ale_env.ales[0]
    obs, _ = envs.reset(seed=args.seed)
    returns: list[float] = []
    conceded: list[dict] = []
    trail: list[tuple[int, int, int]] = []
    returns_since_point = 0
    while len(returns) < args.games:
        obs, reward, terminated, truncated, info = envs.step(agent.act(obs, deterministic=True))
        ram = ale.getRAM()
        position = (int(ram[BALL_X]), int(ram[BALL_Y]), int(ram[PLAYER_Y]))
        if len(trail) >= 2 and trail[-2][0] < trail[-1][0] > position[0] > 0:
            returns_since_point += 1  # the ball turned back from the agent's (right) side
        trail.append(position)
        if reward[0] < 0:
            near = [p for p in trail if p[0] >= 190 and p[1] > 0] or trail
            _, ball_y, paddle_y = near[-1]
            conceded.append({"game": len(returns), "agent_returns": returns_since_point, "steps": len(trail),
                             "ball_y": ball_y, "paddle_y": paddle_y, "paddle_at_top": paddle_y <= TOP_WALL_Y})
        if reward[0] != 0:
            trail, returns_since_point = [], 0
        if terminated[0] or truncated[0]:
            returns.append(float(info["episode"]["r"][0]))
    envs.close()
    return returns, conceded


def main(argv: list[str] | None = None) -> int:
    from rlkit.errors import RLKitError

    args = parse_args(argv)
    try:
        returns, conceded = play(args)
    except RLKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"returns {returns}: mean {np.mean(returns):.1f}, conceded {len(conceded)} points in {len(returns)} games")
    for point in conceded:
        print("  " + " ".join(f"{k}={v}" for k, v in point.items()))
    first = sum(p["agent_returns"] == 0 for p in conceded)
    top = sum(p["paddle_at_top"] for p in conceded)
    total = max(len(conceded), 1)
    print(f"missed on the first approach after a point: {first} of {len(conceded)} ({first / total:.0%}); "
          f"paddle at the top wall: {top} ({top / total:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
