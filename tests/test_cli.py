"""The command line in-process: user mistakes exit 2 with exactly one line on stderr and no traceback."""

from __future__ import annotations

import dataclasses
import datetime
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
    assert "--seeds SEEDS" in out and "--workers WORKERS" in out  # the options too, not only the fields
    code, out, _ = run_cli(capsys, "train", "dqn", "--env", "CartPole-v1", "--help")
    assert code == 0  # the fields as the classic preset sets them for CartPole
    assert "total_steps (int, 50000, class default 100000)" in out and "preset classic" in out


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


# ---- review s27: bad input that used to end in a traceback (or was silently accepted) -------------------------


def test_eval_and_collect_of_a_checkpoint_whose_tensors_do_not_fit(capsys, dqn_run, tmp_path):
    # was `RuntimeError: Error(s) in loading state_dict for QNetwork: Missing key(s) ...`, exit 1
    last = dqn_run / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(last)
    del tensors["q_net.head.weight"]
    save_checkpoint(last, tensors, meta)
    assert_user_error(capsys, ["eval", str(last), "--episodes", "1"], "does not fit the network", "head.weight",
                      "damaged")
    assert_user_error(capsys, ["collect", "--env", "CartPole-v1", "--policy", str(dqn_run), "--steps", "10", "--out",
                               str(tmp_path / "data")], "does not fit the network")


def test_eval_of_a_checkpoint_missing_an_entry_the_agent_restores(capsys, dqn_run):
    last = dqn_run / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(last)
    del tensors["rng.torch"]
    save_checkpoint(last, tensors, meta)
    assert_user_error(capsys, ["eval", str(last), "--episodes", "1"], "rng.torch")


def test_pretraining_checkpoint_is_no_agent_for_eval_or_init_from(capsys, tmp_path):
    # eval was `KeyError: 'algo'`; --init-from said "holds a None agent ... use `rlkit train None --init-from`"
    pretraining = tmp_path / "pre.safetensors"
    save_checkpoint(pretraining, {"x": torch.zeros(1)}, {"method": "mae", "step": 1, "config": {}})
    for argv in (["eval", str(pretraining)], ["collect", "--env", "CartPole-v1", "--policy", str(pretraining),
                                               "--out", str(tmp_path / "data")],
                 ["train", "dqn", "--env", "CartPole-v1", "--init-from", str(pretraining)]):
        line = one_line_error(capsys, *argv)
        assert "is a pretraining checkpoint (mae), not an agent" in line and "None" not in line
    nothing = tmp_path / "nothing.safetensors"
    save_checkpoint(nothing, {"x": torch.zeros(1)}, {"algo": "dqn"})  # no config
    assert "holds no agent" in one_line_error(capsys, "eval", str(nothing))


def test_nested_set_of_a_field_without_sub_keys(capsys, dqn_run):
    # was `TypeError: 'float' object is not iterable` (config.py apply_overrides), exit 1
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--set", "lr.x=1")
    assert "lr is a float field and takes no sub-keys" in line and "--set lr=VALUE" in line
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--set", "env_kwargs=5", "--set",
                          "env_kwargs.a=1")
    assert "env_kwargs is 5, not a mapping" in line
    assert "takes no sub-keys" in one_line_error(capsys, "train", "--resume", str(dqn_run), "--set", "gamma.a=1")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--env", "Acrobot-v1"], "trained with env_id CartPole-v1, and a resume keeps it: drop --env (Acrobot-v1)"),
     (["--seed", "7"], "trained with seed 0, and a resume keeps it: drop --seed (7)"),
     (["--set", "seed=3"], "drop --set seed (3)"),
     (["--set", "env_id=Acrobot-v1"], "drop --set env_id (Acrobot-v1)"),
     (["--preset", "classic"], "trained with preset None, and a resume keeps it: drop --preset (classic)"),
     (["--seeds", "0,1"], "drop --seeds (0,1)"),
     (["--run-dir", "elsewhere"], "own directory")],
)
def test_resume_rejects_flags_the_run_cannot_honour(capsys, dqn_run, flags, needle):
    # each was accepted and silently ignored: the run went on with its own env, seed and directory, exit 0
    assert needle in one_line_error(capsys, "train", "--resume", str(dqn_run), "--total-steps", "64", *flags)


