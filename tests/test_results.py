"""`rlkit compare` / `rlkit plot` result reporting: damaged records and configs are one-line errors, groups of
several envs get rliable's aggregates, and each compare row shows the training steps of its final scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import run_cli
from test_cli import assert_user_error

from rlkit.results import compare_table
from rlkit.stats import ATARI_REFERENCE_SCORES, stratified_bootstrap_ci


def fake_run(path: Path, env_id: str | None, evals: list[dict], config: object = None) -> Path:
    """A run directory as `rlkit train` writes it (config.yaml, eval/evaluations.jsonl); ``config`` replaces the
    config section."""
    (path / "eval").mkdir(parents=True)
    section = {"env_id": env_id} if config is None else config
    (path / "config.yaml").write_text(yaml.safe_dump({"algo": "ppo", "config": section}))
    (path / "eval" / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    return path


def record(step: int, mean: float, **extra: object) -> dict:
    """An evaluation record like the ones training appends (summary, returns, lengths, metrics)."""
    return {"step": step, "episodes": 2, "mean": mean, "std": 0.0, "median": mean, "iqm": mean, "min": mean,
            "max": mean, "mean_length": 10.0, "returns": [mean, mean], "lengths": [10, 10], "metrics": {}, **extra}


def atari_score(game: str, hns: float) -> float:
    """The raw return of ``game`` whose human-normalised score is ``hns``."""
    random_score, human_score = ATARI_REFERENCE_SCORES[game]
    return random_score + hns * (human_score - random_score)


# --- finding 6: values that are not numbers, configs without an env, steps that are not integers


@pytest.mark.parametrize("command", ["compare", "plot"])
@pytest.mark.parametrize(
    ("metric", "value", "kind"),
    [("returns", None, "a list"), ("metrics", None, "an object"), ("mean", "oops", "a string"),
     ("mean", None, "null"), ("mean", True, "a boolean")],
)
def test_a_metric_that_is_not_a_number_is_a_one_line_error(capsys, tmp_path, command, metric, value, kind):
    # returns/metrics were `TypeError: float() argument must be ... not 'list'` (exit 1), a string ValueError,
    # null TypeError, and true was read as 1.0
    evals = [record(10, 1.0), record(20, 2.0)]
    if value is not None or kind == "null":
        evals[1][metric] = value
    run = fake_run(tmp_path / "group" / "seed_0", "CartPole-v1", evals)
    argv = ["compare", str(run.parent)] if command == "compare" else [
        "plot", str(run.parent), str(run.parent), "-o", str(tmp_path / "x.png")]
    step = 10 if metric in ("returns", "metrics") else 20
    line = assert_user_error(capsys, [*argv, "--metric", metric], str(run / "eval" / "evaluations.jsonl"),
                             f"{metric!r} at step {step} is {kind}, not a number",
                             "known: episodes, iqm, max, mean, mean_length, median, min, std")
    assert "pass a --metric that is one number per evaluation" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("config", "needle"),
    [({}, "config.yaml has no config.env_id; set it"), (["x"], "config.yaml: 'config' is a list, not a mapping"),
     ({"env_id": 5}, "config.yaml has config.env_id 5, not an env id"), ({"env_id": ""}, "config.env_id ''")],
)
def test_a_config_without_an_env_id_is_a_one_line_error(capsys, tmp_path, config, needle):
    # were KeyError: 'env_id', TypeError: list indices must be integers, AttributeError: 'int' object has no
    # attribute 'removeprefix', and an empty env id was accepted
    run = fake_run(tmp_path / "group" / "seed_0", None, [record(10, 1.0)], config=config)
    assert_user_error(capsys, ["compare", str(run.parent)], str(run), needle, "move the run out of the group")


@pytest.mark.parametrize("step", ["abc", 10.5, None, True])
def test_a_step_that_is_not_an_integer_is_a_one_line_error(capsys, tmp_path, step):
    # "abc" was `TypeError: '<' not supported between 'int' and 'str'`; 10.5 and true were taken as steps
    run = fake_run(tmp_path / "group" / "seed_0", "CartPole-v1", [record(5, 1.0), {"step": step, "mean": 2.0}])
    for argv in (["compare", str(run.parent)], ["plot", str(run.parent), str(run.parent), "-o",
                                                  str(tmp_path / "x.png")]):
        assert_user_error(capsys, argv, str(run / "eval" / "evaluations.jsonl"),
                          f"an evaluation's step is {step!r}, not an integer; fix or delete that line")


# --- finding 7: several envs in a group


def test_stratified_bootstrap_by_task_hands_the_statistic_each_tasks_resample():
    # task A = [0, 1] resamples to a mean of 0 (p 1/4), 0.5 (1/2) or 1 (1/4); task B = [10] is always 10, so every
    # replicate's mean over tasks is 5, 5.25 or 5.5 and the 95% interval is [5, 5.5]
    seen = []

    def statistic(tasks: list[np.ndarray]) -> float:
        seen.append([len(task) for task in tasks])
        return float(np.mean([task.mean() for task in tasks]))

    point, low, high = stratified_bootstrap_ci([np.array([0.0, 1.0]), np.array([10.0])], statistic, reps=2000,
                                               by_task=True)
    assert (point, low, high) == pytest.approx((5.25, 5.0, 5.5))
    assert all(sizes == [2, 1] for sizes in seen) and len(seen) == 2001


def test_several_envs_aggregate_like_rliable(capsys, tmp_path):
    # the review's example: Pong seeds at HNS 0.1 / 0.2 / 0.3, one Breakout seed at HNS 5.0. rliable: task means
    # 0.2 and 5.0 -> aggregate mean = median = 2.6; IQM of [0.1, 0.2, 0.3, 5.0] drops one from each end -> 0.25.
    # The old pooled mean was 1.4 and median 0.25. Breakout's one run never varies and Pong's resampled mean lies
    # in [0.1, 0.3] (0.1 with probability 1/27 > 2.5%), so the 95% CI of both is exactly [2.55, 2.65].
    group = tmp_path / "atari"
    for seed, hns in enumerate((0.1, 0.2, 0.3)):
        fake_run(group / f"pong_{seed}", "ALE/Pong-v5", [record(100, atari_score("Pong", hns))])
    fake_run(group / "breakout_0", "ALE/Breakout-v5", [record(100, atari_score("Breakout", 5.0))])
    row = compare_table([str(group)], reps=2000)[0]
    assert row["human_normalized"] and row["envs"] == ["ALE/Breakout-v5", "ALE/Pong-v5"]
    assert row["mean"] == pytest.approx((2.6, 2.55, 2.65))
    assert row["median"] == pytest.approx((2.6, 2.55, 2.65))
    assert row["iqm"][0] == pytest.approx(0.25)
    code, out, err = run_cli(capsys, "compare", str(group), "--reps", "200")
    assert code == 0 and err == "" and "2.60 [   2.55,   2.65]" in out
    assert "mean and median are over envs of each env's mean score, IQM over all runs' scores" in out

    # three envs: task means 0.2, 5.0, 2.0 -> mean 2.4, median 2.0 (pooled: 1.6 and 0.65);
    # IQM of [0.1, 0.2, 0.3, 1, 3, 5] drops one from each end -> mean(0.2, 0.3, 1, 3) = 1.125
    for seed, hns in enumerate((1.0, 3.0)):
        fake_run(group / f"invaders_{seed}", "ALE/SpaceInvaders-v5", [record(100, atari_score("SpaceInvaders", hns))])
    row = compare_table([str(group)], reps=200)[0]
    assert (row["mean"][0], row["median"][0], row["iqm"][0]) == pytest.approx((2.4, 2.0, 1.125))
    from rlkit.stats import aggregate_iqm, aggregate_mean, aggregate_median

    tasks = [np.array([0.1, 0.2, 0.3]), np.array([5.0]), np.array([1.0, 3.0])]
    assert (aggregate_mean(tasks), aggregate_median(tasks), aggregate_iqm(tasks)) == pytest.approx((2.4, 2.0, 1.125))

    # success rates of several envs share a scale: they are aggregated the same way, not refused
    nav = tmp_path / "nav"
    fake_run(nav / "a0", "rlkit/NavigationRGB-v0", [record(100, 5.0, success=1.0)])
    fake_run(nav / "a1", "rlkit/NavigationRGB-v0", [record(100, 5.0, success=0.5)])
    fake_run(nav / "b0", "rlkit/Driving-v0", [record(100, 9.0, success=0.0)])
    row = compare_table([str(nav)], reps=200, metric="success")[0]
    assert (row["mean"][0], row["median"][0], row["iqm"][0]) == pytest.approx((0.375, 0.375, 0.5))


def test_raw_returns_of_several_envs_are_refused(capsys, tmp_path):
    # a Pong run (0) and a CartPole run (500) printed "250.00 (raw returns)"; plot drew their mean as one curve
    group = tmp_path / "mixed"
    fake_run(group / "a", "ALE/Pong-v5", [record(100, 0.0)])
    fake_run(group / "b", "CartPole-v1", [record(100, 500.0)])
    needles = (f"{group} holds runs of 2 envs (ALE/Pong-v5, CartPole-v1) whose raw returns are on different scales",)
    line = assert_user_error(capsys, ["compare", str(group)], *needles, "compare one env at a time")
    assert "human-normalises only --metric mean of Atari games" in line
    assert_user_error(capsys, ["plot", str(group), "-o", str(tmp_path / "x.png")], *needles, "plot one env at a time")
    assert not (tmp_path / "x.png").exists()
    # Atari games are human-normalised for the mean return only: their IQM returns are raw
    atari = tmp_path / "atari"
    fake_run(atari / "a", "ALE/Pong-v5", [record(100, 0.0)])
    fake_run(atari / "b", "ALE/Breakout-v5", [record(100, 30.0)])
    assert_user_error(capsys, ["compare", str(atari), "--metric", "iqm"], "compare one env at a time")
    assert run_cli(capsys, "compare", str(atari), "--reps", "10")[0] == 0


# --- finding 8: the steps of the final scores


def test_compare_shows_the_steps_of_the_final_scores_and_warns_when_they_differ(capsys, tmp_path):
    # the review's example: seed_0 finished at 500k with 500.0, seed_1 stopped at 10k with 22.0; compare printed
    # "261.00 [22.00, 500.00]" with no step and no warning
    group = tmp_path / "steps"
    fake_run(group / "seed_0", "CartPole-v1", [record(10_000, 20.0), record(500_000, 500.0)])
    fake_run(group / "seed_1", "CartPole-v1", [record(10_000, 22.0)])
    assert compare_table([str(group)], reps=10)[0]["final_steps"] == (10_000, 500_000)
    capsys.readouterr()
    code, out, err = run_cli(capsys, "compare", str(group), "--reps", "200")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["group", "runs", "step"]
    assert row.split()[:3] == [str(group)[-40:], "2", "10000-500000"] and "261.00" in row
    assert err == (f"warning: {group}: its runs' final evaluations are at different steps (10000 to 500000; "
                   "earliest: seed_1), so its scores mix training lengths\n")

    # runs that end at the same step: that step, no warning; one env: mean, median and IQM of the runs' scores,
    # as before (the median is the runs' median, not rliable's median over tasks of the task mean)
    same = tmp_path / "same"
    for seed, final in enumerate((1.0, 2.0, 10.0)):
        fake_run(same / f"seed_{seed}", "CartPole-v1", [record(1000, 0.0), record(40_960, final)])
    row = compare_table([str(same)], reps=500)[0]
    assert row["final_steps"] == (40_960, 40_960)
    scores = [np.array([1.0, 2.0, 10.0])]
    assert row["mean"] == stratified_bootstrap_ci(scores, np.mean, reps=500)
    assert row["median"] == stratified_bootstrap_ci(scores, np.median, reps=500)
    assert row["median"][0] == 2.0 and row["mean"][0] == row["iqm"][0] == pytest.approx(13 / 3)
    code, out, err = run_cli(capsys, "compare", str(same), "--reps", "200")
    assert code == 0 and err == "" and out.splitlines()[1].split()[:3] == [str(same)[-40:], "3", "40960"]
    assert "final evaluation mean return of each run (raw returns) at the step shown" in out
    assert "several envs" not in out
