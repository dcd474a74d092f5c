"""Tiny-budget training runs through the CLI: run directory layout, checkpoints, TensorBoard tags, eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkit.checkpoint import load_checkpoint
from rlkit.cli import main

TAGS = {"charts/episodic_return", "charts/episodic_length", "charts/sps", "charts/epsilon", "losses/td_loss",
        "losses/q_values", "eval/mean_return", "eval/std_return"}


def train(run_dir: Path, *argv: str) -> None:
    # log_every is lowered so that training scalars are written within these short budgets (the classic
    # preset logs every 1000 steps); torch_threads=1 keeps the run off the other cores.
    code = main(["train", "dqn", *argv, "--set", "torch_threads=1", "--set", "log_every=100",
                 "--run-dir", str(run_dir)])
    assert code == 0


def scalars(run_dir: Path) -> EventAccumulator:
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "fake"
    train(
        run_dir, "--env", "rlkit/FakeImage-v0", "--total-steps", "600", "--set", "learning_starts=200",
        "--set", "buffer_size=2000", "--set", "num_envs=2", "--set", "eval_episodes=2",
        "--set", "env_kwargs.episode_length=50", "--set", "batch_size=16",  # the preset's 64: 4x the test time
    )
    return run_dir


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "pong"
    train(
        run_dir, "--env", "ALE/Pong-v5", "--total-steps", "2000", "--set", "learning_starts=500",
        "--set", "buffer_size=5000", "--set", "num_envs=4", "--set", "eval_episodes=1", "--set", "eval_every=0",
        "--set", "batch_size=16",
    )
    return run_dir


def test_fake_image_run_layout(fake_run):
    data = yaml.safe_load((fake_run / "config.yaml").read_text())
    assert data["algo"] == "dqn" and data["preset"] == "classic"
    config = data["config"]
    assert config["env_id"] == "rlkit/FakeImage-v0" and config["total_steps"] == 600
    assert config["env_kwargs"] == {"episode_length": 50}
    assert config["learning_starts"] == 200 and config["num_envs"] == 2 and config["buffer_size"] == 2000
    assert data["env_settings"]["env_id"] == "rlkit/FakeImage-v0"
    assert (fake_run / "checkpoints" / "last.safetensors").is_file()
    assert (fake_run / "checkpoints" / "best.safetensors").is_file()
    log = (fake_run / "stdout.log").read_text()
    assert "eval @ 600" in log and "new best" in log


def test_fake_image_run_counters(fake_run):
    _, meta = load_checkpoint(fake_run / "checkpoints" / "last.safetensors")
    counters = meta["counters"]
    assert counters["global_step"] == 600
    # classic preset: 128 gradient steps every 256 env steps from step 200 -> rounds at 200 and 454
    assert counters["updates"] == 256
    # 300 vector steps per env; a 50-step episode plus its autoreset step takes 51: 5 episodes per env
    assert counters["episodes"] == 2 * 5
    assert meta["encoder"] == "nature_cnn" and meta["observation_shape"] == [4, 84, 84]
    evaluations = [json.loads(line) for line in (fake_run / "eval" / "evaluations.jsonl").read_text().splitlines()]
    assert len(evaluations) == 1 and evaluations[0]["step"] == 600
    # the final evaluation's best is recorded in last.safetensors too (a resume must not forget it)
    assert counters["best_eval"] == pytest.approx(evaluations[0]["mean"])
    _, best_meta = load_checkpoint(fake_run / "checkpoints" / "best.safetensors")
    assert best_meta["counters"]["best_eval"] == pytest.approx(evaluations[0]["mean"])


def test_fake_image_run_tensorboard(fake_run):
    accumulator = scalars(fake_run)
    assert TAGS <= set(accumulator.Tags()["scalars"])
    returns = [e.value for e in accumulator.Scalars("charts/episodic_return")]
    lengths = [e.value for e in accumulator.Scalars("charts/episodic_length")]
    assert len(returns) == 10 and all(0 <= r <= 50 for r in returns)
    assert set(lengths) == {50.0}
    assert [e.step for e in accumulator.Scalars("eval/mean_return")] == [600]
    assert all(e.value > 0 for e in accumulator.Scalars("charts/sps"))
    # epsilon: 1.0 -> 0.04 linearly over 8000 steps, logged with the value used for the step before logging
    for event in accumulator.Scalars("charts/epsilon"):
        assert event.value == pytest.approx(1.0 - 0.96 * (event.step - 2) / 8000, abs=1e-6)


def test_eval_command_on_fake_run(fake_run, capsys):
    code = main(["eval", str(fake_run), "--episodes", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "best.safetensors (step 600)" in out
    record = json.loads((fake_run / "eval" / "eval.json").read_text())
    assert record["episodes"] == 2 and len(record["returns"]) == 2
    assert record["lengths"] == [50, 50]
    assert all(0 <= r <= 50 and float(r).is_integer() for r in record["returns"])
    assert record["mean"] == pytest.approx(sum(record["returns"]) / 2)
    assert record["algo"] == "dqn" and record["step"] == 600


def test_pong_run(pong_run):
    data = yaml.safe_load((pong_run / "config.yaml").read_text())
    assert data["preset"] == "atari-cpu"
    settings = data["env_settings"]
    assert settings["env_id"] == "ALE/Pong-v5"
    assert settings["episodic_life"] is True and settings["clip_rewards"] is True and settings["frame_stack"] == 4
    assert (pong_run / "checkpoints" / "last.safetensors").is_file()
    assert (pong_run / "checkpoints" / "best.safetensors").is_file()
    _, meta = load_checkpoint(pong_run / "checkpoints" / "last.safetensors")
    counters = meta["counters"]
    assert counters["global_step"] == 2000
    # 4 envs, train_freq 4 from step 500 (the schedule starts at 496, so step 500 trains twice): 377 updates
    assert counters["updates"] == 377
    assert counters["next_target_step"] == 2496
    assert meta["encoder"] == "nature_cnn_small"
    (evaluation,) = [json.loads(line) for line in (pong_run / "eval" / "evaluations.jsonl").read_text().splitlines()]
    assert evaluation["step"] == 2000 and evaluation["episodes"] == 1
    # a full, unclipped Pong game: one side reached 21 points
    assert -21 <= evaluation["mean"] <= 21 and float(evaluation["mean"]).is_integer()
    assert evaluation["mean_length"] > 700
    tags = set(scalars(pong_run).Tags()["scalars"])
    assert {"charts/sps", "losses/td_loss", "eval/mean_return"} <= tags


def test_bf16_run_says_so_and_learns_finite(tmp_path, capsys):
    """precision=bf16 trains through the CLI, announces the arithmetic, and logs finite TD losses. The budget
    is small (200 steps, 32 updates of batches of 8): on a CPU without bfloat16 instructions (AVX2 only) bf16
    convolutions are emulated, 0.5 s per NatureCNN update of 32, and the 400-step version of this test took 285 s
    there."""
    run_dir = tmp_path / "bf16"
    train(
        run_dir, "--env", "rlkit/FakeImage-v0", "--total-steps", "200", "--set", "learning_starts=100",
        "--set", "buffer_size=1000", "--set", "eval_episodes=1", "--set", "env_kwargs.episode_length=50",
        "--set", "precision=bf16", "--set", "batch_size=8", "--set", "gradient_steps=32",
    )
    assert "encoder arithmetic: bf16 autocast (precision=bf16)" in capsys.readouterr().out
    losses = [event.value for event in scalars(run_dir).Scalars("losses/td_loss")]
    assert losses and all(math.isfinite(value) for value in losses)
