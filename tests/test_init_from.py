"""`rlkit train --init-from`: a new run that starts from a trained agent's weights and nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from cli_helpers import one_line_error, run_cli

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.policy_gradient import PPO, PPOConfig
from rlkit.agents.tabular import QLearning, TabularConfig
from rlkit.checkpoint import load_checkpoint
from rlkit.cli import main

CARTPOLE_OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


@pytest.fixture(scope="module")
def ppo_source(tmp_path_factory) -> Path:
    """A short CartPole PPO run with a non-default network (mlp 32-32) and observation normalisation."""
    run = tmp_path_factory.mktemp("init") / "ppo-src"
    code = main(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "1024", "--run-dir", str(run),
                 "--set", "eval_every=0", "--set", "encoder=mlp", "--set", "encoder_kwargs.hidden=[32,32]",
                 "--set", "normalize_observations=true", "--set", "torch_threads=1"])
    assert code == 0
    return run


def test_ppo_warm_start_copies_weights_and_keeps_the_rest_fresh(ppo_source):
    tensors, meta = load_checkpoint(ppo_source / "checkpoints" / "last.safetensors")
    assert meta["counters"]["global_step"] == 1024 and meta["counters"]["updates"] > 0
    config = PPOConfig(env_id="CartPole-v1", seed=7, encoder="mlp", encoder_kwargs={"hidden": [32, 32]},
                       normalize_observations=True, torch_threads=1)
    agent = PPO(config, CARTPOLE_OBS, gym.spaces.Discrete(2))
    fresh = PPO(config, CARTPOLE_OBS, gym.spaces.Discrete(2))
    fresh_tensors, _ = fresh.state_dict()
    assert not torch.equal(fresh_tensors["net.value_head.weight"], tensors["net.value_head.weight"])

    agent.warm_start(tensors, meta, "src")

    for name, value in agent.net.state_dict().items():
        torch.testing.assert_close(value, tensors[f"net.{name}"], rtol=0, atol=0)
    np.testing.assert_array_equal(agent.obs_rms.mean, tensors["obs_rms.mean"].numpy())
    np.testing.assert_array_equal(agent.obs_rms.var, tensors["obs_rms.var"].numpy())
    assert agent.obs_rms.count == meta["normalizer_counts"]["obs_rms"] > 1000
    # the optimizer, counters and generators are the fresh agent's, not the source's
    assert agent.optimizer.state_dict()["state"] == {}
    assert agent.optimizer.param_groups[0]["lr"] == config.lr
    assert (agent.global_step, agent.updates, agent.episodes, agent.best_eval) == (0, 0, 0, -float("inf"))
    assert agent.rng.bit_generator.state == fresh.rng.bit_generator.state
    assert agent.rng.bit_generator.state != meta["rng"]["numpy"]


def test_dqn_warm_start_copies_both_networks(tmp_path):
    config = DQNConfig(env_id="CartPole-v1", device="cpu", torch_threads=1, seed=0, dueling=True)
    source = DQN(config, CARTPOLE_OBS, gym.spaces.Discrete(2))
    with torch.no_grad():
        for param in source.target_net.parameters():
            param.add_(1.0)  # online and target differ, as mid-training
    source.global_step, source.updates = 5000, 1200
    path = tmp_path / "src.safetensors"
    source.save(path)
    tensors, meta = load_checkpoint(path)

    agent = DQN(dataclasses.replace(config, seed=3), CARTPOLE_OBS, gym.spaces.Discrete(2))
    agent.warm_start(tensors, meta, str(path))
    for name, value in agent.q_net.state_dict().items():
        torch.testing.assert_close(value, tensors[f"q_net.{name}"], rtol=0, atol=0)
    for name, value in agent.target_net.state_dict().items():
        torch.testing.assert_close(value, tensors[f"target_net.{name}"], rtol=0, atol=0)
    assert (agent.global_step, agent.updates) == (0, 0)
    assert agent.optimizer.state_dict()["state"] == {}


def test_tabular_warm_start_copies_the_q_table_only():
    spaces = gym.spaces.Discrete(16), gym.spaces.Discrete(4)
    source = QLearning(TabularConfig(env_id="FrozenLake-v1"), *spaces)
    source.q[...] = np.arange(64, dtype=source.q.dtype).reshape(16, 4)
    source.visits[...] = 9
    tensors, meta = source.state_dict()
    agent = QLearning(TabularConfig(env_id="FrozenLake-v1", seed=1), *spaces)
    agent.warm_start(tensors, meta, "src")
    np.testing.assert_array_equal(agent.q, source.q)
    assert agent.visits.sum() == 0


def test_cli_adopts_the_source_architecture_and_records_the_lineage(capsys, ppo_source, tmp_path):
    run = tmp_path / "ft"
    code, out, err = run_cli(capsys, "train", "ppo", "--env", "CartPole-v1", "--init-from", str(ppo_source),
                             "--total-steps", "512", "--run-dir", str(run), "--set", "eval_every=0",
                             "--set", "lr=1e-4", "--set", "torch_threads=1")
    assert code == 0, err
    source_checkpoint = (ppo_source / "checkpoints" / "last.safetensors").resolve()
    assert f"weights from {source_checkpoint} (CartPole-v1, step 1024)" in out
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["init_from"] == {"checkpoint": str(source_checkpoint), "env_id": "CartPole-v1", "global_step": 1024}
    config = record["config"]
    assert (config["encoder"], config["encoder_kwargs"]) == ("mlp", {"hidden": [32, 32]})
    assert config["normalize_observations"] is True
    assert config["lr"] == 1e-4 and config["total_steps"] == 512
    _, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["counters"]["global_step"] == 512
    # a resume of the new run keeps its lineage in config.yaml
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--total-steps", "1024")
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["init_from"]["global_step"] == 1024


def test_cli_init_from_errors(capsys, ppo_source, tmp_path):
    src = str(ppo_source)
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--init-from", src)
    assert "holds a ppo agent, not dqn" in line and f"rlkit train ppo --init-from {src}" in line
    line = one_line_error(capsys, "train", "ppo", "--env", "Acrobot-v1", "--init-from", src,
                      "--run-dir", str(tmp_path / "a"))
    assert "observation_shape [4]" in line and "[6]" in line
    line = one_line_error(capsys, "train", "ppo", "--env", "CartPole-v1", "--init-from", src,
                      "--set", "encoder_kwargs.hidden=[64,64]", "--run-dir", str(tmp_path / "b"))
    assert "shape" in line and "encoder_kwargs" in line
    line = one_line_error(capsys, "train", "ppo", "--env", "CartPole-v1", "--init-from", src,
                      "--set", "normalize_observations=false", "--run-dir", str(tmp_path / "c"))
    assert "different network" in line and "obs_rms" in line
    line = one_line_error(capsys, "train", "ppo", "--env", "CartPole-v1", "--init-from", str(tmp_path / "missing"))
    assert "does not exist" in line
    line = one_line_error(capsys, "train", "--resume", src, "--init-from", src)
    assert "--init-from starts a new run" in line
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    line = one_line_error(capsys, "train", "ppo", "--env", "CartPole-v1", "--init-from", str(garbage))
    assert "corrupt" in line