def test_resume_still_takes_the_run_s_own_values_total_steps_and_set(capsys, dqn_run):
    code, out, err = run_cli(capsys, "train", "--resume", str(dqn_run), "--env", "CartPole-v1", "--seed", "0",
                             "--run-dir", str(dqn_run), "--total-steps", "64", "--set", "eval_episodes=1")
    assert code == 0, err
    saved = yaml.safe_load((dqn_run / "config.yaml").read_text())["config"]
    assert (saved["total_steps"], saved["eval_episodes"]) == (64, 1)


def test_resume_of_a_config_yaml_whose_config_is_no_mapping(capsys, dqn_run):
    # was `AttributeError: 'list' object has no attribute 'items'`
    (dqn_run / "config.yaml").write_text(yaml.safe_dump({"algo": "dqn", "config": [1, 2]}))
    assert "damaged config (not a mapping" in one_line_error(capsys, "train", "--resume", str(dqn_run))


def test_env_kwarg_value_that_gymnasium_rejects(capsys, dqn_run, tmp_path):
    # was `ValueError: Expect the `max_episode_steps` to be positive, actually: 0`, exit 1
    needles = ("CartPole-v1 rejects env_kwargs max_episode_steps=0", "to be positive")
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--set", "env_kwargs.max_episode_steps=0",
                               "--run-dir", str(tmp_path / "r")], *needles)
    assert_user_error(capsys, ["eval", str(dqn_run), "--episodes", "1", "--env-kwarg", "max_episode_steps=0"], *needles)


@pytest.mark.parametrize("hidden", ["[-1]", "[0]", "[64, 0]"])
def test_encoder_widths_below_one(capsys, tmp_path, hidden):
    # [-1] was `RuntimeError: Trying to create tensor with negative dimension -1`; [0] built a 0-feature network
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--set", f"encoder_kwargs.hidden={hidden}",
                          "--run-dir", str(tmp_path / "r"))
    assert "option hidden=" in line and "layer widths must be >= 1" in line


def _sb3_zip(path: Path, data: object = None, state: object = None, policy: bytes | None = None) -> Path:
    """An SB3 DQN MlpPolicy zip for CartPole written by hand (``data`` / ``state`` / raw ``policy`` bytes replace
    the valid ones)."""
    import io
    import json
    import zipfile

    if data is None:
        data = {"policy_class": {"__module__": "stable_baselines3.dqn.policies"},
                "action_space": {":type:": "<class 'gymnasium.spaces.discrete.Discrete'>", "n": 2},
                "observation_space": {"_shape": [4], "dtype": "float32"}}
    if state is None:
        state = {"q_net.q_net.0.weight": torch.zeros(8, 4), "q_net.q_net.0.bias": torch.zeros(8),
                 "q_net.q_net.2.weight": torch.zeros(2, 8), "q_net.q_net.2.bias": torch.zeros(2)}
    if policy is None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        policy = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", data if isinstance(data, (str, bytes)) else json.dumps(data))
        archive.writestr("policy.pth", policy)
    return path


def test_sb3_hand_written_zip_evaluates(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--sb3", str(_sb3_zip(tmp_path / "ok.zip")), "--env", "CartPole-v1",
                           "--episodes", "1")
    assert code == 0, err


@pytest.mark.parametrize(
    ("variant", "needle"),
    [({"policy": np.random.default_rng(0).bytes(512)}, "policy.pth is not a readable state dict"),
     ({"policy": b""}, "policy.pth is not a readable state dict"),
     ({"state": {"when": datetime.datetime(2020, 1, 1)}}, "policy.pth is not a readable state dict"),
     ({"state": {}}, "holds no state dict of tensors"),
     ({"data": [], "policy": b""}, "data is a JSON list, not an object"),
     ({"data": b"\x80\x81"}, "not a readable SB3 model zip"),
     ({"state": {"q_net.q_net.0.weight": torch.zeros(2, 4)}}, "lacks tensor 'q_net.q_net.0.bias'"),
     ({"state": {"q_net.q_net.0.weight": torch.zeros(3, 4), "q_net.q_net.0.bias": torch.zeros(3)}},
      "gives 3 outputs per observation, but its action space has 2 actions"),
     ({"state": {"q_net.q_net.0.weight": torch.zeros(2, 5), "q_net.q_net.0.bias": torch.zeros(2)}},
      "does not make a network for observations (4,)")],
)
def test_sb3_zip_that_is_no_valid_model(capsys, tmp_path, variant, needle):
    # the first three were UnpicklingError (advising weights_only=False), EOFError and UnpicklingError; a list as
    # data was AttributeError, a missing bias KeyError, and an empty state an identity network that stepped
    # CartPole with action 3 (AssertionError)
    line = one_line_error(capsys, "eval", "--sb3", str(_sb3_zip(tmp_path / "m.zip", **variant)), "--env",
                          "CartPole-v1", "--episodes", "1")
    assert needle in line and "weights_only" not in line


