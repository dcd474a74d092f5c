"""What the rlkit-vs-SB3 benchmark scripts share: each library trains in a child process of the script
(``--only NAME``), which prints one JSON line after ``MARKER``; the parent alternates the children
``repeats`` times and reports the median-speed run of each and every pair's ratio.

Imported by ``bench_dqn.py`` and ``bench_ppo.py`` (Python puts the script's folder on ``sys.path``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

MARKER = "BENCH_RESULT "


def print_result(result: dict[str, Any]) -> None:
    """The child's side: hand one measurement back to the parent."""
    print(MARKER + json.dumps(result), flush=True)


def run_child(script: str, which: str, child_args: list[str], verbose: bool = False) -> dict[str, Any]:
    """Run ``script --only which child_args...`` in a fresh interpreter and return the JSON it printed;
    its output is shown when ``verbose`` or when it fails."""
    print(f"[{which}] running ...", flush=True)
    started = time.time()
    proc = subprocess.run([sys.executable, script, "--only", which, *child_args], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if verbose or proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark child --only {which} failed (exit {proc.returncode})")
    print(f"[{which}] done in {time.time() - started:.0f}s", flush=True)
    return json.loads(lines[-1][len(MARKER):])


def alternate(names: list[str], repeats: int, run: Callable[[str], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``run`` every child in turn, ``repeats`` rounds (a, b, a, b, ...), so that a drift of the machine's
    speed reaches every child alike: name -> its results in order."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append(run(name))
    return runs


def median_runs(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """name -> its run with the median env steps/s (the upper one of an even count)."""
    return {name: sorted(results, key=lambda r: r["sps"])[len(results) // 2] for name, results in runs.items()}


def pair_ratios(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> tuple[str, float]:
    """Every pair's steps/s ratio, as 'a/b = r x; ...', and the median ratio."""
    ratios = [a["sps"] / b["sps"] for a, b in zip(first, second)]
    pairs = "; ".join(f"{a['sps']:.1f}/{b['sps']:.1f} = {r:.2f}x" for a, b, r in zip(first, second, ratios))
    return pairs, statistics.median(ratios)
