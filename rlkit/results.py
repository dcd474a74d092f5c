"""Reading finished runs and groups of runs: final scores, evaluation curves, comparison tables."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlkit.errors import RLKitError
from rlkit.run import read_run_config
from rlkit.stats import human_normalized, iqm, stratified_bootstrap_ci


@dataclass
class RunResult:
    """One run: its env, its evaluation curve (steps, mean returns) and final score."""

    path: Path
    env_id: str
    steps: np.ndarray
    means: np.ndarray

    @property
    def final(self) -> float:
        return float(self.means[-1])


def find_runs(target: str | Path) -> list[Path]:
    """A run directory itself, or every run directory directly inside a group directory."""
    path = Path(target)
    if not path.is_dir():
        raise RLKitError(f"{path} is not a directory; pass a run or group directory made by `rlkit train`.")
    if (path / "config.yaml").is_file():
        return [path]
    runs = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
    if not runs:
        raise RLKitError(f"{path} holds no runs (no config.yaml in it or its subdirectories).")
    return runs


def read_evaluations(file: Path) -> list[dict]:
    """The records of an ``evaluations.jsonl``. An unreadable last line (a run killed while appending it) is
    skipped with a one-line warning on stderr; an unreadable line before it is a one-line error."""
    try:
        lines = [(number, line) for number, line in enumerate(file.read_text().splitlines(), 1) if line.strip()]
    except UnicodeDecodeError:
        raise RLKitError(f"{file} is not text (binary or damaged); restore it or delete it.") from None
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        elif position == len(lines) - 1:
            print(f"warning: {file}: skipped its unreadable last line {number} (a run stopped while writing it)",
                  file=sys.stderr)
        else:
            raise RLKitError(f"{file} line {number} is not an evaluation record (damaged file); fix or delete "
                             "that line.")
    return records


def load_run(path: Path, metric: str = "mean") -> RunResult | None:
    """The evaluations of a run (eval/evaluations.jsonl), or None when it has none yet.

    ``metric`` is the key of each evaluation record to read: ``mean`` (mean return, the default), ``iqm``,
    ``median``, or an env's episode metric averaged over the evaluation's episodes (``success``, ``spl``, ...)."""
    config = read_run_config(path)
    file = path / "eval" / "evaluations.jsonl"
    if not file.is_file():
        return None
    records = read_evaluations(file)
    if not records:
        return None
    missing = [r["step"] for r in records if metric not in r]
    if missing:
        known = sorted(k for k, v in records[0].items() if isinstance(v, (int, float)) and k != "step")
        raise RLKitError(f"{path}: evaluation at step {missing[0]} has no {metric!r}; known: {', '.join(known)}.")
    points = {r["step"]: float(r[metric]) for r in records}
    steps = np.array(sorted(points))
    return RunResult(path, config["config"]["env_id"], steps, np.array([points[s] for s in steps]))


def load_group(target: str | Path, metric: str = "mean") -> list[RunResult]:
    """Every run of a run or group directory that has evaluations (see ``load_run`` for ``metric``)."""
    runs = [load_run(p, metric) for p in find_runs(target)]
    results = [r for r in runs if r is not None]
    if not results:
        raise RLKitError(f"no run in {target} has evaluations yet (eval/evaluations.jsonl); train longer.")
    return results


def compare_table(targets: list[str], reps: int = 2000, seed: int = 0, metric: str = "mean") -> list[dict]:
    """Per target: number of runs and mean / median / IQM of final scores with 95% stratified bootstrap CIs.

    A run's score is ``metric`` of its last evaluation (default: the mean return; see ``load_run``). Returns are
    human-normalised when every env of the target is an Atari game with reference scores.
    """
    rows = []
    for target in targets:
        results = load_group(target, metric)
        envs = sorted({r.env_id for r in results})
        normalized = metric == "mean" and all(human_normalized(env, 0.0) is not None for env in envs)
        per_task = []
        for env in envs:
            scores = [r.final for r in results if r.env_id == env]
            per_task.append(np.array([human_normalized(env, s) if normalized else s for s in scores]))
        row: dict = {"target": str(target), "runs": len(results), "envs": envs, "human_normalized": normalized,
                     "metric": metric}
        for name, fn in (("mean", np.mean), ("median", np.median), ("iqm", iqm)):
            row[name] = stratified_bootstrap_ci(per_task, lambda x, fn=fn: float(fn(x)), reps=reps, seed=seed)
        rows.append(row)
    return rows


def format_compare(rows: list[dict]) -> str:
    lines = [f"{'group':40s} {'runs':>4s}  {'mean [95% CI]':>24s}  {'median [95% CI]':>24s}  {'IQM [95% CI]':>24s}"]
    for row in rows:
        cells = [f"{v:7.2f} [{lo:7.2f},{hi:7.2f}]" for v, lo, hi in (row["mean"], row["median"], row["iqm"])]
        label = row["target"][-40:]
        lines.append(f"{label:40s} {row['runs']:>4d}  " + "  ".join(f"{c:>24s}" for c in cells))
    metric = rows[0]["metric"] if rows else "mean"
    units = {("human-normalised" if r["human_normalized"] else "raw returns") for r in rows}
    what = f"final evaluation mean return of each run ({', '.join(sorted(units))})" if metric == "mean" else (
        f"final evaluation {metric} of each run")
    lines.append(f"scores: {what}; "
                 "CIs: stratified bootstrap over runs (rliable protocol).")
    return "\n".join(lines)


def curve_band(results: list[RunResult], reps: int = 1000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Common step grid, mean across runs, and the 95% bootstrap CI of that mean at each step."""
    grid = np.unique(np.concatenate([r.steps for r in results]))
    end = min(r.steps[-1] for r in results)
    grid = grid[grid <= end]
    curves = np.stack([np.interp(grid, r.steps, r.means) for r in results])
    rng = np.random.default_rng(seed)
    samples = curves[rng.integers(0, len(results), (reps, len(results)))].mean(axis=1)
    low, high = np.quantile(samples, [0.025, 0.975], axis=0)
    return grid, curves.mean(axis=0), low, high
