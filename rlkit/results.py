"""Reading finished runs and groups of runs: final scores, evaluation curves, comparison tables."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlkit.errors import RLKitError
from rlkit.run import read_run_config
from rlkit.stats import aggregate_iqm, aggregate_mean, aggregate_median, human_normalized, stratified_bootstrap_ci

# Evaluation keys on the scale of the env's returns (from ``rlkit.stats.summarize``): runs of different envs
# cannot be pooled on them unless they are human-normalised.
RETURN_KEYS = frozenset({"mean", "median", "iqm", "min", "max", "std"})


@dataclass
class RunResult:
    """One run: its env, its evaluation curve (steps, scores of the metric read) and final score."""

    path: Path
    env_id: str
    steps: np.ndarray
    means: np.ndarray

    @property
    def final(self) -> float:
        """The score of the last evaluation."""
        return float(self.means[-1])

    @property
    def final_step(self) -> int:
        """The training step of the last evaluation."""
        return int(self.steps[-1])


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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_kind(value: object) -> str:
    """How JSON calls ``value``'s type, with an article: 'a list', 'a string', 'null', ..."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _env_id(path: Path, config: dict) -> str:
    """``config.env_id`` of a run's config.yaml, or a one-line error naming the file."""
    file = path / "config.yaml"
    section = config["config"]
    if not isinstance(section, dict):
        raise RLKitError(f"{file}: 'config' is {_json_kind(section)}, not a mapping with env_id; restore the file or "
                         "move the run out of the group.")
    env_id = section.get("env_id")
    if not isinstance(env_id, str) or not env_id:
        found = "has no config.env_id" if env_id is None else f"has config.env_id {env_id!r}, not an env id"
        raise RLKitError(f"{file} {found}; set it to the env the run trained on or move the run out of the group.")
    return env_id


def load_run(path: Path, metric: str = "mean") -> RunResult | None:
    """The evaluations of a run (eval/evaluations.jsonl), or None when it has none yet.

    ``metric`` is the key of each evaluation record to read: ``mean`` (mean return, the default), ``iqm``,
    ``median``, or an env's episode metric averaged over the evaluation's episodes (``success``, ``spl``, ...).
    A record without ``metric``, with a value that is not a number, or with a step that is not an integer, and a
    config.yaml without ``config.env_id``, are one-line errors naming the file."""
    config = read_run_config(path)
    file = path / "eval" / "evaluations.jsonl"
    if not file.is_file():
        return None
    records = read_evaluations(file)
    if not records:
        return None
    for r in records:
        if not isinstance(r["step"], int) or isinstance(r["step"], bool):
            raise RLKitError(f"{file}: an evaluation's step is {r['step']!r}, not an integer; fix or delete that "
                             "line.")
    known = ", ".join(sorted(k for k, v in records[0].items() if _is_number(v) and k != "step")) or "none"
    missing = [r["step"] for r in records if metric not in r]
    if missing:
        raise RLKitError(f"{file}: evaluation at step {missing[0]} has no {metric!r}; known: {known}.")
    bad = next((r for r in records if not _is_number(r[metric])), None)
    if bad is not None:
        raise RLKitError(f"{file}: {metric!r} at step {bad['step']} is {_json_kind(bad[metric])}, not a number; "
                         f"pass a --metric that is one number per evaluation (known: {known}) or repair the file.")
    env_id = _env_id(path, config)
    points = {r["step"]: float(r[metric]) for r in records}
    steps = np.array(sorted(points))
    return RunResult(path, env_id, steps, np.array([points[s] for s in steps]))


def load_group(target: str | Path, metric: str = "mean") -> list[RunResult]:
    """Every run of a run or group directory that has evaluations (see ``load_run`` for ``metric``)."""
    runs = [load_run(p, metric) for p in find_runs(target)]
    results = [r for r in runs if r is not None]
    if not results:
        raise RLKitError(f"no run in {target} has evaluations yet (eval/evaluations.jsonl); train longer.")
    return results


