"""Time the prioritized-replay sum tree at replay size: what one DQN update asks of it.

Usage: python scripts/bench_sum_tree.py [--leaves N] [--batch B] [--repeats R]
Prints the milliseconds per call of ``find`` (B prefix sums) and ``update`` (B leaves, the running count of
positive leaves included), next to a full scan of the leaves (how ``sample`` counted them before session 22),
each the median of R repeats.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from rlkit.agents.replay import SumTree


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call`` in milliseconds over ``repeats`` calls (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tree = SumTree(args.leaves)
    tree.update(np.arange(args.leaves), rng.uniform(0.1, 2.0, args.leaves))
    prefix = rng.uniform(0, tree.total, args.batch)
    indices = rng.integers(0, args.leaves, args.batch)
    values = rng.uniform(0.1, 2.0, args.batch)
    rows = {
        f"find ({args.batch} prefix sums)": lambda: tree.find(prefix),
        f"update ({args.batch} leaves, running count)": lambda: tree.update(indices, values),
        "positive-leaf count by full scan (before)": lambda: int((tree.tree[tree.leaves :] > 0).sum()),
    }
    print(f"sum tree with {args.leaves:,} leaves, median of {args.repeats} calls")
    for name, call in rows.items():
        print(f"  {name:<45} {median_ms(call, args.repeats):8.3f} ms")


if __name__ == "__main__":
    main()