def test_compare_and_plot_skip_a_partial_last_evaluation_line(capsys, tmp_path):
    # a run killed while appending an evaluation: was `json.decoder.JSONDecodeError: Unterminated string`, exit 1
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "dqn", "config": {"env_id": "CartPole-v1"}}))
    records = "".join(f'{{"step": {step}, "mean": {step / 10}}}\n' for step in (100, 200))
    (run / "eval" / "evaluations.jsonl").write_text(records + '{"step": 300, "mean": 2')
    code, out, err = run_cli(capsys, "compare", str(run), "--reps", "10")
    assert code == 0 and "20.00" in out
    assert err.count("\n") == 1 and err.startswith("warning: ") and "last line 3" in err
    code, out, err = run_cli(capsys, "plot", str(run), str(run), "-o", str(tmp_path / "curve.png"))
    assert code == 0 and (tmp_path / "curve.png").is_file() and "warning: " in err
    (run / "eval" / "evaluations.jsonl").write_text('{"step": 100, "mean": 1}\n{"step": 2\n{"step": 300, "mean": 3}\n')
    line = one_line_error(capsys, "compare", str(run))
    assert "evaluations.jsonl line 2 is not an evaluation record" in line


def test_plot_prints_the_file_it_wrote(capsys, tmp_path):
    # `-o NAME` without a suffix printed NAME, while matplotlib wrote NAME.png
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "dqn", "config": {"env_id": "CartPole-v1"}}))
    (run / "eval" / "evaluations.jsonl").write_text('{"step": 100, "mean": 1}\n{"step": 200, "mean": 2}\n')
    code, out, err = run_cli(capsys, "plot", str(run), str(run), "-o", str(tmp_path / "curves"))
    assert code == 0, err
    assert out.strip() == f"wrote {tmp_path / 'curves.png'}" and (tmp_path / "curves.png").is_file()


def test_run_dir_that_is_a_file_fails_up_front(capsys, tmp_path):
    # train was `FileExistsError: [Errno 17] File exists` after building the agent
    afile = tmp_path / "afile"
    afile.write_text("")
    for argv in (["train", "dqn", "--env", "CartPole-v1", "--run-dir", str(afile)],
                 ["train", "dqn", "--env", "CartPole-v1", "--seeds", "0,1", "--run-dir", str(afile)],
                 ["pretrain", "mae", "--data", str(tmp_path), "--run-dir", str(afile)]):
        assert f"--run-dir {afile} is a file; pass a directory" in one_line_error(capsys, *argv)


def test_seeds_out_of_range_fail_before_any_process(capsys, tmp_path):
    # --seed 1e20 was `ValueError: Overflow when unpacking long long` (torch.manual_seed); --seeds=-2,-1 started two
    # processes that failed, and left the group directory behind
    huge = str(10**20)
    assert "argument --seed: must be <= 2147483647" in one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1",
                                                                       "--seed", huge)
    assert "seed=100000000000000000000 is out of range: seed must be in [0, 2147483647]" in one_line_error(
        capsys, "train", "dqn", "--env", "CartPole-v1", "--set", f"seed={huge}")
    group = tmp_path / "grp"
    for seeds in ("-2,-1", f"0-{2**31}"):
        line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", f"--seeds={seeds}", "--run-dir",
                              str(group))
        assert "is out of range; seeds are in [0, 2147483647]" in line
        assert not group.exists()


def test_eval_checkpoint_option_with_a_checkpoint_file(capsys, dqn_run):
    # --checkpoint was silently ignored when the target is a file
    line = one_line_error(capsys, "eval", str(dqn_run / "checkpoints" / "last.safetensors"), "--checkpoint", "last")
    assert "--checkpoint picks a checkpoint of a run directory" in line


def test_an_evaluation_appended_after_a_partial_line_starts_a_line_of_its_own(tmp_path):
    from rlkit.evaluation import append_json_line

    file = tmp_path / "evaluations.jsonl"
    append_json_line(file, {"step": 1})
    with open(file, "a") as handle:
        handle.write('{"step": 2, "me')  # killed mid-append, then resumed
    append_json_line(file, {"step": 3})
    assert file.read_text() == '{"step": 1}\n{"step": 3}\n'