def check_one_scale(target: str | Path, results: list[RunResult], metric: str, normalized: bool,
                    command: str = "compare") -> None:
    """Refuse to pool the raw (not human-normalised) returns of runs of different envs: a one-line error."""
    envs = sorted({r.env_id for r in results})
    if len(envs) > 1 and metric in RETURN_KEYS and not normalized:
        why = (" (compare human-normalises only --metric mean of Atari games with reference scores)"
               if command == "compare" else "")
        raise RLKitError(f"{target} holds runs of {len(envs)} envs ({', '.join(envs)}) whose raw returns are on "
                         f"different scales{why}; {command} one env at a time (a group directory per env).")


def compare_table(targets: list[str], reps: int = 2000, seed: int = 0, metric: str = "mean") -> list[dict]:
    """Per target: number of runs, the training steps of their final evaluations, and mean / median / IQM of the
    final scores with 95% stratified bootstrap CIs.

    A run's score is ``metric`` of its last evaluation (default: the mean return; see ``load_run``). Mean returns
    are human-normalised when every env of the target is an Atari game with reference scores. With one env, the
    mean, median and IQM are those of the runs' scores. With several envs they are rliable's aggregates: mean and
    median over envs of each env's mean score, IQM of all runs' scores together; raw returns of several envs are
    refused (``check_one_scale``). ``final_steps`` is the (lowest, highest) step of the runs' final evaluations;
    when they differ a one-line warning goes to stderr.
    """
    rows = []
    for target in targets:
        results = load_group(target, metric)
        envs = sorted({r.env_id for r in results})
        normalized = metric == "mean" and all(human_normalized(env, 0.0) is not None for env in envs)
        check_one_scale(target, results, metric, normalized)
        per_task = []
        for env in envs:
            scores = [r.final for r in results if r.env_id == env]
            per_task.append(np.array([human_normalized(env, s) if normalized else s for s in scores]))
        final_steps = sorted(r.final_step for r in results)
        if final_steps[0] != final_steps[-1]:
            early = min(results, key=lambda r: r.final_step)
            print(f"warning: {target}: its runs' final evaluations are at different steps ({final_steps[0]} to "
                  f"{final_steps[-1]}; earliest: {early.path.name}), so its scores mix training lengths",
                  file=sys.stderr)
        row: dict = {"target": str(target), "runs": len(results), "envs": envs, "human_normalized": normalized,
                     "metric": metric, "final_steps": (final_steps[0], final_steps[-1])}
        median = aggregate_median if len(per_task) > 1 else (lambda tasks: float(np.median(tasks[0])))
        for name, fn in (("mean", aggregate_mean), ("median", median), ("iqm", aggregate_iqm)):
            row[name] = stratified_bootstrap_ci(per_task, fn, reps=reps, seed=seed, by_task=True)
        rows.append(row)
    return rows


def _steps_label(final_steps: tuple[int, int]) -> str:
    low, high = final_steps
    return str(low) if low == high else f"{low}-{high}"


def format_compare(rows: list[dict]) -> str:
    """The table of ``compare_table``'s rows and a one-line legend (two with a group of several envs)."""
    width = max([len("step")] + [len(_steps_label(row["final_steps"])) for row in rows])
    lines = [f"{'group':40s} {'runs':>4s} {'step':>{width}s}  {'mean [95% CI]':>24s}  {'median [95% CI]':>24s}  "
             f"{'IQM [95% CI]':>24s}"]
    for row in rows:
        cells = [f"{v:7.2f} [{lo:7.2f},{hi:7.2f}]" for v, lo, hi in (row["mean"], row["median"], row["iqm"])]
        label = row["target"][-40:]
        lines.append(f"{label:40s} {row['runs']:>4d} {_steps_label(row['final_steps']):>{width}s}  "
                     + "  ".join(f"{c:>24s}" for c in cells))
    metric = rows[0]["metric"] if rows else "mean"
    units = {("human-normalised" if r["human_normalized"] else "raw returns") for r in rows}
    what = f"final evaluation mean return of each run ({', '.join(sorted(units))})" if metric == "mean" else (
        f"final evaluation {metric} of each run")
    lines.append(f"scores: {what} at the step shown; CIs: 95% stratified bootstrap (runs resampled within each env).")
    if any(len(row["envs"]) > 1 for row in rows):
        lines.append("groups of several envs: mean and median are over envs of each env's mean score, IQM over all "
                     "runs' scores (rliable's aggregate_mean / aggregate_median / aggregate_iqm).")
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
