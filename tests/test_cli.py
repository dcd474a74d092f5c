"""The command line in-process: user mistakes exit 2 with exactly one line on stderr and no traceback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from cli_helpers import one_line_error, run_cli
from safetensors.numpy import save_file

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.checkpoint import load_checkpoint, save_checkpoint


def assert_user_error(capsys, argv: list[str], *needles: str) -> str:
    line = one_line_error(capsys, *argv)
    for needle in needles:
        assert needle in line
    return line


@pytest.fixture
def dqn_run(tmp_path: Path) -> Path:
    """A run directory with a real (untrained) CartPole DQN checkpoint and its config.yaml."""
    config = DQNConfig(env_id="CartPole-v1", device="cpu", torch_threads=1)
    agent = DQN(config, gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
    run = tmp_path / "dqn-run"
    agent.save(run / "checkpoints" / "last.safetensors")
    data = {"algo": "dqn", "preset": None, "config": dataclasses.asdict(config)}
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    return run


def test_no_command_prints_help(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "usage: rlkit" in out


def test_unknown_algorithm(capsys):
    assert_user_error(capsys, ["train", "dqnn", "--env", "CartPole-v1"], "unknown algorithm 'dqnn'", "dqn")


def test_unknown_command(capsys):
    assert_user_error(capsys, ["trian"], "invalid choice")


def test_unknown_env_suggests_close_match(capsys):
    assert_user_error(capsys, ["train", "dqn", "--env", "ALE/Pnog-v5"], "unknown env id 'ALE/Pnog-v5'",
                      "Did you mean: ALE/Pong-v5")


def test_train_needs_env(capsys):
    assert_user_error(capsys, ["train", "dqn"], "--env")


@pytest.mark.parametrize(
    "override, needles",
    [
        ("lerning_rate=1", ["unknown config key 'lerning_rate'"]),
        ("lr=abc", ["lr='abc' is not a float"]),
        ("batch_size=2.5", ["batch_size=2.5 is not a int"]),
        ("loss=l1", ["loss='l1' is not valid", "huber|mse"]),
        ("lr", ["bad override 'lr'"]),
        ("train_freq=0", ["train_freq=0 is out of range", ">= 1"]),  # was an endless update loop
        ("target_update_interval=0", ["target_update_interval=0 is out of range"]),  # likewise
    ],
)
def test_bad_set(capsys, override, needles):
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--set", override], *needles)


def test_stop_at_return_without_evaluations_is_a_user_error(capsys, tmp_path):
    # it used to be accepted and never checked: the run trained to total_steps
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--total-steps", "600", "--run-dir",
                          str(tmp_path / "r"), "--set", "stop_at_return=100", "--set", "eval_every=0")
    assert "stop_at_return=100 is checked at the periodic evaluations" in line and "eval_every" in line


def test_bad_env_kwarg_for_atari(capsys, tmp_path):
    assert_user_error(
        capsys,
        ["train", "dqn", "--env", "ALE/Pong-v5", "--set", "env_kwargs.frameskip=2", "--run-dir", str(tmp_path / "r")],
        "unknown Atari env setting(s) frameskip",
    )


def test_bad_argument_type(capsys):
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--total-steps", "many"], "invalid int")


def test_resume_missing_run_dir(capsys, tmp_path):
    assert_user_error(capsys, ["train", "--resume", str(tmp_path / "nope")], "does not exist")


def test_resume_dir_without_checkpoint(capsys, dqn_run):
    (dqn_run / "checkpoints" / "last.safetensors").unlink()
    assert_user_error(capsys, ["train", "--resume", str(dqn_run)], "no checkpoints/last.safetensors")


def test_resume_dir_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(capsys, ["train", "--resume", str(tmp_path / "empty")], "no config.yaml")


def test_eval_missing_target(capsys, tmp_path):
    assert_user_error(capsys, ["eval", str(tmp_path / "missing.safetensors")], "does not exist")


def test_eval_run_dir_without_checkpoints(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    assert_user_error(capsys, ["eval", str(tmp_path / "run")], "has no checkpoint")


def test_eval_random_bytes(capsys, tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_user_error(capsys, ["eval", str(path), "--episodes", "1"], "corrupt")


def test_eval_empty_file(capsys, tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert_user_error(capsys, ["eval", str(path), "--episodes", "1"], "corrupt")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_eval_truncated_checkpoint(capsys, dqn_run, keep):
    data = (dqn_run / "checkpoints" / "last.safetensors").read_bytes()
    path = dqn_run / "checkpoints" / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * keep)])
    assert_user_error(capsys, ["eval", str(path), "--episodes", "1"], "corrupt")
    # the same through a run directory whose only checkpoint is truncated
    (dqn_run / "checkpoints" / "last.safetensors").write_bytes(data[: int(len(data) * keep)])
    assert_user_error(capsys, ["eval", str(dqn_run), "--episodes", "1"], "corrupt")


def test_eval_safetensors_file_that_is_no_rlkit_checkpoint(capsys, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    assert_user_error(capsys, ["eval", str(path)], "not an rlkit checkpoint")


def test_eval_checkpoint_of_another_algorithm(capsys, dqn_run, tmp_path):
    tensors, meta = load_checkpoint(dqn_run / "checkpoints" / "last.safetensors")
    assert meta["algo"] == "dqn"
    meta["algo"] = "ppo"
    path = tmp_path / "ppo.safetensors"
    save_checkpoint(path, tensors, meta)
    assert_user_error(capsys, ["eval", str(path), "--episodes", "1"], "ppo")


def test_resume_with_checkpoint_of_another_algorithm(capsys, dqn_run):
    last = dqn_run / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(last)
    meta["algo"] = "ppo"
    save_checkpoint(last, tensors, meta)
    assert_user_error(capsys, ["train", "--resume", str(dqn_run)], "checkpoint is for algorithm 'ppo', not dqn")


def test_resume_run_of_another_algorithm(capsys, dqn_run):
    data = yaml.safe_load((dqn_run / "config.yaml").read_text())
    data["algo"] = "ppo"
    (dqn_run / "config.yaml").write_text(yaml.safe_dump(data))
    assert_user_error(capsys, ["train", "dqn", "--resume", str(dqn_run)], "is a ppo run, not dqn")
    assert_user_error(capsys, ["train", "--resume", str(dqn_run)], "does not fit ppo")
    data["algo"] = "sac"
    (dqn_run / "config.yaml").write_text(yaml.safe_dump(data))
    assert_user_error(capsys, ["train", "--resume", str(dqn_run)], "unknown algorithm 'sac'")


def test_resume_with_corrupt_config_yaml(capsys, dqn_run):
    (dqn_run / "config.yaml").write_text("algo: [dqn\n")
    assert_user_error(capsys, ["train", "--resume", str(dqn_run)], "not valid YAML")


def test_resume_with_bad_set(capsys, dqn_run):
    assert_user_error(capsys, ["train", "--resume", str(dqn_run), "--set", "gamma=high"], "gamma='high'")


def test_envs_lists_families(capsys):
    code, out, _ = run_cli(capsys, "envs")
    assert code == 0
    ids = out.split()
    for env_id in ("ALE/Pong-v5", "ALE/Breakout-v5", "CartPole-v1", "rlkit/FakeImage-v0"):
        assert env_id in ids
    assert "atari" in out and "classic-control" in out
    assert "ALE/Pong-v4" not in ids and not any("ram" in i.lower() for i in ids)


def test_presets_lists_every_preset_with_defaults(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    lines = out.strip().splitlines()
    by_name = {tuple(line.split()[:2]): line for line in lines}
    assert {name for algo, name in by_name if algo == "dqn"} == {"atari", "atari-cpu", "atari-gpu", "classic",
                                                                 "navigation"}
    assert {("ppo", "atari"), ("ppo", "classic"), ("a2c", "classic"), ("q_learning", "toy-text")} <= set(by_name)
    assert "[default for atari]" in by_name["dqn", "atari-cpu"]
    assert "[default for atari on cuda]" in by_name["dqn", "atari-gpu"]
    assert "[default for classic-control, rlkit]" in by_name["dqn", "classic"]
    assert "default for" not in by_name["dqn", "atari"]
    assert "[default for atari]" in by_name["ppo", "atari"]
    assert "[default for atari on cpu]" in by_name["ppo", "atari-cpu"]
    assert "[default for driving]" in by_name["ppo", "driving"]
    assert "[default for navigation]" in by_name["dqn", "navigation"]
    assert "default for" not in by_name["ppo", "navigation-rgb"]


def test_train_help_lists_every_config_field(capsys):
    code, out, _ = run_cli(capsys, "train", "dqn", "--help")
    assert code == 0
    for field in dataclasses.fields(DQNConfig):
        assert f"  {field.name} (" in out, field.name
    assert "Learning rate (at the start of lr_schedule)." in out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_train_help_without_algo_lists_options_and_algorithms(capsys, flag):
    code, out, _ = run_cli(capsys, "train", flag)
    assert code == 0
    assert "--resume RUN_DIR" in out and "--set KEY=VALUE" in out
    assert "algorithms: " in out and "dqn" in out and "ppo" in out


def test_resume_with_out_of_range_set_names_the_override(capsys, dqn_run):
    line = one_line_error(capsys, "train", "--resume", str(dqn_run), "--set", "train_freq=0")
    assert line.startswith("error: train_freq=0 is out of range") and "config.yaml" not in line


def test_resume_with_another_network_shape_is_a_user_error(capsys, dqn_run):
    line = one_line_error(capsys, "train", "--resume", str(dqn_run), "--set", "dueling=true")
    assert "does not fit the network" in line and "value.weight" in line


def test_resume_of_a_finished_run_is_a_user_error(capsys, tmp_path):
    config = DQNConfig(env_id="CartPole-v1", device="cpu", torch_threads=1, total_steps=1000)
    agent = DQN(config, gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
    agent.global_step = 1000
    run = tmp_path / "done"
    agent.save(run / "checkpoints" / "last.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "dqn", "preset": None,
                                                     "config": dataclasses.asdict(config)}))
    for extra in ([], ["--total-steps", "900"]):
        line = one_line_error(capsys, "train", "--resume", str(run), *extra)
        assert "already at step 1000" in line and "--total-steps" in line


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["compare", "RUN", "--reps", "0"], "argument --reps: must be >= 1, got 0"),
     (["eval", "RUN", "--epsilon", "2"], "argument --epsilon: must be in [0, 1], got 2"),
     (["eval", "RUN", "--seed", "-3"], "argument --seed: must be >= 0, got -3"),
     (["probe", "--encoder", "random", "--data", "RUN", "--epochs", "0"], "argument --epochs: must be >= 1"),
     (["collect", "--env", "CartPole-v1", "--out", "RUN", "--episode-steps", "0"], "--episode-steps: must be >= 1"),
     (["train", "dqn", "--env", "CartPole-v1", "--seeds", "0,1", "--workers", "0"], "--workers: must be >= 1")],
)
def test_out_of_range_options_are_one_line_errors(capsys, dqn_run, argv, needle):
    line = one_line_error(capsys, *[str(dqn_run) if arg == "RUN" else arg for arg in argv])
    assert needle in line


def test_binary_config_and_damaged_checkpoint_metadata_are_user_errors(capsys, dqn_run, tmp_path):
    checkpoint = dqn_run / "checkpoints" / "last.safetensors"
    from safetensors.torch import save_file

    damaged = tmp_path / "damaged.safetensors"
    save_file({"x": torch.zeros(1)}, str(damaged), metadata={"format": "rlkit-checkpoint-v1", "metadata": "{oops"})
    assert "damaged metadata" in one_line_error(capsys, "eval", str(damaged))
    assert checkpoint.is_file()
    (dqn_run / "config.yaml").write_bytes(bytes(range(128, 256)))
    assert "is not text" in one_line_error(capsys, "train", "--resume", str(dqn_run))


def test_output_options_that_name_a_file_fail_before_any_work(capsys, dqn_run):
    config = str(dqn_run / "config.yaml")
    for argv in (["eval", str(dqn_run), "--out", config], ["collect", "--env", "CartPole-v1", "--out", config],
                 ["probe", "--encoder", "random", "--data", str(dqn_run), "--out", config]):
        assert "is a file; pass a directory" in one_line_error(capsys, *argv)
    line = one_line_error(capsys, "plot", str(dqn_run), "-o", str(dqn_run / "curve.bogus"))
    assert "unknown image format 'bogus'" in line and ".png" in line


def test_resume_with_the_other_command_names_the_right_one(capsys, dqn_run, tmp_path):
    line = one_line_error(capsys, "pretrain", "--resume", str(dqn_run))
    assert f"rlkit train --resume {dqn_run}" in line
    pretraining = tmp_path / "pre"
    pretraining.mkdir()
    (pretraining / "config.yaml").write_text(yaml.safe_dump({"algo": "pretrain-gan", "method": "gan", "config": {}}))
    assert f"rlkit pretrain --resume {pretraining}" in one_line_error(capsys, "train", "--resume", str(pretraining))


def test_encoders(capsys):
    code, out, _ = run_cli(capsys, "encoders")
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert "4x84x84 uint8" in header
    rows = {line.split()[0]: line for line in lines}
    assert set(rows) == {"nature_cnn", "nature_cnn_small", "mlp", "mlp_tanh", "mlp200", "impala", "resnet18", "vit",
                         "dcgan"}
    # hand count: Nature CNN on (4, 84, 84): convs 8,224 + 32,832 + 36,928, fc 3136*512 + 512 = 1,606,144
    assert "params  1,684,128" in rows["nature_cnn"]
    assert "features  512" in rows["nature_cnn"]


@pytest.fixture(scope="module")
def pong_ppo_checkpoint(tmp_path_factory) -> Path:
    """An untrained PPO agent for ALE/Pong-v5 (small CNN), saved as a checkpoint."""
    from rlkit.agents.policy_gradient import PPO, PPOConfig

    config = PPOConfig(env_id="ALE/Pong-v5", encoder="nature_cnn_small", device="cpu", torch_threads=1)
    agent = PPO(config, gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6))
    path = tmp_path_factory.mktemp("pong") / "ppo.safetensors"
    agent.save(path)
    return path


def test_eval_with_a_changed_env_setting(capsys, pong_ppo_checkpoint, tmp_path):
    code, out, err = run_cli(capsys, "eval", str(pong_ppo_checkpoint), "--episodes", "1", "--seed", "5",
                             "--env-kwarg", "repeat_action_probability=0", "--out", str(tmp_path))
    assert code == 0, err
    record = yaml.safe_load((tmp_path / "eval.json").read_text())
    assert record["env_kwargs"] == {"repeat_action_probability": 0.0}
    assert record["episodes"] == 1 and -21 <= record["mean"] <= 21


def test_eval_env_kwarg_errors(capsys, pong_ppo_checkpoint):
    target = str(pong_ppo_checkpoint)
    assert_user_error(capsys, ["eval", target, "--env-kwarg", "nokey"], "write it as KEY=VALUE")
    assert_user_error(capsys, ["eval", target, "--env-kwarg", "frame_stack=2"],
                      "(2, 84, 84)", "trained on Box(0, 255, (4, 84, 84)", "keep the spaces")
    assert_user_error(capsys, ["eval", target, "--env-kwarg", "sticky=0"], "unknown Atari env setting(s) sticky")


def test_ctrl_c_outside_a_training_run_is_one_line_and_exit_130(capsys, monkeypatch):
    """SIGINT while the CLI imports torch or builds its parser (before a run installs its handler)."""
    import rlkit.cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rlkit.cli, "make_parser", interrupted)
    assert rlkit.cli.main(["envs"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "interrupted\n" and "Traceback" not in captured.out


def test_preset_for_another_env_family_names_the_preset(capsys):
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--preset", "atari")
    assert "preset atari sets env_kwargs" in line and "`rlkit presets`" in line


def test_more_ppo_minibatches_than_transitions_is_a_user_error(capsys):
    line = one_line_error(capsys, "train", "ppo", "--env", "CartPole-v1", "--set", "num_envs=2", "--set",
                          "rollout_steps=8", "--set", "minibatches=17")
    assert "minibatches=17 is more than a rollout's 16 transitions" in line
